"""Multiple-choice knapsack: one candidate per channel under a DReLU budget.

``G`` groups (channels) each pick exactly one of their candidates; candidate
``k`` of group ``g`` costs ``costs[g, k]`` (an integer, e.g. DReLUs) and adds
``distortions[g, k]``. Minimise the total distortion with total cost at most
``budget``. Padded or invalid entries carry distortion ``+inf``.

Two solvers return the same optimum:

- :func:`solve_dense` is the paper's dynamic program over every budget value
  (``G x (budget + 1)`` argmin table). It is the cross-check.
- :func:`solve_exact` is a Pisinger-style solver: LP relaxation on the convex
  hulls, Lagrangian reduction, and an exact Pareto dynamic program over the
  few candidates the reduction leaves. Its cost barely depends on the budget.
"""
import numbers
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .candidates import prune_equal_cost

# Alternative candidates in the first, smallest core of solve_exact.
_CORE_START = 64


class BudgetError(ValueError):
    """The budget is below the cheapest possible choice."""


@dataclass
class KnapsackSolution:
    """A choice of one candidate per group.

    Attributes:
        choice: ``(G,)`` int64 column index chosen in each group.
        cost: Total cost of the choice.
        objective: Total distortion of the choice.
        lower_bound: A proven lower bound on the optimal objective.
        optimal: Whether the choice is proven optimal.
        solver: Name of the solver that produced it.
        seconds: Wall-clock solve time.
    """
    choice: np.ndarray
    cost: int
    objective: float
    lower_bound: float
    optimal: bool
    solver: str
    seconds: float


def _check(costs, distortions, budget) -> Tuple[np.ndarray, np.ndarray, int]:
    """Validate the inputs; invalid entries get cost 0 so sums stay clean."""
    dist = np.asarray(distortions, dtype=np.float64)
    costs = np.asarray(costs)
    if dist.ndim != 2 or costs.shape != dist.shape:
        raise ValueError('costs and distortions must both have shape (G, K), got '
                         f'{costs.shape} and {dist.shape}')
    if costs.dtype.kind not in 'iu':
        raise ValueError(f'costs must be integers, got dtype {costs.dtype}')
    if isinstance(budget, float) and budget.is_integer():
        budget = int(budget)
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f'budget must be an integer, got {budget!r}')
    budget = int(budget)
    if budget < 0:
        raise ValueError(f'budget must be non-negative, got {budget}')

    def first_group(bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad.any(axis=1))[0])

    if np.isnan(dist).any() or (dist == -np.inf).any():
        bad = np.isnan(dist) | (dist == -np.inf)
        raise ValueError(f'group {first_group(bad)} has a NaN or -inf distortion')
    finite = np.isfinite(dist)
    if not finite.any(axis=1).all():
        raise ValueError(f'group {first_group(~finite)} has no candidate with a '
                         'finite distortion')
    costs = np.where(finite, costs, 0).astype(np.int64)
    if (costs < 0).any():
        raise ValueError(f'group {first_group(costs < 0)} has a negative cost')
    cheapest = int(np.where(finite, costs, np.iinfo(np.int64).max).min(axis=1).sum())
    if cheapest > budget:
        raise BudgetError(f'budget {budget} is infeasible: the minimum achievable '
                          f'DReLU count is {cheapest}')
    return costs, dist, budget


def _solution(costs, dist, choice, lower_bound, solver, start) -> KnapsackSolution:
    rows = np.arange(len(choice))
    objective = float(dist[rows, choice].sum())
    return KnapsackSolution(choice=choice.astype(np.int64),
                            cost=int(costs[rows, choice].sum()),
                            objective=objective,
                            lower_bound=min(lower_bound, objective),
                            optimal=True,
                            solver=solver,
                            seconds=time.perf_counter() - start)


def solve_dense(costs: np.ndarray, distortions: np.ndarray, budget: int) -> KnapsackSolution:
    """Solve by the paper's dense dynamic program.

    ``value[b]`` is the least distortion of the groups so far with total cost
    at most ``b``; each group updates it for every ``b`` at once, candidate by
    candidate, and records the winning candidate in a ``G x (budget + 1)``
    table for backtracking. Time and memory grow with ``G * budget``: use it to
    cross-check :func:`solve_exact` on small instances.

    Args:
        costs: ``(G, K)`` integer costs.
        distortions: ``(G, K)`` float distortions, ``inf`` for invalid entries.
        budget: Largest allowed total cost.

    Returns:
        KnapsackSolution: an optimal choice.

    Raises:
        BudgetError: if no choice fits the budget.
        ValueError: on malformed inputs.
    """
    start = time.perf_counter()
    costs, dist, budget = _check(costs, distortions, budget)
    G, K = dist.shape
    finite = np.isfinite(dist)
    # Past the cost of the priciest choice the budget no longer binds.
    cap = min(budget, int(np.where(finite, costs, 0).max(axis=1, initial=0).sum()))
    value = np.zeros(cap + 1)
    index_type = np.min_scalar_type(max(K - 1, 0))
    table = np.zeros((G, cap + 1), dtype=index_type)
    for g in range(G):
        new = np.full(cap + 1, np.inf)
        for k in np.flatnonzero(finite[g]):
            c = costs[g, k]
            if c > cap:
                continue
            cand = value[:cap + 1 - c] + dist[g, k]
            better = cand < new[c:]
            np.copyto(new[c:], cand, where=better)
            np.copyto(table[g, c:], index_type.type(k), where=better)
        value = new
    choice = np.empty(G, dtype=np.int64)
    b = cap
    for g in range(G - 1, -1, -1):
        choice[g] = table[g, b]
        b -= costs[g, choice[g]]
    objective = float(value[cap]) if G else 0.0
    return _solution(costs, dist, choice, objective, 'dense', start)


