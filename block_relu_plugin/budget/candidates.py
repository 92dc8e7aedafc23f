"""Candidate patch sizes for one activation map, and their pruning per channel.

The knapsack picks one candidate per channel; among candidates of equal DReLU
count only the least distorting one matters (:func:`prune_equal_cost`).

Candidate sets (:data:`CANDIDATE_SETS`, chosen by name with
``block_relu_cfg=dict(candidates=...)`` or the tools' ``--candidates``):

``paper`` (the default)
    The authors' hand-made lists (``authors_block_sizes.json``, their
    published parameter file, as data) for the square maps they covered:
    1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112, 128, 256, 320 and 512. Sides
    longer than the map are capped to it (the same tiling) and repeats dropped:
    their lists repeat a few sizes (e.g. (8, 14) at 56x56) and their 14x14
    list holds (4, 15), which is their (4, 14) there. Their 320x320 list is a
    copy of the 256x256 one (no whole-map patch); it is used as it is.

    Other maps (any ``H x W``, also non-square) get the rule their lists
    follow (:func:`construct_candidates`). A list is a *template*, one per
    power of two ``P``: near-square patches with sides 1..16 and aspect ratio
    <= 8 (hand-picked, so the templates are data, not a formula; 1x1 to 8x8
    have short lists of their own), a few larger sides that divide the map
    (``P/2, P/4, ...`` above 16; at ``P = 32`` also 24), the whole map, then
    identity ``(0, 1)`` and zero ``(1, 0)``. A map takes the template of the
    next power of two >= ``max(H, W)`` and rescales each axis on its own: on
    an axis of ``D`` pixels (``P_D`` = next power of two >= ``D``) the
    template's divisor sides ``s`` (8, 16, 24, 32 for ``P <= 32``; 16, 32,
    64, ... for ``P >= 64``) become ``ceil(s * D / P_D)``, other sides are
    kept (capped at ``D``). That is how the authors made their 7x7, 14x14,
    28x28, 56x56 and 112x112 lists from the 8, 16, 32, 64 and 128 ones
    (8 -> 7, 16 -> 14, 24 -> 21, 32 -> 28, ...). On the large templates
    (``P >= 64``) they also replaced side 6 by 7 (6x6 excepted) where 7
    divides the map and 6 does not (56x56, 112x112); the rule does the same.
    It reproduces every list they gave, in their order, except two (pinned in
    ``tests/test_budget/test_candidates.py``): at 14x14 they dropped (6, 7),
    (7, 6) and (12, 12) by hand, and their 320x320 list is the 256x256 one,
    where the rule rescales the 512 template (sides 10, 20, 40, ..., 320 in
    place of 16, 32, ..., 256).

``all_pairs``
    Every pair of sides from {1..8, H/2, H/4, H} x {1..8, W/2, W/4, W}
    (:func:`all_pairs_candidates`), plus identity; the plugin's earlier
    default. It lacks sides 9..16, e.g. 16x16 on 128x128 maps.

Names join with ``+`` for the union (``'paper+all_pairs'``): extract once,
then solve with either set (:func:`restrict_candidates`).
"""
import functools
import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from block_relu_plugin.layers.block_relu import IDENTITY, ZERO

CandidateFn = Callable[[int, int], np.ndarray]

_AUTHORS_FILE = os.path.join(os.path.dirname(__file__), 'authors_block_sizes.json')


@functools.lru_cache(maxsize=1)
def authors_lists() -> Dict[int, Tuple[Tuple[int, int], ...]]:
    """The authors' lists as published: map side -> patch sizes, in their order (repeats kept)."""
    with open(_AUTHORS_FILE, encoding='utf-8') as f:
        raw = json.load(f)
    out = {}
    for key, sizes in raw.items():
        h, w = (int(v) for v in key.split('x'))
        if h != w:
            raise ValueError(f'{_AUTHORS_FILE}: expected square map sizes, got {key}')
        out[h] = tuple((int(a), int(b)) for a, b in sizes)
    return out


