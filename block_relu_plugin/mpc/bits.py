"""Bit messages and the plan of the bit-tree comparison behind DReLU.

Bits cross packed, eight to a byte (``np.packbits`` order: the first bit is
the high bit of the first byte), an element's ``k`` bits after the previous
element's, and each group of elements (a channel) padded to whole bytes, so
a message's bytes are additive over channels (:func:`message_bytes`). Ring
values whose low bits are known to be zero cross as their top ``bits`` bits
in ``ceil(bits / 8)`` little-endian bytes each. A receiver accepts only the
canonical encoding of the size it expects (its own plan, never the sender's
claim) and names the message and the peer otherwise.

:class:`ComparePlan` lays out the comparison ``[X > y]`` of a helper-known X
and a public y over compared bits 62 .. 64 - ``bits``: 3-bit digits, MSB
first (the last one narrower when the count is not a multiple of 3), each a
one-hot vector of 2^w bits; then a tree that merges neighbouring (GT, EQ)
pairs, one round per level. The widths are the byte optimum: per element,
one-hot leaves cost 2^w / w bits per compared bit and each merge about 8
(3 opened each way, 2 dealt), so w = 3 (about 41 B at 63 bits) beats w = 2
(47 B) and w = 4 (46 B).
"""
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

DIGIT = 3  # bits per leaf digit (see the module doc)


def channel_group(shape) -> Optional[int]:
    """Elements per padding group of a tensor of ``shape``: one channel's map
    (the last two dims) for 3-D and larger shapes, else None (one group)."""
    shape = tuple(int(v) for v in shape)
    return shape[-1] * shape[-2] if len(shape) >= 3 and shape[-1] * shape[-2] else None


