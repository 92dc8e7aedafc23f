"""From channel distortions and a budget to a Block-ReLU spec.

Every channel picks one candidate; among candidates of equal cost only the
least distorting one competes (:func:`.candidates.prune_equal_cost`), and the
multiple-choice knapsack (:mod:`.knapsack`) minimises the summed distortion
under the budget. A candidate's cost is an integer in the budget's unit
(:meth:`.budget_spec.Budget.channel_costs`): DReLUs for a fraction or a DReLU
count, bytes per image (from the MPC cost model) for a byte budget.
``uniform`` is the baseline: one patch size for every channel of every site,
the smallest that meets the budget (:func:`solve_uniform_at_least` rounds up
instead, for comparisons at an equal or larger DReLU count).
"""
import os
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..conversion.sites import ReLUSite, count_relus
from ..layers.block_relu import num_drelus
from ..spec.spec import BlockReLUSpec
from .budget_spec import Budget, parse_budget
from .candidates import candidate_set, prune_equal_cost, restrict_candidates
from .distortion import Distortion, distortion_fingerprint, load_distortion
from .knapsack import BudgetError, solve_dense, solve_exact

SOLVERS = ('exact', 'dense', 'uniform')


def budget_drelus(budget, relus: int) -> int:
    """The DReLUs a fraction (``0.06``, ``'6%'``) or count (``'drelus=300'``) allows.

    Raises:
        BudgetError: for a malformed budget or a byte budget (no DReLU count).
    """
    budget = parse_budget(budget)
    if budget.unit != 'drelus':
        raise BudgetError(f'budget {str(budget)!r} is in bytes, not DReLUs')
    return budget.limit(relus)


#: ``(site, sizes) -> (K,)`` integer cost per channel of each candidate size
ChannelCost = Callable[[ReLUSite, np.ndarray], np.ndarray]


def drelu_cost(site: ReLUSite, sizes) -> np.ndarray:
    return num_drelus(sizes, site.height, site.width)


def budget_cost(budget: Budget) -> ChannelCost:
    """The knapsack's per-channel cost function of ``budget``'s unit."""
    return lambda site, sizes: budget.channel_costs(sizes, site.height, site.width)


def spec_cost(spec: BlockReLUSpec, sites: Sequence[ReLUSite], budget) -> int:
    """What ``spec`` spends of ``budget``'s unit per image (DReLUs or bytes).

    Sites the spec does not name are plain ReLUs, at their all-``(1, 1)`` cost.
    """
    budget = parse_budget(budget)
    total = 0
    for site in sites:
        sizes = np.asarray(spec.sites.get(site.name, np.ones((site.channels, 2))), np.int64)
        if sizes.shape != (site.channels, 2):
            raise ValueError(f'site {site.name!r}: the spec has {sizes.shape[0]} patch sizes '
                             f'for {site.channels} channels')
        unique, count = np.unique(sizes, axis=0, return_counts=True)
        total += int((budget.channel_costs(unique, site.height, site.width) * count).sum())
    return total


def uniform_patches(max_side: int) -> List[Tuple[int, int]]:
    """Squares and near-squares by growing area: 1x1, 1x2, 2x2, 2x3, 3x3, ... up to ``max_side``."""
    sizes = []
    for n in range(1, max_side + 1):
        sizes.append((n, n))
        if n < max_side:
            sizes.append((n, n + 1))
    return sizes


def solve_uniform(sites: Sequence[ReLUSite], budget: int, cost: ChannelCost = drelu_cost,
                  unit: str = 'DReLUs') -> Tuple[Tuple[int, int], int]:
    """The smallest uniform patch (most DReLUs) whose total cost meets ``budget``.

    Args:
        cost: Per-channel cost (default: DReLUs); ``unit`` names it in errors.

    Returns:
        ((bh, bw), cost)

    Raises:
        BudgetError: if even one patch per channel is over the budget.
    """
    max_side = max([max(s.height, s.width) for s in sites], default=1)
    total = None
    for size in uniform_patches(max_side):
        total = int(sum(s.channels * int(cost(s, np.array([size]))[0]) for s in sites))
        if total <= budget:
            return size, total
    raise BudgetError(f'budget {budget:,} {unit} is infeasible for a uniform patch size: '
                      f'one patch per channel already costs {total:,}')


