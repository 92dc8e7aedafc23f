"""From channel distortions and a DReLU budget to a Block-ReLU spec.

Every channel picks one candidate; among candidates of equal DReLU cost only
the least distorting one competes (:func:`.candidates.prune_equal_cost`), and
the multiple-choice knapsack (:mod:`.knapsack`) minimises the summed
distortion under the budget. ``uniform`` is the baseline: one patch size for
every channel of every site, the smallest that meets the budget.
"""
import math
import numbers
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..conversion.sites import ReLUSite, count_relus
from ..layers.block_relu import num_drelus
from ..spec.spec import BlockReLUSpec
from .candidates import prune_equal_cost
from .distortion import Distortion, distortion_fingerprint, load_distortion
from .knapsack import BudgetError, solve_dense, solve_exact

SOLVERS = ('exact', 'dense', 'uniform')


def budget_drelus(budget: float, relus: int) -> int:
    """The DReLU budget: ``budget`` is a fraction of ``relus`` if <= 1, else a count.

    Raises:
        BudgetError: if the budget is not a positive number.
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) \
            or not math.isfinite(budget) or budget <= 0:
        raise BudgetError(f'the budget must be a positive fraction of the ReLU count '
                          f'(<= 1) or a DReLU count (> 1), got {budget!r}')
    if budget <= 1:
        return int(math.floor(budget * relus + 1e-9))  # 0.06 * relus is rarely exact
    if not float(budget).is_integer():
        raise BudgetError(f'a budget > 1 is a DReLU count and must be an integer, got {budget}')
    return int(budget)


def uniform_patches(max_side: int) -> List[Tuple[int, int]]:
    """Squares and near-squares by growing area: 1x1, 1x2, 2x2, 2x3, 3x3, ... up to ``max_side``."""
    sizes = []
    for n in range(1, max_side + 1):
        sizes.append((n, n))
        if n < max_side:
            sizes.append((n, n + 1))
    return sizes


def solve_uniform(sites: Sequence[ReLUSite], budget: int) -> Tuple[Tuple[int, int], int]:
    """The smallest uniform patch (most DReLUs) whose total DReLU count meets ``budget``.

    Returns:
        ((bh, bw), drelus)

    Raises:
        BudgetError: if even one DReLU per channel is over the budget.
    """
    max_side = max([max(s.height, s.width) for s in sites], default=1)
    for size in uniform_patches(max_side):
        cost = int(sum(s.channels * int(num_drelus(size, s.height, s.width)) for s in sites))
        if cost <= budget:
            return size, cost
    floor = sum(s.channels for s in sites)
    raise BudgetError(f'budget {budget:,} DReLUs is infeasible for a uniform patch size: '
                      f'one patch per channel already costs {floor:,}')


def knapsack_instance(distortion: Distortion):
    """Padded knapsack arrays over all channels, with equal-cost candidates pruned.

    Returns:
        (costs, dists, columns): ``(G, W)`` int64 DReLU costs, float64
        distortions (``inf`` padding) and the candidate index of each column
        in its site's candidate list (-1 for padding); ``G`` = all channels in
        site order.
    """
    blocks = []
    for site in distortion.sites:
        cand = distortion.candidates[site.name]
        cost = num_drelus(cand, site.height, site.width)
        dist = distortion.values[site.name]
        if not np.all(np.isfinite(dist)) or np.any(dist < 0):
            raise ValueError(f'site {site.name!r}: distortions must be finite and >= 0')
        keep = prune_equal_cost(cost, dist)
        # Survivors first, in candidate order: the narrowest padding.
        order = np.argsort(~keep, axis=1, kind='stable')[:, :max(1, int(keep.sum(1).max()))]
        valid = np.take_along_axis(keep, order, axis=1)
        blocks.append((np.where(valid, cost[order], 0),
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


def solve_budget(distortion: Union[str, Distortion], budget: float,
                 solver: str = 'exact') -> BlockReLUSpec:
    """Choose patch sizes for every channel under a DReLU budget.

    Args:
        distortion: A distortion directory or its loaded :class:`.Distortion`.
        budget: A fraction of the all-ReLU count (<= 1, e.g. 0.06) or a DReLU
            count (> 1).
        solver: ``'exact'`` or ``'dense'`` (:mod:`.knapsack`; same optimum) or
            ``'uniform'``.

    Returns:
        BlockReLUSpec: the patch sizes, with metadata ``budget``,
        ``budget_drelus``, ``drelus``, ``relus``, ``objective``,
        ``lower_bound``, ``optimal``, ``solver``, ``distortion_method``,
        ``distortion_dir``, ``distortion_sha256``, ``num_samples``,
        ``input_size``, ``config`` and ``checkpoint``.

    Raises:
        BudgetError: if no choice meets the budget.
    """
    if solver not in SOLVERS:
        raise ValueError(f'solver must be one of {SOLVERS}, got {solver!r}')
    if not isinstance(distortion, Distortion):
        distortion = load_distortion(distortion)
    sites = distortion.sites
    relus = count_relus(sites)
    limit = budget_drelus(budget, relus)
    manifest = distortion.manifest
    metadata = dict(budget=budget, budget_drelus=limit, solver=solver,
                    distortion_method=manifest['method'],
                    distortion_dir=os.path.abspath(distortion.path),
                    distortion_sha256=distortion_fingerprint(distortion.path),
                    num_samples=manifest['num_samples'], input_size=manifest['input_size'],
                    config=manifest['model'].get('config'),
                    checkpoint=manifest['model'].get('checkpoint'))
    if solver == 'uniform':
        size, _ = solve_uniform(sites, limit)
        spec = BlockReLUSpec.uniform(sites, size)
        metadata.update(method=f'uniform {size}', objective=_uniform_objective(distortion, size),
                        lower_bound=None, optimal=False)
    else:
        costs, dists, columns = knapsack_instance(distortion)
        solve = solve_exact if solver == 'exact' else solve_dense
        try:
            sol = solve(costs, dists, limit)
        except BudgetError as e:
            raise BudgetError(f'budget {budget!r} ({limit:,} of {relus:,} ReLUs) cannot be '
                              f'met: {e}') from None
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
    if spec.metadata['drelus'] > limit:  # the knapsack's own guarantee, checked by the one count
        raise RuntimeError(f'solver {solver} used {spec.metadata["drelus"]} > {limit} DReLUs')
    return spec


def _budget_tag(budget: float) -> str:
    if budget > 1 and float(budget).is_integer():
        return str(int(budget))
    return format(budget, 'g')


def cached_budget_spec(distortion_dir: str, budget: float, solver: str = 'exact') -> str:
    """The spec file of ``budget`` inside ``distortion_dir``, solved once and then reused.

    The file ``spec_<solver>_<budget>.json`` is reused while its recorded
    ``distortion_sha256`` matches the distortion files, and re-solved (and
    overwritten, atomically) otherwise.

    Returns:
        str: the spec file's path.
    """
    budget_drelus(budget, 1)  # validate before touching files
    path = os.path.join(distortion_dir, f'spec_{solver}_{_budget_tag(budget)}.json')
    if os.path.exists(path):
        meta = BlockReLUSpec.load(path).metadata
        if (meta.get('distortion_sha256') == distortion_fingerprint(distortion_dir)
                and meta.get('budget') == budget and meta.get('solver') == solver):
            return path
    solve_budget(distortion_dir, budget, solver).save(path)
    return path