def _normalise(sizes: Iterable[Sequence[int]], height: int, width: int) -> np.ndarray:
    """Cap sides at the map (same tiling), drop repeats (first kept); identity and zero last."""
    seen, out = set(), []
    for bh, bw in sizes:
        size = (int(bh), int(bw))
        if size not in (IDENTITY, ZERO):
            size = (min(size[0], height), min(size[1], width))
        if size not in seen:
            seen.add(size)
            out.append(size)
    for special in (IDENTITY, ZERO):  # where the authors put them, whatever the input order
        if special in seen:
            out.remove(special)
            out.append(special)
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _template(p: int) -> List[Tuple[int, int]]:
    """The authors' list of the ``p x p`` map (``p`` a power of two); above 512, 512's and halvings."""
    lists = authors_lists()
    if p in lists:
        return list(lists[p])
    if p < 512:
        raise ValueError(f'no authors\' list for {p}x{p}')
    base = [s for s in lists[512] if s not in (IDENTITY, ZERO)]
    more, s = [], p
    while s > 512:
        more.append((s, s))
        s //= 2
    return base + more[::-1] + [IDENTITY, ZERO]


def _divisor_sides(p: int) -> Tuple[int, ...]:
    """The sides of the ``p x p`` template that stand for fractions of the map."""
    if p <= 32:
        return tuple(s for s in (8, 16, 24, 32) if s <= p)
    return tuple(16 << j for j in range(max(0, p.bit_length() - 5)))


