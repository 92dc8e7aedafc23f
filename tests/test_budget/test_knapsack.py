import itertools

import numpy as np
import pytest

from block_relu_plugin.budget import knapsack
from block_relu_plugin.budget.candidates import (all_pairs_candidates, default_candidates,
                                                 prune_equal_cost)
from block_relu_plugin.budget.knapsack import (BudgetError, KnapsackSolution, solve_dense,
                                               solve_exact)
from block_relu_plugin.layers.block_relu import IDENTITY, ZERO, num_drelus

SOLVERS = [solve_exact, solve_dense]


def brute_force(costs, dist, budget):
    """Least total distortion over all choices within the budget (inf if none)."""
    G, K = dist.shape
    best = np.inf
    for choice in itertools.product(range(K), repeat=G):
        rows = np.arange(G)
        if costs[rows, choice].sum() <= budget:
            best = min(best, dist[rows, choice].sum())
    return best


def random_instance(rng, groups, width, max_cost, ties):
    costs = rng.integers(0, max_cost + 1, (groups, width))
    if ties:  # few distinct values: equal distortions within and across groups
        dist = rng.integers(0, 4, (groups, width)).astype(float)
    else:
        dist = rng.random((groups, width))
    dist[rng.random((groups, width)) < 0.25] = np.inf  # padding
    dist[np.arange(groups), rng.integers(0, width, groups)] = rng.random(groups)
    return costs, dist


def assert_consistent(sol, costs, dist, budget):
    rows = np.arange(dist.shape[0])
    assert isinstance(sol, KnapsackSolution)
    assert sol.choice.dtype == np.int64 and sol.choice.shape == (dist.shape[0],)
    assert np.isfinite(dist[rows, sol.choice]).all()
    assert sol.cost == costs[rows, sol.choice].sum() <= budget
    assert sol.objective == pytest.approx(dist[rows, sol.choice].sum(), rel=1e-12, abs=1e-12)
    assert sol.lower_bound <= sol.objective
    assert sol.optimal


@pytest.mark.parametrize('seed', range(8))
def test_small_instances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    for trial in range(30):
        costs, dist = random_instance(rng, rng.integers(1, 5), rng.integers(1, 5),
                                      max_cost=6, ties=trial % 2 == 0)
        cheapest = np.where(np.isfinite(dist), costs, 99).min(axis=1).sum()
        budget = int(rng.integers(cheapest, costs.sum() + 3))
        best = brute_force(costs, dist, budget)
        for solve in SOLVERS:
            sol = solve(costs, dist, budget)
            assert_consistent(sol, costs, dist, budget)
            assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('core_start', [1, 64])
def test_exact_matches_dense_on_network_like_instances(seed, ties, core_start, monkeypatch):
    # Many groups sharing a few cost vectors, as channels of a site do, with
    # zero-cost identity and duplicate costs (equal-area patch shapes). A
    # first core of one alternative makes the expanding core take rounds.
    monkeypatch.setattr(knapsack, '_CORE_START', core_start)
    rng = np.random.default_rng(seed)
    blocks = []
    for side in (8, 4, 2):
        cand = default_candidates(side, side)
        cost = num_drelus(cand, side, side)
        n = int(rng.integers(20, 60))
        shape = (1 - cost / (side * side)) ** 2  # 0 for the plain ReLU
        dist = rng.lognormal(0, 1, (n, 1)) * shape * rng.lognormal(0, 0.3, (n, len(cost)))
        if ties:
            dist = np.round(dist, 1)
        blocks.append((np.broadcast_to(cost, dist.shape), dist))
    K = max(c.shape[1] for c, _ in blocks)
    costs = np.concatenate([np.pad(c, ((0, 0), (0, K - c.shape[1]))) for c, _ in blocks])
    dist = np.concatenate([np.pad(d, ((0, 0), (0, K - d.shape[1])), constant_values=np.inf)
                           for _, d in blocks])
    if ties:  # identical channels
        costs, dist = np.concatenate([costs, costs[:15]]), np.concatenate([dist, dist[:15]])
    relus = int(costs.max(axis=1).sum())
    for fraction in (0.03, 0.1, 0.4):
        budget = int(fraction * relus)
        exact, dense = solve_exact(costs, dist, budget), solve_dense(costs, dist, budget)
        assert_consistent(exact, costs, dist, budget)
        assert_consistent(dense, costs, dist, budget)
        assert exact.objective == pytest.approx(dense.objective, rel=1e-9)


@pytest.mark.parametrize('solve', SOLVERS)
def test_infeasible_budget(solve):
    costs = np.array([[3, 5], [2, 0], [4, 4]])
    dist = np.array([[1.0, 0.0], [0.0, np.inf], [1.0, 2.0]])  # cheapest: 3 + 2 + 4
    with pytest.raises(BudgetError, match=r'budget 8\b.*minimum achievable DReLU count is 9'):
        solve(costs, dist, 8)
    assert issubclass(BudgetError, ValueError)


