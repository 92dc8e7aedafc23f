"""Arithmetic in the ring Z_{2^64} on torch ``int64`` tensors.

Every ring element is a torch ``int64`` whose two's-complement wrap-around *is*
the reduction mod 2^64 (add, sub, mul and left shift wrap). Real numbers are
fixed point with ``frac_bits`` fractional bits (12 by default).

The linear layers are the performance crux: torch has no int64 convolution on
the CPU. :func:`ring_conv2d` and :func:`ring_linear` are exact mod 2^64 and
fast: each operand is split into ``limb_bits``-wide limbs (the low limbs
unsigned, the top one signed), every limb pair ``(i, j)`` with
``(i + j) * limb_bits < 64`` is convolved in float64 (exact, because every
partial sum stays below 2^53 in magnitude: a product is below
``2^(2 * limb_bits)`` and a sum has ``fan_in`` terms; the limb width is chosen
from the fan-in so that this holds), and the partial results are recombined
with wrapping int64 shifts. Operands of small magnitude (e.g. the server's
fixed-point weights, which fit in one signed 16-bit limb) use fewer limbs, so
the online convolution ``conv(X - A, W)`` costs 4 float convolutions and a
random-by-random one 10. :func:`ring_conv2d_reference` (unfold + int64
matmul) is the slow exact reference it is tested against.
"""
import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .prf import P

DTYPE = torch.int64
FRAC_BITS = 12
MIN64 = -(1 << 63)

IntPair = Union[int, Sequence[int]]


# ----------------------------------------------------------------- encoding
def encode(x, frac_bits: int = FRAC_BITS) -> Tensor:
    """Encode real values as fixed point: ``round(x * 2^frac_bits)`` as int64."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.round(x * float(1 << frac_bits)).to(DTYPE)


def decode(x: Tensor, frac_bits: int = FRAC_BITS) -> Tensor:
    """Decode fixed-point int64 values (signed) to float64."""
    return x.to(torch.float64) / float(1 << frac_bits)


def to_unsigned_order(x: Tensor) -> Tensor:
    """Map int64 to int64 so that signed ``<`` on the result is unsigned ``<`` on x."""
    return x ^ MIN64


def ult(a: Tensor, b: Tensor) -> Tensor:
    """Unsigned ``a < b`` for int64 words (as bool)."""
    return to_unsigned_order(a) < to_unsigned_order(b)


def wrap(a: Tensor, b: Tensor) -> Tensor:
    """Unsigned wrap-around bit of ``a + b``: 1 iff ``a + b >= 2^64`` (int64 0/1)."""
    return ult(a + b, a).to(DTYPE)


def msb(x: Tensor) -> Tensor:
    """Bit 63 (the sign bit) as int64 0/1."""
    return (x >> 63) & 1


# ------------------------------------------------- the odd ring Z_{2^64 - 1}
# ShareConvert and MSB (SecureNN) work mod L - 1 = 2^64 - 1. Elements are int64
# words holding the unsigned values 0 .. 2^64 - 2; the all-ones word (2^64 - 1,
# i.e. int64 -1) is 0 and is never returned.
def odd_reduce(x: Tensor) -> Tensor:
    """Reduce unsigned words mod 2^64 - 1 (only the all-ones word changes, to 0)."""
    return torch.where(x == -1, torch.zeros_like(x), x)


def odd_add(a: Tensor, b) -> Tensor:
    """``a + b`` mod 2^64 - 1 (end-around carry: 2^64 = 1 there)."""
    s = a + b
    return odd_reduce(s + ult(s, a).to(DTYPE))


def odd_neg(a: Tensor) -> Tensor:
    """``-a`` mod 2^64 - 1: the bitwise complement is (2^64 - 1) - a."""
    return odd_reduce(~a)


def odd_sub(a: Tensor, b: Tensor) -> Tensor:
    return odd_add(a, odd_neg(b))


# ------------------------------------------------- Z_67 digits on the wire
# PrivateCompare's Z_67 values cross packed, one fixed-size record per element:
# its columns 10 at a time as base-67 words of 61 bits (67^10 < 2^61), the last
# r < 10 as one word of the fewest bits that hold 67^r values, the words end to
# end in a little-endian bit stream padded to whole bytes (64 columns: 49 B,
# 6.1 bits per digit; log2(67) = 6.07 is the floor). Fixed records keep every
# byte count linear in the element count, as the cost model and the byte
# budgets need.
ZP_DIGITS = 10          # digits per full word
_ZP_MAX_WORD = P ** ZP_DIGITS


def _word_bits(digits: int) -> int:
    """Bits of a word of ``digits`` base-67 digits (61 for 10)."""
    return (P ** digits - 1).bit_length()


def _zp_layout(cols: int):
    """Per word of a record: (first column, digits, bit offset, bits); and the record's bits."""
    words, pos = [], 0
    for start in range(0, cols, ZP_DIGITS):
        k = min(ZP_DIGITS, cols - start)
        words.append((start, k, pos, _word_bits(k)))
        pos += _word_bits(k)
    return words, pos