def construct_candidates(height: int, width: int) -> np.ndarray:
    """The authors' construction rule for a ``height x width`` map (see the module docstring).

    Returns:
        np.ndarray: ``(K, 2)`` int64 patch sizes, the template's order, identity
        and zero last.

    Examples:
        >>> construct_candidates(28, 28)[-4:].tolist()
        [[21, 21], [28, 28], [0, 1], [1, 0]]
        >>> construct_candidates(32, 64)[-4:].tolist()
        [[32, 32], [32, 64], [0, 1], [1, 0]]
    """
    _check_size(height, width)
    p = _next_pow2(max(height, width))
    template = _template(p)
    scaled = set(_divisor_sides(p))

    def axis(side: int, d: int, square6: bool) -> int:
        pd = _next_pow2(d)
        if side in scaled and side <= pd and d != pd:
            return -(-side * d // pd)
        if p >= 64 and side == 6 and not square6 and d % 7 == 0 and d % 6 != 0:
            return 7  # their 56 and 112 lists: 7 divides the map, 6 does not (6x6 stays)
        return side

    sizes = [s if s in (IDENTITY, ZERO) else
             (axis(s[0], height, s == (6, 6)), axis(s[1], width, s == (6, 6)))
             for s in template]
    return _normalise(sizes, height, width)


def paper_candidates(height: int, width: int) -> np.ndarray:
    """The ``paper`` set: the authors' list where they gave one, else their rule.

    Returns:
        np.ndarray: ``(K, 2)`` int64 patch sizes, ReLU ``(1, 1)`` first,
        identity and zero last.

    Examples:
        >>> len(paper_candidates(56, 56)), len(paper_candidates(32, 64))
        (96, 101)
    """
    _check_size(height, width)
    lists = authors_lists()
    if height == width and height in lists:
        return _normalise(lists[height], height, width)
    return construct_candidates(height, width)


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


def all_pairs_candidates(height: int,
                         width: int,
                         small_sides: Iterable[int] = range(1, 9),
                         extra: Optional[Iterable[int]] = None) -> np.ndarray:
    """The ``all_pairs`` set: every pair of row and column sides, plus identity.

    Row sides are ``small_sides``, ``H/2`` and ``H/4`` when integer and above
    the largest small side, ``H`` itself and ``extra``; column sides likewise
    with ``W``. Sides are capped at the map size, since a longer side tiles
    the map exactly as the map size does. Never the zero code.

    Counts with the defaults (identity included): 4x4 17, 7x7 50, 8x8 65,
    14x14 and 16x16 82, 28x28 and 32x32 101, 56x56 to 112x112 122.

    Returns:
        np.ndarray: ``(K, 2)`` int64 patch sizes, sorted lexicographically,
        so ``IDENTITY`` is row 0.

    Examples:
        >>> all_pairs_candidates(8, 8).shape
        (65, 2)
    """
    _check_size(height, width)
    extra = [] if extra is None else list(extra)
    small_sides = list(small_sides)
    rows = _sides(height, small_sides, extra)
    cols = _sides(width, small_sides, extra)
    pairs = np.stack(np.meshgrid(rows, cols, indexing='ij'), axis=-1).reshape(-1, 2)
    return np.concatenate([np.array([IDENTITY]), pairs]).astype(np.int64)


#: Named candidate sets: map size ``(H, W)`` -> ``(K, 2)`` patch sizes.
CANDIDATE_SETS: Dict[str, CandidateFn] = {
    'paper': paper_candidates,
    'all_pairs': all_pairs_candidates,
}
DEFAULT_CANDIDATES = 'paper'


def candidate_set(name: Union[str, CandidateFn, None] = None) -> CandidateFn:
    """The candidate function of a set name (``'paper'``, ``'all_pairs'``, ``'a+b'`` unions).

    A callable is returned as it is; None is the default set.

    Raises:
        ValueError: on an unknown name.
    """
    if name is None:
        name = DEFAULT_CANDIDATES
    if callable(name):
        return name
    parts = str(name).split('+')
    unknown = [p for p in parts if p not in CANDIDATE_SETS]
    if unknown or not parts:
        raise ValueError(f'unknown candidate set {name!r}; expected one of '
                         f'{sorted(CANDIDATE_SETS)} or a "+" union of them')
    if len(parts) == 1:
        return CANDIDATE_SETS[parts[0]]

    def union(height: int, width: int) -> np.ndarray:
        sizes = [s for p in parts for s in CANDIDATE_SETS[p](height, width).tolist()]
        return _normalise(sizes, height, width)
    union.__name__ = f'union_{"_".join(parts)}'
    return union


def default_candidates(height: int, width: int) -> np.ndarray:
    """The default candidate set (``paper``) of a ``height x width`` map."""
    return candidate_set()(height, width)


def candidates_from_cfg(cfg) -> str:
    """The candidate set a config asks for: ``model.block_relu_cfg.candidates``, else ``paper``.

    Args:
        cfg: An mmengine Config (or dict) with a ``model`` entry.

    Returns:
        str: the set's name (checked); :func:`candidate_set` gives its function.
    """
    model = cfg.get('model') or {}
    name = (model.get('block_relu_cfg') or {}).get('candidates') or DEFAULT_CANDIDATES
    candidate_set(name)
    return name


def restrict_candidates(measured: np.ndarray, wanted: np.ndarray, site: str = '') -> np.ndarray:
    """Indices into ``measured`` of the ``wanted`` patch sizes (each must have been measured).

    Raises:
        ValueError: naming the site and the first sizes that were not measured.
    """
    index = {tuple(int(v) for v in s): i for i, s in enumerate(np.asarray(measured))}
    missing = [tuple(int(v) for v in s) for s in np.asarray(wanted) if tuple(s) not in index]
    if missing:
        raise ValueError(f'site {site!r}: {len(missing)} candidate(s) of the requested set were '
                         f'not measured (first {missing[:3]}); extract with a set that holds '
                         'them, e.g. a "+" union')
    return np.array(sorted({index[tuple(int(v) for v in s)] for s in np.asarray(wanted)}),
                    dtype=np.int64)


def _check_size(height: int, width: int) -> None:
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f'map size must be positive, got {height}x{width}')


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