@pytest.mark.parametrize('solve', SOLVERS)
def test_budget_equal_to_minimum(solve):
    costs = np.array([[3, 5, 3], [2, 0, 7], [4, 4, 9]])
    dist = np.array([[1.0, 0.0, 0.5], [0.0, np.inf, 0.0], [1.0, 2.0, 0.0]])
    sol = solve(costs, dist, 9)
    assert sol.cost == 9
    assert sol.objective == pytest.approx(0.5 + 0.0 + 1.0)
    assert sol.choice.tolist() == [2, 0, 0]


@pytest.mark.parametrize('solve', SOLVERS)
@pytest.mark.parametrize('budget', [10**4, 10**12])
def test_budget_above_all_relus(solve, budget):
    rng = np.random.default_rng(0)
    costs = rng.integers(0, 50, (30, 6))
    dist = rng.random((30, 6))
    sol = solve(costs, dist, budget)
    assert sol.objective == pytest.approx(dist.min(axis=1).sum())
    assert sol.lower_bound == pytest.approx(sol.objective)


@pytest.mark.parametrize('solve', SOLVERS)
def test_zero_budget_takes_free_candidates(solve):
    costs = np.array([[0, 1, 0], [4, 0, 2]])
    dist = np.array([[5.0, 0.0, 4.0], [0.0, 3.0, 1.0]])
    sol = solve(costs, dist, 0)
    assert sol.choice.tolist() == [2, 1] and sol.objective == 7.0


@pytest.mark.parametrize('solve', SOLVERS)
def test_invalid_inputs(solve):
    costs = np.array([[0, 1], [1, 2]])
    dist = np.array([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match='non-negative'):
        solve(costs, dist, -1)
    with pytest.raises(ValueError, match='shape'):
        solve(costs[:, :1], dist, 3)
    with pytest.raises(ValueError, match='integer'):
        solve(costs.astype(float), dist, 3)
    with pytest.raises(ValueError, match='integer'):
        solve(costs, dist, 2.5)
    with pytest.raises(ValueError, match='group 1 has no candidate'):
        solve(costs, np.array([[1.0, 0.0], [np.inf, np.inf]]), 3)
    with pytest.raises(ValueError, match='group 0 has a NaN'):
        solve(costs, np.array([[np.nan, 0.0], [1.0, 0.0]]), 3)
    with pytest.raises(ValueError, match='group 1 has a negative cost'):
        solve(np.array([[0, 1], [-1, 2]]), dist, 3)


@pytest.mark.parametrize('solve', SOLVERS)
def test_no_groups(solve):
    sol = solve(np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)), 5)
    assert sol.choice.shape == (0,) and sol.cost == 0 and sol.objective == 0.0


@pytest.mark.parametrize('side, count', [(4, 17), (7, 50), (8, 65), (14, 82), (16, 82),
                                         (28, 101), (32, 101), (56, 122), (112, 122)])
def test_all_pairs_counts(side, count):
    cand = all_pairs_candidates(side, side)
    assert cand.shape == (count, 2) and cand.dtype == np.int64
    assert cand[0].tolist() == list(IDENTITY)
    assert list(ZERO) not in cand.tolist()
    assert len(np.unique(cand, axis=0)) == count
    sizes = cand[1:]
    assert sizes.min() >= 1 and sizes.max() <= side
    assert [side, side] in sizes.tolist() and [1, 1] in sizes.tolist()


def test_all_pairs_divisors_and_caps():
    cand = all_pairs_candidates(112, 7)
    assert set(cand[1:, 0]) == set(range(1, 9)) | {28, 56, 112}
    assert set(cand[1:, 1]) == set(range(1, 8))  # 8 capped to the 7-pixel side
    extra = all_pairs_candidates(8, 8, small_sides=[1, 2], extra=[3, 20])
    assert set(extra[1:, 0]) == {1, 2, 3, 4, 8}  # 8/2 exceeds the largest small side
    with pytest.raises(ValueError, match='map size must be positive'):
        all_pairs_candidates(0, 8)


def test_prune_keeps_least_distorting_per_cost():
    costs = np.array([0, 4, 4, 4, 9, 16])
    dist = np.array([[3.0, 1.0, 0.5, 0.5, 0.7, 0.0],     # 0.5 tie -> index 2; 9 is dominated
                     [3.0, np.inf, 2.0, 2.5, 2.0, 1.0],  # equal distortion at higher cost dropped
                     [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])    # only the free candidate survives
    keep = prune_equal_cost(costs, dist)
    assert keep.tolist() == [[True, False, True, False, False, True],
                             [True, False, True, False, False, True],
                             [True, False, False, False, False, False]]


def test_prune_matches_definition():
    rng = np.random.default_rng(1)
    costs = rng.integers(0, 6, (50, 8))
    dist = rng.integers(0, 5, (50, 8)).astype(float)
    dist[rng.random(dist.shape) < 0.2] = np.inf
    keep = prune_equal_cost(costs, dist)
    for c, d, kept in zip(costs, dist, keep):
        for k in range(len(c)):
            beaten = any((c[j] < c[k] and d[j] <= d[k])
                         or (c[j] == c[k] and (d[j] < d[k] or (d[j] == d[k] and j < k)))
                         for j in range(len(c)) if j != k)
            assert kept[k] == (np.isfinite(d[k]) and not beaten)