def solve_uniform_at_least(distortion: Union[str, Distortion], drelus: int) -> BlockReLUSpec:
    """The uniform baseline for a comparison: the largest patch whose DReLUs are ``>= drelus``.

    ``solve_budget(..., 'uniform')`` rounds down to the budget, so a uniform
    row would use fewer DReLUs than the knapsack spec it is compared with and
    part of the knapsack's lead would be budget. This rounds up instead.

    Raises:
        BudgetError: if even 1x1 patches (all ReLU) give fewer than ``drelus``.
    """
    if not isinstance(distortion, Distortion):
        distortion = load_distortion(distortion)
    sites = distortion.sites
    best = None
    for size in uniform_patches(max([max(s.height, s.width) for s in sites], default=1)):
        total = int(sum(s.channels * int(drelu_cost(s, np.array([size]))[0]) for s in sites))
        if total < drelus:
            break
        best = size
    if best is None:
        raise BudgetError(f'no uniform patch size has >= {drelus:,} DReLUs '
                          f'(all ReLU has {count_relus(sites):,})')
    spec = BlockReLUSpec.uniform(sites, best)
    spec.metadata.update(solver='uniform', method=f'uniform {best}, at least {drelus:,} DReLUs',
                         budget_drelus_at_least=int(drelus),
                         objective=_uniform_objective(distortion, best), lower_bound=None,
                         optimal=False, distortion_method=distortion.manifest['method'],
                         distortion_dir=os.path.abspath(distortion.path),
                         distortion_sha256=distortion_fingerprint(distortion.path),
                         num_samples=distortion.manifest['num_samples'],
                         input_size=distortion.manifest['input_size'],
                         config=distortion.manifest['model'].get('config'),
                         checkpoint=distortion.manifest['model'].get('checkpoint'))
    spec.describe(sites)
    return spec


def knapsack_instance(distortion: Distortion, cost: ChannelCost = drelu_cost):
    """Padded knapsack arrays over all channels, with equal-cost candidates pruned.

    Args:
        cost: Per-channel integer cost of each candidate (default: DReLUs).

    Returns:
        (costs, dists, columns): ``(G, W)`` int64 costs, float64
        distortions (``inf`` padding) and the candidate index of each column
        in its site's candidate list (-1 for padding); ``G`` = all channels in
        site order.
    """
    blocks = []
    for site in distortion.sites:
        cand = distortion.candidates[site.name]
        site_cost = np.asarray(cost(site, cand), dtype=np.int64)
        dist = distortion.values[site.name]
        if not np.all(np.isfinite(dist)) or np.any(dist < 0):
            raise ValueError(f'site {site.name!r}: distortions must be finite and >= 0')
        keep = prune_equal_cost(site_cost, dist)
        # Survivors first, in candidate order: the narrowest padding.
        order = np.argsort(~keep, axis=1, kind='stable')[:, :max(1, int(keep.sum(1).max()))]
        valid = np.take_along_axis(keep, order, axis=1)
        blocks.append((np.where(valid, site_cost[order], 0),
                       np.where(valid, np.take_along_axis(dist, order, axis=1), np.inf),
                       np.where(valid, order, -1)))
    width = max([b[0].shape[1] for b in blocks], default=1)

    def pad(a, value):
        return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)

    costs = np.concatenate([pad(c, 0) for c, _, _ in blocks]).astype(np.int64)
    dists = np.concatenate([pad(d, np.inf) for _, d, _ in blocks]).astype(np.float64)
    columns = np.concatenate([pad(k, -1) for _, _, k in blocks]).astype(np.int64)
    return costs, dists, columns