def zp_row_bytes(cols: int) -> int:
    """Bytes of one element's ``cols`` packed Z_67 digits (49 for 64 columns)."""
    return -(-_zp_layout(int(cols))[1] // 8)


def zp_packed_bytes(rows: int, cols: int) -> int:
    """Bytes on the wire of ``rows`` elements of ``cols`` Z_67 digits (the cost model's formula)."""
    return int(rows) * zp_row_bytes(cols)


def pack_zp(digits: Tensor) -> Tensor:
    """Z_67 values ``(rows, cols)`` (any integer dtype, each in [0, 67)) as packed
    bytes: uint8, flat, ``zp_packed_bytes(rows, cols)`` of them."""
    rows, cols = digits.shape
    d = np.ascontiguousarray(digits.numpy().T, dtype=np.uint64)   # d[i]: column i
    words, _ = _zp_layout(cols)
    nbytes = zp_row_bytes(cols)
    out = np.zeros((rows, -(-nbytes // 8)), np.uint64)
    for start, k, pos, bits in words:
        acc = d[start + k - 1].copy()
        for i in range(start + k - 2, start - 1, -1):      # Horner: base 67, first digit lowest
            np.multiply(acc, np.uint64(P), out=acc)
            np.add(acc, d[i], out=acc)
        q, o = divmod(pos, 64)
        out[:, q] |= acc << np.uint64(o)
        if o + bits > 64:
            out[:, q + 1] |= acc >> np.uint64(64 - o)
    data = out.astype('<u8').view(np.uint8)[:, :nbytes]
    return torch.from_numpy(np.ascontiguousarray(data).reshape(-1))


def _field(src: np.ndarray, pos: int, bits: int) -> np.ndarray:
    q, o = divmod(pos, 64)
    v = src[:, q] >> np.uint64(o)
    if o + bits > 64:
        v |= src[:, q + 1] << np.uint64(64 - o)
    return v & np.uint64((1 << bits) - 1)


def unpack_zp(data: Tensor, rows: int, cols: int, what: str) -> Tensor:
    """The ``(rows, cols)`` Z_67 values (uint8) of bytes made by :func:`pack_zp`.

    Anything but the canonical encoding (wrong length or dtype, a word of k
    digits >= 67^k, nonzero padding bits) raises a ValueError naming
    ``what``: a peer's malformed message is an error, never digits.
    """
    rows, cols = int(rows), int(cols)
    arr = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    nbytes = zp_row_bytes(cols)
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != rows * nbytes:
        raise ValueError(f'{what}: expected {rows * nbytes} bytes of packed Z_67 digits '
                         f'({rows} x {cols}), got {arr.dtype} of shape {tuple(arr.shape)}')
    words, total = _zp_layout(cols)
    buf = np.zeros((rows, 8 * -(-nbytes // 8)), np.uint8)
    buf[:, :nbytes] = arr.reshape(rows, nbytes)
    src = buf.view('<u8').astype(np.uint64)
    if 8 * nbytes > total and _field(src, total, 8 * nbytes - total).any():
        raise ValueError(f'{what}: nonzero padding bits in a packed Z_67 record')
    out = np.empty((cols, rows), np.uint8)   # out[i]: column i
    for start, k, pos, bits in words:
        acc = _field(src, pos, bits)
        if (acc >= np.uint64(P ** k)).any():
            raise ValueError(f'{what}: a packed word of {k} digits is >= 67^{k} '
                             '(not Z_67 digits)')
        for i in range(start, start + k):
            out[i] = acc % np.uint64(P)
            acc //= np.uint64(P)
    return torch.from_numpy(np.ascontiguousarray(out.T))


def bits_msb_first(x: Tensor, hi: int, lo: int) -> Tensor:
    """Bits ``hi, hi-1, ..., lo`` of every element, as uint8, on a new last axis."""
    shifts = torch.arange(hi, lo - 1, -1, dtype=DTYPE)
    return ((x.unsqueeze(-1) >> shifts) & 1).to(torch.uint8)


def shift_right(x: Tensor, bits) -> Tensor:
    """Arithmetic right shift of one share (SecureML local truncation)."""
    return x >> bits


# ---------------------------------------------------------- linear layers
def _pair(v: IntPair) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(u) for u in v)
    return v if len(v) == 2 else (v[0], v[0])


def _num_limbs(t: Tensor, limb_bits: int) -> int:
    """Fewest limbs (low ones unsigned, top one signed) that represent every element."""
    if t.numel() == 0:
        return 1
    lo, hi = int(t.min()), int(t.max())
    for k in range(1, math.ceil(64 / limb_bits) + 1):
        bound = 1 << (k * limb_bits - 1)
        if -bound <= lo and hi < bound:
            return k
    return math.ceil(64 / limb_bits)


def _limbs(t: Tensor, k: int, limb_bits: int) -> list:
    """Split int64 ``t`` into ``k`` float64 limbs: low limbs unsigned, top signed."""
    mask = (1 << limb_bits) - 1
    out = [((t >> (i * limb_bits)) & mask).to(torch.float64) for i in range(k - 1)]
    out.append((t >> ((k - 1) * limb_bits)).to(torch.float64))
    return out


def limb_bits_for(fan_in: int) -> int:
    """Widest limb (16, 8, 4, 2 or 1 bits) whose float64 partial sums stay exact.

    A limb product is below ``2^(2 * limb_bits)`` in magnitude and a partial
    sum has ``fan_in`` terms: exact while ``fan_in * 2^(2 * limb_bits) <= 2^53``.
    """
    for lb in (16, 8, 4, 2, 1):
        if fan_in * (1 << (2 * lb)) <= (1 << 53):
            return lb
    raise ValueError(f'fan-in {fan_in} too large for an exact float64 ring product')


def _ring_bilinear(op, x: Tensor, w: Tensor, fan_in: int) -> Tensor:
    """Exact ``op(x, w) mod 2^64`` for a bilinear ``op`` computed in float64."""
    lb = limb_bits_for(fan_in)
    kx, kw = _num_limbs(x, lb), _num_limbs(w, lb)
    n = math.ceil(64 / lb)
    xs, ws = _limbs(x, kx, lb), _limbs(w, kw, lb)
    out = None
    # one float op per weight limb j, over all input limbs i with i + j < n
    # stacked on the batch axis
    for j in range(kw):
        ni = min(kx, n - j)
        if ni <= 0:
            continue
        xb = torch.cat(xs[:ni], 0) if ni > 1 else xs[0]
        yb = op(xb, ws[j])
        # exact integers below 2^53: the float -> int64 conversion is exact
        yb = yb.to(DTYPE)
        parts = yb.chunk(ni, 0) if ni > 1 else (yb,)
        for i, part in enumerate(parts):
            term = part << ((i + j) * lb) if i + j else part
            out = term if out is None else out + term
    return out


def conv_out_shape(x_shape, w_shape, stride: IntPair = 1, padding: IntPair = 0,
                   dilation: IntPair = 1) -> Tuple[int, int, int, int]:
    """Output shape ``(N, Cout, Ho, Wo)`` of a conv2d (public shape arithmetic)."""
    N, _, H, W = x_shape
    Co, _, kh, kw = w_shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return (N, Co, Ho, Wo)


def _im2col(x: Tensor, kernel, stride, padding, dilation) -> Tuple[Tensor, int, int]:
    """``(N, C, kh*kw, Ho*Wo)`` columns of a zero-padded int64 map (one copy)."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        xp = x.new_zeros((N, C, H + 2 * ph, W + 2 * pw))
        xp[:, :, ph:ph + H, pw:pw + W] = x
    else:
        xp = x.contiguous()
    Hp, Wp = xp.shape[2:]
    Ho = (Hp - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wp - dw * (kw - 1) - 1) // sw + 1
    sN, sC, sH, sW = xp.stride()
    view = xp.as_strided((N, C, kh, kw, Ho, Wo),
                         (sN, sC, sH * dh, sW * dw, sH * sh, sW * sw))
    return view.reshape(N, C, kh * kw, Ho * Wo), Ho, Wo


def ring_conv2d(x: Tensor, w: Tensor, stride: IntPair = 1, padding: IntPair = 0,
                dilation: IntPair = 1, groups: int = 1, method: str = 'int64') -> Tensor:
    """Exact conv2d mod 2^64 of int64 ``x`` (N,Cin,H,W) and ``w`` (Cout,Cin/g,kh,kw).

    Any kernel (incl. non-square), stride, zero padding, dilation and groups
    (incl. depthwise). No bias: add it in the ring afterwards.

    ``method='int64'`` (default, fastest measured here): one im2col copy and a
    wrapping int64 matmul (torch's int64 GEMM runs at about the float64 GEMM
    speed on this CPU). ``method='limbs'``: 16-bit limbs through float64
    ``conv2d`` (kept for comparison; see the module docstring).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    Co, Cg, kh, kw = w.shape
    if method == 'limbs':
        kws = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        return _ring_bilinear(lambda a, b: F.conv2d(a, b, **kws), x, w, Cg * kh * kw)
    N = x.shape[0]
    cols, Ho, Wo = _im2col(x, (kh, kw), stride, padding, dilation)
    L = Ho * Wo
    cpg = Co // groups
    if groups == 1:
        out = torch.matmul(w.reshape(Co, Cg * kh * kw), cols.reshape(N, Cg * kh * kw, L))
    elif Cg == 1 and cpg == 1:  # depthwise: multiply-accumulate over the kernel taps
        out = (cols * w.reshape(1, Co, kh * kw, 1)).sum(2)
    else:
        out = torch.matmul(w.reshape(groups, cpg, Cg * kh * kw),
                           cols.reshape(N, groups, Cg * kh * kw, L))
    return out.reshape(N, Co, Ho, Wo)


def ring_linear(x: Tensor, w: Tensor, method: str = 'int64') -> Tensor:
    """Exact ``x @ w.T`` mod 2^64 for int64 ``x`` (N, in) and ``w`` (out, in)."""
    if method == 'limbs':
        return _ring_bilinear(lambda a, b: a @ b.t(), x, w, w.shape[1])
    return x @ w.t()


def ring_conv2d_reference(x: Tensor, w: Tensor, stride: IntPair = 1, padding: IntPair = 0,
                          dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """Slow exact reference: explicit im2col and an int64 (wrapping) matmul."""
    N, Ci, H, W = x.shape
    Co, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    xp = torch.zeros((N, Ci, H + 2 * ph, W + 2 * pw), dtype=DTYPE)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    _, _, Ho, Wo = conv_out_shape(x.shape, w.shape, stride, padding, dilation)
    cols = torch.empty((N, Ci, kh, kw, Ho, Wo), dtype=DTYPE)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, a, b] = xp[:, :, a * dh:a * dh + sh * (Ho - 1) + 1:sh,
                                  b * dw:b * dw + sw * (Wo - 1) + 1:sw]
    out = torch.empty((N, Co, Ho, Wo), dtype=DTYPE)
    cpg = Co // groups
    xn, wn = cols.numpy(), w.numpy()
    for g in range(groups):
        xg = xn[:, g * Cg:(g + 1) * Cg].reshape(N, Cg * kh * kw, Ho * Wo)
        wg = wn[g * cpg:(g + 1) * cpg].reshape(cpg, Cg * kh * kw)
        res = np.einsum('ok,nkp->nop', wg, xg)  # int64, wraps mod 2^64
        out[:, g * cpg:(g + 1) * cpg] = torch.from_numpy(res.reshape(N, cpg, Ho, Wo))
    return out


def ring_linear_reference(x: Tensor, w: Tensor) -> Tensor:
    """Slow exact reference for :func:`ring_linear` (numpy int64 wraps)."""
    return torch.from_numpy(np.einsum('ni,oi->no', x.numpy(), w.numpy()))