def uniform_groups(n: int, group: Optional[int]):
    """Counts of ``n`` elements in groups of ``group`` (None: one group)."""
    return None if group is None else np.full(int(n) // int(group), int(group), np.int64)


def channel_groups(shape):
    """The padding groups of a whole tensor of ``shape``: one per channel map."""
    return uniform_groups(np.prod(shape, dtype=np.int64), channel_group(shape))


def _groups(groups, n: int) -> np.ndarray:
    g = np.array([n] if groups is None else groups, dtype=np.int64).reshape(-1)
    if (g < 0).any() or int(g.sum()) != n:
        raise ValueError(f'groups {g.tolist()[:8]} do not partition {n} elements')
    return g


def message_bytes(groups, k: int) -> int:
    """Bytes of a message of ``k`` bits per element, each group of elements
    padded to whole bytes (``groups``: element counts; see :func:`pack_rows`)."""
    g, counts = np.unique(np.asarray(groups, dtype=np.int64).reshape(-1), return_counts=True)
    return int((((g * int(k) + 7) // 8) * counts).sum())


def _positions(groups: np.ndarray, k: int) -> np.ndarray:
    """Bit position of every element's first bit: groups start on byte boundaries."""
    group_bytes = (groups * k + 7) // 8
    start = 8 * (np.cumsum(group_bytes) - group_bytes)
    first = np.cumsum(groups) - groups
    elem = np.arange(int(groups.sum()), dtype=np.int64)
    return np.repeat(start - first * k, groups) + elem * k


def pack_rows(b: Tensor, groups=None) -> Tensor:
    """0/1 rows ``(n, k)`` as packed bytes (uint8, flat), row after row, each
    group of rows (``groups``: counts; default one group) padded to whole
    bytes, so a message's size is additive over groups (channels: what the
    byte budget's knapsack needs, :meth:`.cost.Ours.compare`)."""
    n, k = b.shape
    bits = b.to(torch.uint8).numpy()
    g = _groups(groups, n)
    if len(g) == 1 or (g * k % 8 == 0).all():
        return torch.from_numpy(np.packbits(bits.reshape(-1)))
    out = np.zeros(8 * message_bytes(g, k), np.uint8)
    out[(_positions(g, k)[:, None] + np.arange(k)).reshape(-1)] = bits.reshape(-1)
    return torch.from_numpy(np.packbits(out))


def unpack_rows(data: Tensor, groups, n: int, k: int, what: str) -> Tensor:
    """The ``(n, k)`` rows (uint8 0/1) of a :func:`pack_rows` message.

    Anything but ``message_bytes(groups, k)`` uint8 bytes with zero padding
    bits raises a ValueError naming ``what``.
    """
    g = _groups(groups, int(n))
    nbytes = message_bytes(g, k)
    arr = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != nbytes:
        raise ValueError(f'{what}: expected {nbytes} bytes of {n} x {k} packed bits, '
                         f'got {arr.dtype} of shape {tuple(arr.shape)}')
    bits = np.unpackbits(arr)
    if len(g) == 1 or (g * k % 8 == 0).all():
        if bits[n * k:].any():
            raise ValueError(f'{what}: nonzero padding bits in a packed bit message')
        return torch.from_numpy(bits[:n * k].reshape(n, k).copy())
    pos = (_positions(g, k)[:, None] + np.arange(k)).reshape(-1)
    out = bits[pos]
    bits[pos] = 0
    if bits.any():
        raise ValueError(f'{what}: nonzero padding bits in a packed bit message')
    return torch.from_numpy(out.reshape(n, k))


def word_bytes(bits: int) -> int:
    """Bytes per ring value of ``bits`` significant (top) bits."""
    return (int(bits) + 7) // 8


def pack_words(x: Tensor, bits: int) -> Tensor:
    """Ring values (int64) whose low ``64 - bits`` bits are zero, as their top
    ``bits`` bits: ``word_bytes(bits)`` little-endian bytes each (uint8, flat)."""
    w = word_bytes(bits)
    v = x.reshape(-1) >> (64 - bits)
    if bits < 64:
        v = v & ((1 << bits) - 1)  # >> is arithmetic: drop the sign copies
    v = v.numpy().astype('<i8')
    return torch.from_numpy(np.ascontiguousarray(v.view(np.uint8).reshape(-1, 8)[:, :w])
                            .reshape(-1))


def unpack_words(data: Tensor, n: int, bits: int, what: str) -> Tensor:
    """The ``n`` ring values (int64) of a :func:`pack_words` message: the words
    shifted back to the top; bits above ``bits`` in the last byte must be zero."""
    w, n = word_bytes(bits), int(n)
    arr = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != n * w:
        raise ValueError(f'{what}: expected {n * w} bytes ({n} words of {bits} bits), '
                         f'got {arr.dtype} of shape {tuple(arr.shape)}')
    buf = np.zeros((n, 8), np.uint8)
    buf[:, :w] = arr.reshape(n, w)
    v = buf.view('<u8').reshape(n)
    if bits < 64 and (v >> np.uint64(bits)).any():
        raise ValueError(f'{what}: a word has bits above its {bits} bits')
    return torch.from_numpy(v.astype(np.int64)) << (64 - bits)


class ComparePlan:
    """Digit layout and merge tree of the comparison over ``bits - 1`` compared bits.

    Attributes:
        widths: Digit widths, MSB first.
        tops: Bit position of each digit's top bit.
        leaf_bits: One-hot bits per element (sum of 2^w).
        levels: ``(pairs, with_eq)`` per merge level: ``pairs`` (hi, lo)
            merges of neighbours, the first ``with_eq`` of which also need
            EQ (all but the one on the least significant spine, whose EQ
            nothing reads); an odd last node passes up unmerged.
        triple_bits: Dealt AND-correction bits per element (one per AND).
        open_bits: Bits each of client and server opens per element, all levels.
    """

    def __init__(self, bits: int):
        if not 2 <= bits <= 64:
            raise ValueError(f'bits must be in [2, 64], got {bits}')
        m = bits - 1
        self.bits = bits
        self.widths: List[int] = [DIGIT] * (m // DIGIT) + ([m % DIGIT] if m % DIGIT else [])
        self.tops = [62 - sum(self.widths[:k]) for k in range(len(self.widths))]
        self.leaf_bits = sum(1 << w for w in self.widths)
        self.levels: List[Tuple[int, int]] = []
        nodes = len(self.widths)
        while nodes > 1:
            pairs = nodes // 2
            self.levels.append((pairs, pairs if nodes % 2 else pairs - 1))
            nodes = pairs + nodes % 2
        self.triple_bits = sum(p + e for p, e in self.levels)
        self.open_bits = sum(2 * p + e for p, e in self.levels)

    def digits(self, v: Tensor) -> List[Tensor]:
        """Digit values of int64 ``v`` (n,), MSB first (each int64 (n,))."""
        return [(v >> (top - w + 1)) & ((1 << w) - 1) for top, w in zip(self.tops, self.widths)]

    def groups(self):
        """``(first digit, count, width, first one-hot bit)`` per run of equal widths."""
        out, k, off = [], 0, 0
        while k < len(self.widths):
            w = self.widths[k]
            c = 1
            while k + c < len(self.widths) and self.widths[k + c] == w:
                c += 1
            out.append((k, c, w, off))
            k, off = k + c, off + c * (1 << w)
        return out

    def one_hot(self, v: Tensor) -> Tensor:
        """The helper's one-hot leaves of X = ``v`` (int64 (n,)): uint8 (n, leaf_bits)."""
        n = v.shape[0]
        out = torch.zeros((n, self.leaf_bits), dtype=torch.uint8)
        d = self.digits(v)
        for k, c, w, off in self.groups():
            pos = off + torch.arange(c) * (1 << w) + torch.stack(d[k:k + c], 1)
            out.scatter_(1, pos, 1)
        return out

    def leaves(self, share: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        """A party's XOR shares of (gt, eq) = ([v > t], [v = t]) per digit, from
        its share of the one-hot leaves and the public y: uint8 (n, digits) each.
        gt is the XOR of the entries above t, eq the entry at t (local)."""
        n = share.shape[0]
        t = self.digits(y)
        gts, eqs = [], []
        for k, c, w, off in self.groups():
            block = share[:, off:off + c * (1 << w)].reshape(n, c, 1 << w).to(torch.int16)
            above = torch.cat([block.flip(-1).cumsum(-1).flip(-1) & 1,
                               torch.zeros((n, c, 1), dtype=torch.int16)], -1)
            tk = torch.stack(t[k:k + c], 1).unsqueeze(-1)
            gts.append(above.gather(-1, tk + 1).squeeze(-1))
            eqs.append(block.gather(-1, tk).squeeze(-1))
        return torch.cat(gts, 1).to(torch.uint8), torch.cat(eqs, 1).to(torch.uint8)