def _uniform_objective(distortion: Distortion, size) -> Optional[float]:
    """Summed distortion of ``size`` everywhere, if every site measured it (sides capped)."""
    total = 0.0
    for site in distortion.sites:
        capped = (min(size[0], site.height), min(size[1], site.width))
        match = np.flatnonzero(np.all(distortion.candidates[site.name] == capped, axis=1))
        if len(match) == 0:
            return None
        total += float(distortion.values[site.name][:, match[0]].sum())
    return total


def restrict_distortion(distortion: Distortion, candidates) -> Distortion:
    """The distortion table with only the candidates of a named set (or ``(H, W) -> sizes``).

    So one extraction with a union (``'paper+all_pairs'``) serves solves with
    either set.

    Raises:
        ValueError: if a site lacks a measurement of a candidate in the set.
    """
    fn = candidate_set(candidates)
    cands, values = {}, {}
    for site in distortion.sites:
        keep = restrict_candidates(distortion.candidates[site.name],
                                   fn(site.height, site.width), site.name)
        cands[site.name] = distortion.candidates[site.name][keep]
        values[site.name] = distortion.values[site.name][:, keep]
    return Distortion(distortion.path, distortion.manifest, distortion.sites, cands, values)


def solve_budget(distortion: Union[str, Distortion], budget, solver: str = 'exact',
                 candidates=None, bits: Optional[int] = None) -> BlockReLUSpec:
    """Choose patch sizes for every channel under a budget.

    Args:
        distortion: A distortion directory or its loaded :class:`.Distortion`.
        budget: Any form of :func:`.budget_spec.parse_budget`: a fraction of
            the all-ReLU count (``0.06``, ``'6%'``), a DReLU count
            (``'drelus=300'``) or bytes per image (``'bytes=20MB'``,
            ``'online_bytes=2e7,bits=16'``).
        solver: ``'exact'`` or ``'dense'`` (:mod:`.knapsack`; same optimum) or
            ``'uniform'``.
        candidates: Choose only among this candidate set's sizes (a name of
            :data:`.candidates.CANDIDATE_SETS`, e.g. ``'paper'``); None: every
            measured candidate.
        bits: Compared bits of a byte budget that names none (default 64).

    Returns:
        BlockReLUSpec: the patch sizes, with metadata ``budget`` (a fraction
        as a number, else the canonical text), ``drelus``, ``relus``,
        ``objective``, ``lower_bound``, ``optimal``, ``solver``,
        ``distortion_method``, ``distortion_dir``, ``distortion_sha256``,
        ``num_samples``, ``input_size``, ``config`` and ``checkpoint``; for
        DReLU budgets ``budget_drelus``, for byte budgets ``budget_bytes``,
        ``bytes`` (what the spec spends per image in the budget's phase),
        ``bytes_phase`` and ``bits``.

    Raises:
        BudgetError: for a malformed budget, or if no choice meets it.
    """
    if solver not in SOLVERS:
        raise ValueError(f'solver must be one of {SOLVERS}, got {solver!r}')
    budget = parse_budget(budget, bits)
    if not isinstance(distortion, Distortion):
        distortion = load_distortion(distortion)
    if candidates is not None:
        distortion = restrict_distortion(distortion, candidates)
    sites = distortion.sites
    relus = count_relus(sites)
    limit = budget.limit(relus)
    cost = budget_cost(budget)
    unit = 'DReLUs' if budget.unit == 'drelus' else f'bytes ({budget.phase}, bits={budget.bits})'
    manifest = distortion.manifest
    metadata = dict(budget=budget.to_json(), solver=solver,
                    distortion_method=manifest['method'],
                    distortion_dir=os.path.abspath(distortion.path),
                    distortion_sha256=distortion_fingerprint(distortion.path),
                    candidates=candidates if isinstance(candidates, str) else None,
                    num_samples=manifest['num_samples'], input_size=manifest['input_size'],
                    config=manifest['model'].get('config'),
                    checkpoint=manifest['model'].get('checkpoint'))
    if budget.unit == 'drelus':
        metadata.update(budget_drelus=limit)
    else:
        metadata.update(budget_bytes=limit, bytes_phase=budget.phase, bits=budget.bits)
    if solver == 'uniform':
        size, _ = solve_uniform(sites, limit, cost, unit)
        spec = BlockReLUSpec.uniform(sites, size)
        metadata.update(method=f'uniform {size}', objective=_uniform_objective(distortion, size),
                        lower_bound=None, optimal=False)
    else:
        costs, dists, columns = knapsack_instance(distortion, cost)
        if solver == 'dense':
            _check_dense_size(costs, limit)
        floor = int(np.where(np.isfinite(dists), costs, np.iinfo(np.int64).max).min(1).sum())
        if floor > limit:  # said here, in the budget's unit
            of = f' of {relus:,} ReLUs' if budget.unit == 'drelus' else ''
            raise BudgetError(f'budget {str(budget)!r} ({limit:,} {unit}{of}) cannot be met: '
                              f'the minimum achievable is {floor:,}')
        solve = solve_exact if solver == 'exact' else solve_dense
        sol = solve(costs, dists, limit)
        picked = columns[np.arange(len(columns)), sol.choice]
        sizes, offset = {}, 0
        for site in sites:
            chosen = picked[offset:offset + site.channels]
            sizes[site.name] = distortion.candidates[site.name][chosen]
            offset += site.channels
        spec = BlockReLUSpec(sizes)
        metadata.update(method='knapsack', objective=sol.objective, lower_bound=sol.lower_bound,
                        optimal=bool(sol.optimal), solver_seconds=round(sol.seconds, 3))
    spec.metadata.update(metadata)
    spec.describe(sites)
    spent = spec.metadata['drelus'] if budget.unit == 'drelus' else spec_cost(spec, sites, budget)
    if budget.unit == 'bytes':
        spec.metadata['bytes'] = spent
    if spent > limit:  # the knapsack's own guarantee, checked by the one count
        raise RuntimeError(f'solver {solver} used {spent} > {limit} {unit}')
    return spec


