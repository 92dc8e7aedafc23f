"""Candidate patch sizes for one activation map, and their pruning per channel.

The knapsack picks one candidate per channel. METHOD.md: candidates are every
pair from a set of side lengths (small sides, a few divisors of the map side,
the whole side) plus identity, and among candidates of equal DReLU count only
the least distorting one matters.
"""
from typing import Iterable, Optional

import numpy as np

from block_relu_plugin.layers.block_relu import IDENTITY


def _sides(size: int, small_sides: Iterable[int], extra: Iterable[int]) -> np.ndarray:
    """Side lengths for one map dimension of ``size`` pixels."""
    small = [int(s) for s in small_sides]
    extra = [int(s) for s in extra]
    if min(small + extra, default=1) < 1:
        raise ValueError('side lengths must be >= 1')
    threshold = max(small, default=0)
    divisors = [size // q for q in (2, 4) if size % q == 0 and size // q > threshold]
    # A side >= the map size is one patch spanning the dimension: the same
    # effect as the map size itself, so it is capped to that representative.
    return np.unique(np.minimum(small + divisors + extra + [size], size))


def default_candidates(height: int,
                       width: int,
                       small_sides: Iterable[int] = range(1, 9),
                       extra: Optional[Iterable[int]] = None) -> np.ndarray:
    """The candidate patch sizes of a ``height x width`` activation map.

    Every ``(bh, bw)`` with ``bh`` from the row sides and ``bw`` from the
    column sides, plus ``IDENTITY``; never the zero code ``(1, 0)``. Row sides
    are ``small_sides``, ``H/2`` and ``H/4`` when integer and above the largest
    small side, ``H`` itself and ``extra``; column sides likewise with ``W``.
    Sides are capped at the map size, since a longer side tiles the map
    exactly as the map size does, so no two candidates tile the map alike.

    Counts with the defaults (identity included):

    ======  =====  =====  =====  =====  =====  =====  =======
    map     4x4    7x7    8x8    14x14  16x16  28x28  32x32
    count   17     50     65     82     82     101    101
    ======  =====  =====  =====  =====  =====  =====  =======

    and 122 for 56x56, 64x64 and 112x112. The authors' hand-made lists hold
    about 25 for 7x7/8x8 (one side per patch count per dimension, e.g. sides
    1, 2, 3, 4, 7 on a 7-pixel side) and 75-104 for larger maps. Sides of equal
    patch count tile differently but cost the same, so :func:`prune_equal_cost`
    keeps one of them per channel and the knapsack does not grow; they only
    add distortion simulations.

    Args:
        height: Map height ``H`` (>= 1).
        width: Map width ``W`` (>= 1).
        small_sides: Side lengths always offered (capped at the map size).
        extra: Further side lengths for both dimensions.

    Returns:
        np.ndarray: ``(K, 2)`` int64 patch sizes, sorted lexicographically,
        so ``IDENTITY`` is row 0.

    Examples:
        >>> default_candidates(8, 8).shape
        (65, 2)
    """
    if height < 1 or width < 1:
        raise ValueError(f'map size must be positive, got {height}x{width}')
    extra = [] if extra is None else list(extra)
    small_sides = list(small_sides)
    rows = _sides(height, small_sides, extra)
    cols = _sides(width, small_sides, extra)
    pairs = np.stack(np.meshgrid(rows, cols, indexing='ij'), axis=-1).reshape(-1, 2)
    return np.concatenate([np.array([IDENTITY]), pairs]).astype(np.int64)


def prune_equal_cost(costs: np.ndarray, distortions: np.ndarray) -> np.ndarray:
    """Keep, per channel, only candidates that no cheaper-or-equal one matches.

    A candidate survives when its distortion is strictly below that of every
    candidate with lower cost, and it is the least distorting of its cost
    (ties: lowest index). Candidates with infinite distortion never survive.
    The survivors of a channel, ordered by cost, have strictly decreasing
    distortion: the efficient frontier a multiple-choice knapsack needs.

    Args:
        costs: ``(K,)`` or ``(C, K)`` integer DReLU counts.
        distortions: ``(C, K)`` float distortions (``inf`` = not a candidate).

    Returns:
        np.ndarray: ``(C, K)`` bool mask of the surviving candidates.

    Examples:
        >>> prune_equal_cost(np.array([0, 4, 4, 9]),
        ...                  np.array([[3.0, 1.0, 0.5, 0.7]]))
        array([[ True, False,  True, False]])
    """
    dist = np.asarray(distortions, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f'distortions must have shape (C, K), got {dist.shape}')
    cost = np.broadcast_to(np.asarray(costs), dist.shape)
    index = np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    order = np.lexsort((index, dist, cost), axis=-1)
    sorted_dist = np.take_along_axis(dist, order, axis=-1)
    # Strictly below the minimum over everything cheaper, or equally cheap and
    # earlier in the order (which is then no more distorting).
    best_before = np.minimum.accumulate(sorted_dist, axis=-1)
    best_before = np.concatenate(
        [np.full((dist.shape[0], 1), np.inf), best_before[:, :-1]], axis=-1)
    keep = np.zeros(dist.shape, dtype=bool)
    np.put_along_axis(keep, order, sorted_dist < best_before, axis=-1)
    return keep