def _lower_hull(group: np.ndarray, cost: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Mask of the lower-convex-hull vertices of each group's frontier.

    Points are sorted by group, then by strictly increasing cost with strictly
    decreasing distortion. A point on or above the chord of its neighbours is
    no hull vertex; all such points are dropped at once, until none is left.
    """
    alive = np.arange(len(group))
    while True:
        g, c, d = group[alive], cost[alive], dist[alive]
        inner = np.zeros(len(alive), dtype=bool)
        inner[1:-1] = (g[:-2] == g[1:-1]) & (g[1:-1] == g[2:])
        # slope(prev, j) >= slope(j, next), cross-multiplied (costs increase).
        above = np.zeros(len(alive), dtype=bool)
        above[1:-1] = ((d[1:-1] - d[:-2]) * (c[2:] - c[1:-1])
                       >= (d[2:] - d[1:-1]) * (c[1:-1] - c[:-2]))
        drop = inner & above
        if not drop.any():
            break
        alive = alive[~drop]
    mask = np.zeros(len(group), dtype=bool)
    mask[alive] = True
    return mask


def _solve_core(costs: np.ndarray, dist: np.ndarray, reduced: np.ndarray, lam: float,
                budget: int, admit: float, slack: float) -> Optional[np.ndarray]:
    """Best choice of candidates with reduced cost <= ``admit``, if within ``slack``.

    A choice ``x`` has distortion ``L(lam) + R(x) + lam * (budget - C(x))``
    with ``R`` its summed reduced costs and ``C`` its cost; both added terms
    are non-negative, and only choices where they sum to at most ``slack``
    are sought. Groups with a single admitted candidate are fixed to it. The
    rest go through a dynamic program over Pareto-optimal (cost, distortion)
    partial states, dropping a state when a cheaper-or-equal state is at
    least as good (its reduced cost is then no larger either), when it cannot
    fit, or when its reduced cost plus the budget it must leave unused (even
    if every later group took its dearest candidate) already exceeds
    ``slack``.

    Returns:
        np.ndarray: ``(G,)`` chosen columns, or None if no choice qualifies.
    """
    alive = reduced <= admit
    choice = np.argmax(alive, axis=1)
    core = np.flatnonzero(alive.sum(axis=1) > 1)
    fixed = np.ones(len(choice), dtype=bool)
    fixed[core] = False
    items = [np.flatnonzero(alive[g]) for g in core]
    # Least and most cost that the core groups after each one can add.
    low = np.array([costs[g, k].min() for g, k in zip(core, items)], dtype=np.int64)
    high = np.array([costs[g, k].max() for g, k in zip(core, items)], dtype=np.int64)
    low_after = np.cumsum(np.r_[0, low[:0:-1]])[::-1]
    high_after = np.cumsum(np.r_[0, high[:0:-1]])[::-1]
    s_cost = np.array([costs[fixed, choice[fixed]].sum()])
    if s_cost[0] + low.sum() > budget:
        return None
    s_dist = np.zeros(1)
    s_rc = np.zeros(1)
    trail = []
    for g, k, least, most in zip(core, items, low_after, high_after):
        n_cost = (s_cost[:, None] + costs[g, k]).ravel()
        n_dist = (s_dist[:, None] + dist[g, k]).ravel()
        n_rc = (s_rc[:, None] + reduced[g, k]).ravel()
        unused = np.maximum(budget - n_cost - most, 0)
        ok = np.flatnonzero((n_rc + lam * unused <= slack) & (n_cost + least <= budget))
        order = ok[np.lexsort((n_dist[ok], n_cost[ok]))]
        by_cost = n_dist[order]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(by_cost)[:-1]])
        order = order[by_cost < best_before]
        if len(order) == 0:
            return None
        s_cost, s_dist, s_rc = n_cost[order], n_dist[order], n_rc[order]
        trail.append(order)
    state = int(np.argmin(s_dist))
    for g, k, order in zip(core[::-1], items[::-1], trail[::-1]):
        state, pick = divmod(int(order[state]), len(k))
        choice[g] = k[pick]
    return choice


def solve_exact(costs: np.ndarray, distortions: np.ndarray, budget: int) -> KnapsackSolution:
    """Solve to proven optimality, in time nearly independent of the budget.

    1. Per group keep the efficient frontier (:func:`prune_equal_cost`), then
       its lower convex hull.
    2. LP relaxation: starting from every group's cheapest candidate, take
       hull increments by decreasing efficiency (distortion saved per unit of
       cost) while they fit. The first one that does not fit sets the
       Lagrange multiplier ``lam``; ``L(lam) = sum_g min_k (d + lam c) - lam B``
       is the lower bound, and the increments taken give an integer incumbent.
    3. Lagrangian reduction: a choice's distortion is at least ``L(lam)`` plus
       the sum of its reduced costs ``d + lam c - min_k (d + lam c)``, so only
       choices whose reduced costs sum to at most the gap (incumbent minus
       bound) can beat the incumbent.
    4. Expanding core: solve exactly among the choices within ``t`` of the
       bound (few groups have more than one candidate of reduced cost below
       ``t``), starting from a small ``t``. The result improves the
       incumbent; once the remaining gap is at most ``t``, every better
       choice was searched and the incumbent is optimal. Otherwise ``t``
       grows (at most to the gap, which always ends the search).

    Args:
        costs: ``(G, K)`` integer costs.
        distortions: ``(G, K)`` float distortions, ``inf`` for invalid entries.
        budget: Largest allowed total cost.

    Returns:
        KnapsackSolution: an optimal choice (exact up to floating-point
        summation error), with the Lagrangian (= LP) bound as ``lower_bound``.

    Raises:
        BudgetError: if no choice fits the budget.
        ValueError: on malformed inputs.

    Examples:
        >>> sol = solve_exact(np.array([[0, 4], [0, 4]]),
        ...                   np.array([[1.0, 0.0], [2.0, 0.0]]), budget=4)
        >>> sol.choice, sol.objective
        (array([0, 1]), 1.0)
    """
    start = time.perf_counter()
    costs, dist, budget = _check(costs, distortions, budget)
    G = dist.shape[0]
    rows = np.arange(G)
    if G == 0:
        return _solution(costs, dist, np.zeros(0, dtype=np.int64), 0.0, 'exact', start)

    # 1. Frontier points, sorted by group then cost, and their convex hulls.
    frontier = prune_equal_cost(costs, dist)
    group, col = np.nonzero(frontier)
    order = np.lexsort((costs[group, col], group))
    group, col = group[order], col[order]
    hull = _lower_hull(group, costs[group, col], dist[group, col])
    group, col = group[hull], col[hull]
    cost, d = costs[group, col], dist[group, col]
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])

    # 2. LP relaxation by sorted hull increments.
    is_step = np.r_[False, group[1:] == group[:-1]]
    step_cost = np.diff(cost, prepend=0)[is_step]
    step_gain = -np.diff(d, prepend=0.0)[is_step]
    efficiency = step_gain / step_cost
    by_efficiency = np.argsort(-efficiency, kind='stable')
    spent = cost[first].sum() + np.cumsum(step_cost[by_efficiency])
    n_taken = int(np.searchsorted(spent, budget, side='right'))
    skipped = np.ones(len(step_cost), dtype=bool)
    skipped[by_efficiency[:n_taken]] = False
    # Each group climbs its hull by its leading run of taken increments, so
    # the incumbent fits even if rounding misorders a group's increments.
    step_group = group[is_step]
    n_skipped = np.cumsum(skipped)
    group_start = np.searchsorted(step_group, step_group)
    leading = n_skipped == n_skipped[group_start] - skipped[group_start]
    climbed = np.bincount(step_group, weights=leading, minlength=G).astype(np.int64)
    choice = col[first + climbed]
    if n_taken == len(step_cost):
        # Every group at its least distorting candidate: the budget does not
        # bind, and the bound at lam = 0 is this very objective.
        return _solution(costs, dist, choice, float(dist.min(axis=1).sum()),
                         'exact', start)
    lam = float(efficiency[by_efficiency[n_taken]])

    # 3. Lagrangian bound and reduced costs (dominated candidates never help).
    priced = dist + lam * costs
    floor = priced.min(axis=1)
    lower = float(floor.sum() - lam * budget)
    reduced = np.where(frontier, priced - floor[:, None], np.inf)
    upper = float(dist[rows, choice].sum())
    # Sums over thousands of groups are exact only to a few ulps of the
    # magnitudes involved: search that much further than the gap.
    tol = 1e-12 * float(np.abs(floor).sum() + lam * budget + abs(upper))

    # 4. Expanding core: each round admits about 4x more alternatives.
    positive = reduced[(reduced > 0) & np.isfinite(reduced)]
    admitted = _CORE_START
    while True:
        gap = max(upper - lower, 0.0)
        t = gap
        if admitted < len(positive):
            t = min(float(np.partition(positive, admitted)[admitted]), gap)
        found = _solve_core(costs, dist, reduced, lam, budget, t + tol, gap + tol)
        if found is not None and dist[rows, found].sum() < upper:
            choice, upper = found, float(dist[rows, found].sum())
        if upper - lower <= t:
            return _solution(costs, dist, choice, lower, 'exact', start)
        # Grow past every alternative already admitted, however many tie at t.
        admitted = 4 * max(admitted, int(np.count_nonzero(positive <= t)))