# the dense solver's G x (budget + 1) table beyond this is a memory error, not a solve
_DENSE_MAX_CELLS = 2 * 10**8


def _check_dense_size(costs: np.ndarray, limit: int) -> None:
    cap = min(limit, int(costs.max(axis=1, initial=0).sum()))
    cells = len(costs) * (cap + 1)
    if cells > _DENSE_MAX_CELLS:
        raise BudgetError(f"solver 'dense' would need a {len(costs):,} x {cap + 1:,} table "
                          f"({cells:,} cells, a cross-check for small budgets): use solver "
                          "'exact' (same optimum)")


def cached_budget_spec(distortion_dir: str, budget, solver: str = 'exact',
                       candidates: Optional[str] = None, bits: Optional[int] = None) -> str:
    """The spec file of ``budget`` inside ``distortion_dir``, solved once and then reused.

    The file ``spec_<solver>_<budget>[_<candidates>].json`` (``<budget>``:
    ``0.06``, ``drelus300``, ``bytes20000000-bits16``, ...) is reused while its
    recorded ``distortion_sha256`` matches the distortion files, and re-solved
    (and overwritten, atomically) otherwise.

    Args:
        budget: Any form of :func:`.budget_spec.parse_budget`.
        candidates: A candidate set name to restrict the choice to (see
            :func:`solve_budget`); None: every measured candidate.
        bits: Compared bits of a byte budget that names none (default 64).

    Returns:
        str: the spec file's path.
    """
    budget = parse_budget(budget, bits)  # validate before touching files
    if candidates is not None:
        candidate_set(candidates)  # likewise
    tag = '' if candidates is None else '_' + candidates.replace('+', '-')
    path = os.path.join(distortion_dir, f'spec_{solver}_{budget.tag()}{tag}.json')
    if os.path.exists(path):
        meta = BlockReLUSpec.load(path).metadata
        if (meta.get('distortion_sha256') == distortion_fingerprint(distortion_dir)
                and meta.get('budget') == budget.to_json() and meta.get('solver') == solver
                and meta.get('candidates') == candidates):
            return path
    solve_budget(distortion_dir, budget, solver, candidates).save(path)
    return path
