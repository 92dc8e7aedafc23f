"""The 3-party protocols (SecureNN family), one function per step.

Every function takes the party's :class:`~.session.Session` first and is
called by all three parties in the same order, once in the offline pass and
once in the online pass of a run. Shares are additive over Z_{2^64} between
client (index 0) and server (index 1). Byte counts per call are in
:mod:`.cost` (``ours``), which the tests check against the transport's meter.

The client's share of every tensor the protocols take is known before the
input exists: the input is shared as ``(R, x - R)`` with R the client's own
PRF output, convolutions give the client a data-independent share, and every
product re-randomises the client's share to a fresh R (one message, the size
of the product). So the client runs the network on real values in the offline
pass too, and whatever it sends that depends only on its share (the masked
inputs of every convolution, half of every Beaver opening and of every DReLU
opening) crosses in the offline phase. Only the server's halves, the
comparisons, the gates and the re-randomisations are online. DReLU is a
comparison over bits the helper deals (:func:`_drelu`; the helper receives
nothing); SecureNN's ShareConvert and MSB, kept as the paper's reference
path, use PrivateCompare, whose Z_67 digits cross packed
(:func:`.ring.pack_zp`, 49 B for 64 columns).

Who holds what: the client passes real int64 shares in both passes; the
server in the online pass; the helper, and the server offline, pass
shape-only tensors (:func:`meta`, or any tensor of the right shape) and get
shape-only tensors back (``sess.has_data`` tells them apart).
"""
import functools
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..layers.block_relu import _Plan, check_block_sizes, num_drelus
from .bits import ComparePlan, channel_groups, pack_rows, pack_words, unpack_rows, unpack_words
from .prf import P
from .ring import (DTYPE, _im2col, _pair, bits_msb_first, conv_out_shape, encode, msb,
                   odd_add, odd_reduce, odd_sub, pack_zp, ring_conv2d, ring_linear, ult,
                   unpack_zp, wrap)
from .session import Session

Shape = Union[Sequence[int], torch.Size]


def meta(shape) -> Tensor:
    """A shape-only int64 tensor (what the helper and offline passes hold).

    A zero-stride view of one zero: no memory, and torch ops on it are cheap
    (torch's 'meta' device is avoided on purpose: its first arithmetic op
    imports the decomposition machinery, seconds per process). Protocol
    functions never look at its values: whether a party holds data is decided
    by ``sess.has_data``, so any tensor of the right shape works as well.
    """
    return torch.zeros((), dtype=DTYPE).expand(tuple(shape))


def _shape(x) -> tuple:
    return tuple(x.shape) if isinstance(x, Tensor) else tuple(int(v) for v in x)


def _other(sess: Session) -> str:
    return 'server' if sess.role == 'client' else 'client'


def _j(sess: Session) -> int:
    return 0 if sess.role == 'client' else 1


# ------------------------------------------------------------------ input/output
def share_input(sess: Session, x) -> Tensor:
    """Share the client's input as ``(R, encode(x) - R)``: R from the client's
    own PRF (known before the input exists), the other share sent online.

    Args:
        x: The client passes the image (float, encoded with ``frac_bits``; or
            int64 already in fixed point) in the online pass; everybody else,
            and the client offline, passes the shape (or any tensor of it).
    """
    op = sess.next_op()
    shape = _shape(x)
    if not sess.has_data:
        return meta(shape)
    if sess.role == 'server':
        return sess.recv_ring('client', shape)
    r = sess.stream('own', op, 0).ring(shape)
    if not sess.is_offline:
        sess.send('server', (x if x.dtype == DTYPE else encode(x, sess.frac_bits)) - r)
    return r


def reveal_to_client(sess: Session, x: Tensor) -> Optional[Tensor]:
    """Open a shared tensor to the client only (the server sends its share).

    Returns the int64 ring values at the client (decode with
    :func:`.ring.decode`), None elsewhere.
    """
    sess.next_op()
    if not sess.has_data or sess.is_offline:
        return None
    if sess.role == 'server':
        sess.send('client', x)
        return None
    return x + sess.recv_ring('server', x.shape)


# ------------------------------------------------------------------ local ops
def truncate(sess: Session, x: Tensor, bits: Optional[int] = None) -> Tensor:
    """SecureML local truncation: each party shifts its own share right.

    Result within [-1, 0] ulp of ``floor(x / 2^bits)``; fails (a 2^(64-bits)
    error) with probability about ``|x| / 2^63``.
    """
    bits = sess.frac_bits if bits is None else bits
    if not sess.has_data or bits == 0:
        return x
    return x >> bits


def add_public(sess: Session, x: Tensor, c) -> Tensor:
    """Add a public (or server-known) int64 constant: only the server adds it."""
    if sess.has_data and sess.role == 'server':
        return x + c
    return x


def add(sess: Session, x: Tensor, y: Tensor) -> Tensor:
    """Residual add (local)."""
    return x + y


def concat(sess: Session, xs, dim: int = 1) -> Tensor:
    """Channel concat (local)."""
    return torch.cat(list(xs), dim)


def _floor_div(x: Tensor, d) -> Tensor:
    return torch.div(x, d, rounding_mode='floor')


def avg_pool2d(sess: Session, x: Tensor, kernel_size, stride=None, padding=0,
               count_include_pad: bool = True) -> Tensor:
    """Average pooling (any kernel/stride/padding), local: share-wise window sums,
    then floor division of each share by the divisor (kernel area, or the
    number of valid pixels with ``count_include_pad=False``).

    The result is within [-1, 0] ulp of ``floor(window_sum / divisor)`` (so
    within 2 ulp of the exact mean), and fails with probability about
    ``|window_sum| / 2^63``, like local truncation.
    """
    k = _pair(kernel_size)
    s = _pair(stride if stride is not None else kernel_size)
    p = _pair(padding)
    N, C, H, W = x.shape
    Ho = (H + 2 * p[0] - k[0]) // s[0] + 1
    Wo = (W + 2 * p[1] - k[1]) // s[1] + 1
    if not sess.has_data:
        return meta((N, C, Ho, Wo))
    cols, _, _ = _im2col(x, k, s, p, (1, 1))
    sums = cols.sum(2).reshape(N, C, Ho, Wo)
    if count_include_pad:
        return _floor_div(sums, k[0] * k[1])
    ones = torch.ones((1, 1, H, W), dtype=DTYPE)
    cnt = _im2col(ones, k, s, p, (1, 1))[0].sum(2).reshape(1, 1, Ho, Wo)
    return _floor_div(sums, cnt)


def global_avg_pool(sess: Session, x: Tensor) -> Tensor:
    """Global average pool to ``(N, C, 1, 1)``: share-wise sum // (H*W), local
    (same ±1 ulp / wrap behaviour as :func:`avg_pool2d`)."""
    N, C, H, W = x.shape
    if not sess.has_data:
        return meta((N, C, 1, 1))
    return _floor_div(x.sum((2, 3), keepdim=True), H * W)


def adaptive_pool_windows(size: int, out: int) -> Tuple[Tensor, Tensor]:
    """PyTorch's adaptive pooling windows along one axis: ``start = floor(i size /
    out)``, ``end = ceil((i + 1) size / out)``, as int64 tensors of length ``out``."""
    i = torch.arange(out, dtype=DTYPE)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def adaptive_pool_out_shape(shape, output_size) -> Tuple[int, int, int, int]:
    """Output shape of adaptive pooling; a None in ``output_size`` keeps that side."""
    N, C, H, W = _shape(shape)
    oh, ow = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    return (N, C, H if oh is None else int(oh), W if ow is None else int(ow))


def adaptive_avg_pool2d(sess: Session, x, output_size) -> Tensor:
    """Adaptive average pooling to any output size, local: share-wise window sums
    (PyTorch's windows, :func:`adaptive_pool_windows`) and floor division of each
    share by its window's pixel count.

    Same error as :func:`avg_pool2d`: within [-1, 0] ulp of ``floor(window_sum /
    count)``, failing with probability about ``|window_sum| / 2^63``.
    """
    out_shape = adaptive_pool_out_shape(x, output_size)
    if not sess.has_data:
        return meta(out_shape)
    N, C, H, W = x.shape
    hs, he = adaptive_pool_windows(H, out_shape[2])
    ws, we = adaptive_pool_windows(W, out_shape[3])
    # window sums from prefix sums (ring additions: exact mod 2^64)
    ch = torch.cat([x.new_zeros((N, C, 1, W)), x.cumsum(2)], 2)
    rows = ch[:, :, he] - ch[:, :, hs]                                    # (N, C, Ho, W)
    cw = torch.cat([rows.new_zeros(rows.shape[:3] + (1,)), rows.cumsum(3)], 3)
    sums = cw[..., we] - cw[..., ws]                                      # (N, C, Ho, Wo)
    counts = (he - hs).reshape(-1, 1) * (we - ws).reshape(1, -1)
    return _floor_div(sums, counts)


def _pair_scale(v):
    if isinstance(v, (tuple, list)):
        return (float(v[0]), float(v[1])) if len(v) == 2 else (float(v[0]),) * 2
    return float(v), float(v)


@functools.lru_cache(maxsize=256)
def _resize_matrix(n: int, axis: int, size, scale_factor, mode: str, align_corners,
                   recompute_scale_factor, antialias: bool) -> Tensor:
    """The (n_out, n) float64 matrix of ``F.interpolate`` along one axis (0: H, 1: W).

    Every interpolation mode is linear and separable: the matrix is read off
    PyTorch's own kernel applied to one-hot rows (constant along the other
    axis, which keeps them constant), so its index and weight conventions
    (align_corners, scale_factor vs size, nearest rounding) are PyTorch's.
    """
    other = 1
    if size is None and scale_factor[1 - axis] < 1:
        # the other axis must keep >= 1 pixel after its own scaling
        other = math.ceil(1 / scale_factor[1 - axis]) + 1
    eye = torch.eye(n, dtype=torch.float64)
    shape = (n, 1, n, other) if axis == 0 else (n, 1, other, n)
    one_hot = eye.reshape((n, 1, n, 1) if axis == 0 else (n, 1, 1, n)).expand(shape)
    kw = dict(mode=mode, align_corners=align_corners, antialias=antialias)
    if size is not None:
        kw['size'] = (size[0], 1) if axis == 0 else (1, size[1])
    else:
        kw['scale_factor'] = scale_factor
        kw['recompute_scale_factor'] = recompute_scale_factor
    out = torch.nn.functional.interpolate(one_hot.contiguous(), **kw)
    return (out[:, 0, :, 0] if axis == 0 else out[:, 0, 0, :]).t().contiguous()


def resize_maps(shape, size=None, scale_factor=None, mode: str = 'nearest',
                align_corners=None, recompute_scale_factor=None,
                antialias: bool = False) -> Tuple[Tensor, Tensor]:
    """The (Ho, H) and (Wo, W) float64 matrices of ``F.interpolate`` (same
    arguments) on a map of ``shape`` (N, C, H, W): ``y = Mh x Mw^T``."""
    shape = _shape(shape)
    if len(shape) != 4:
        raise ValueError(f'resize on shares takes (N, C, H, W) maps, got shape {shape}')
    if (size is None) == (scale_factor is None):
        raise ValueError('resize needs exactly one of size and scale_factor')
    if antialias:
        raise ValueError('an antialiased resize is not supported on shares: use antialias=False')
    size = None if size is None else _pair(size)
    scale_factor = None if scale_factor is None else _pair_scale(scale_factor)
    args = (size, scale_factor, mode, align_corners, recompute_scale_factor, bool(antialias))
    return _resize_matrix(shape[2], 0, *args), _resize_matrix(shape[3], 1, *args)


def _apply_taps(sess: Session, x: Tensor, m: Tensor, dim: int) -> Tensor:
    """``m`` (float64, (n_out, n)) applied along ``dim`` of the share ``x``.

    A 0/1 matrix with one 1 per row (nearest, or an axis left unchanged) is an
    index gather: exact. Otherwise the weights are encoded with ``frac_bits``
    (each row rounded to sum to its exact encoded total, so constants stay
    constant), multiplied into the share tap by tap and truncated locally.
    """
    if ((m == 0) | (m == 1)).all() and (m.sum(1) == 1).all():
        return x.index_select(dim, m.argmax(1))
    scale = 2.0 ** sess.frac_bits
    q = torch.round(m * scale).to(DTYPE)
    q[torch.arange(q.shape[0]), m.abs().argmax(1)] += \
        torch.round(m.sum(1) * scale).to(DTYPE) - q.sum(1)
    taps = int((q != 0).sum(1).max())
    w, idx = q.abs().topk(max(taps, 1), 1)                 # the nonzero taps of each row
    w = torch.gather(q, 1, idx)
    view = [1] * x.dim()
    view[dim] = q.shape[0]
    y = None
    for k in range(idx.shape[1]):
        term = x.index_select(dim, idx[:, k]) * w[:, k].reshape(view)
        y = term if y is None else y + term
    return truncate(sess, y)


def resize(sess: Session, x, size=None, scale_factor=None, mode: str = 'nearest',
           align_corners=None, recompute_scale_factor=None, antialias: bool = False) -> Tensor:
    """``F.interpolate`` (same arguments, any mode, size or scale) of a shared
    (N, C, H, W) map, local: the interpolation weights are public.

    Applied axis by axis (:func:`resize_maps`): an axis whose map is a 0/1
    selection (nearest modes, or an unchanged axis) is an exact gather; a
    weighted axis costs one local truncation (error within 1 ulp plus the
    weights' rounding, a relative 2^-frac_bits per tap, failing with
    probability about ``|x| / 2^(63 - frac_bits)``, like a convolution's).
    """
    mh, mw = resize_maps(x, size, scale_factor, mode, align_corners, recompute_scale_factor,
                         antialias)
    n, c = _shape(x)[:2]
    if not sess.has_data:
        return meta((n, c, mh.shape[0], mw.shape[0]))
    return _apply_taps(sess, _apply_taps(sess, x, mh, 2), mw, 3)


# ------------------------------------------------------------------ linear layers
def _linear_layer(sess: Session, x, weight, bias, shift, key, apply, out_shape, w_shape):
    """Conv/FC with the server holding W in the clear (see :func:`conv2d`)."""
    op = sess.next_op()
    x_shape = _shape(x)
    shift = sess.frac_bits if shift is None else shift
    slot = sess.slot(key if key is not None else f'op{op}')
    skey = f'w{slot}'
    if skey in sess.cache and sess.role != 'server' and tuple(sess.cache[skey].shape) != w_shape:
        raise ValueError(f'weight key {key!r} was used with shape '
                         f'{tuple(sess.cache[skey].shape)}, now {w_shape}')
    if sess.is_offline:
        # once per session: the server sends F = W - B (B from the server-helper PRF)
        if skey not in sess.cache:
            if sess.role == 'server':
                b = sess.session_stream('sh', slot, 0).ring(w_shape)
                sess.send('client', weight - b, 'session')
                sess.cache[skey] = torch.empty(0)
            elif sess.role == 'client':
                sess.cache[skey] = sess.recv_ring('server', w_shape, 'session')
            else:
                sess.cache[skey] = sess.session_stream('sh', slot, 0).ring(w_shape)
        if sess.role == 'helper':
            a = sess.stream('ch', op, 0).ring(x_shape)
            c = apply(a, sess.cache[skey])
            sess.send('client', c - sess.stream('sh', op, 1).ring(out_shape))
        elif sess.role == 'client':
            a = sess.stream('ch', op, 0).ring(x_shape)
            c0 = sess.recv_ring('helper', out_shape)
            sess.send('server', x - a)  # the client's share is known offline
            # so is its output share
            y = (apply(a, sess.cache[skey]) + c0) >> shift
            sess.put(op, 'y', y)
            return y.clone()  # the forward may add to it in place (``out += identity``)
        else:
            sess.put(op, 'c1', sess.stream('sh', op, 1).ring(out_shape))
            sess.put(op, 'e', sess.recv_ring('client', x_shape))
        return meta(out_shape)
    if sess.role == 'helper':
        return meta(out_shape)
    if sess.role == 'client':
        return sess.take(op, 'y')
    y = (apply(x + sess.take(op, 'e'), weight) + sess.take(op, 'c1')) >> shift
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * (len(out_shape) - 2))
    return y


def conv2d(sess: Session, x, weight, bias: Optional[Tensor] = None, stride=1, padding=0,
           dilation=1, groups: int = 1, shift: Optional[int] = None,
           key: Optional[str] = None) -> Tensor:
    """Secure conv2d, followed by truncation and the server's bias.

    The server holds W in the clear; the client's weight share is 0. Session:
    the server sends F = W - B once (B: server-helper PRF, fixed per
    session). Offline: the helper sends the client C0 = conv(A, B) - C1 (A:
    client-helper PRF, fresh per run; C1: server-helper PRF), the client
    sends E = X0 - A (8 |X| bytes; X0 is known offline) and computes its
    output share conv(A, F) + C0. Online: no message; the server computes
    conv(X1 + E, W) + C1.

    Args:
        x: Input share (N, Cin, H, W), or a meta tensor / shape.
        weight: int64 fixed-point weight at the server; its shape (tuple or
            meta tensor) elsewhere.
        bias: int64 bias at output scale (server only; None elsewhere).
        shift: Truncation bits after the product (default ``frac_bits``).
        key: Name identifying the weight within the session (default: the op
            number, i.e. the position of the call in the program).
    """
    w_shape = _shape(weight)
    out_shape = conv_out_shape(_shape(x), w_shape, stride, padding, dilation)

    def apply(a, w):
        return ring_conv2d(a, w, stride, padding, dilation, groups)
    return _linear_layer(sess, x, weight, bias, shift, key, apply, out_shape, w_shape)


def linear(sess: Session, x, weight, bias: Optional[Tensor] = None,
           shift: Optional[int] = None, key: Optional[str] = None) -> Tensor:
    """Secure fully connected layer ``x @ W.T`` (x: (N, in), W: (out, in)); as conv2d."""
    w_shape = _shape(weight)
    out_shape = (_shape(x)[0], w_shape[0])
    return _linear_layer(sess, x, weight, bias, shift, key, ring_linear, out_shape, w_shape)


# ------------------------------------------------------------------ multiplication
def _beaver(sess: Session, op: int, x, y) -> Tensor:
    """Beaver product ``x * y`` of two shared tensors of one shape.

    ``x``'s client share is known offline (see the module doc), ``y``'s may
    not be. Offline: the helper sends the client C0 = A B - C1 and the client
    sends the server E_0 = X_0 - A_0. Online: the client sends F_0, the server
    [E_1 | F_1] in one message; Z_j = j E F + E B_j + A_j F + C_j; the client
    then sends the server Z_0 - R (R: its own PRF) and keeps R, so its output
    share is again known offline.
    """
    xs = _shape(x)
    nx = int(np.prod(xs, dtype=np.int64))
    if sess.role == 'helper':
        if sess.is_offline:
            a0, b0 = sess.stream('ch', op, 10).ring(xs), sess.stream('ch', op, 11).ring(xs)
            a1, b1 = sess.stream('sh', op, 10).ring(xs), sess.stream('sh', op, 11).ring(xs)
            c1 = sess.stream('sh', op, 12).ring(xs)
            sess.send('client', (a0 + a1) * (b0 + b1) - c1)
        return meta(xs)
    if sess.role == 'server' and sess.is_offline:
        sess.put(op, 'c', sess.stream('sh', op, 12).ring(xs))
        sess.put(op, 'e0', sess.recv_ring('client', xs))
        return meta(xs)
    pair = 'ch' if sess.role == 'client' else 'sh'
    a = sess.stream(pair, op, 10).ring(xs)
    if sess.role == 'client':
        if sess.is_offline:
            sess.put(op, 'c', sess.recv_ring('helper', xs))
            sess.send('server', x - a)
            return _rerandomise(sess, op, xs)
        e0 = x - a
    else:
        e0 = sess.take(op, 'e0')
    b, c = sess.stream(pair, op, 11).ring(xs), sess.take(op, 'c')
    if sess.role == 'client':
        sess.send('server', y - b)
        ef = sess.recv_ring('server', (2 * nx,))
        e, f = e0 + ef[:nx].reshape(xs), y - b + ef[nx:].reshape(xs)
        return _rerandomise(sess, op, xs, e * b + a * f + c)
    e1 = x - a
    sess.send('client', torch.cat([e1.reshape(-1), (y - b).reshape(-1)]))
    e, f = e0 + e1, y - b + sess.recv_ring('client', xs)
    return _rerandomise(sess, op, xs, e * f + e * b + a * f + c)


def _rerandomise(sess: Session, op: int, shape, z: Optional[Tensor] = None) -> Tensor:
    """End of a product: the client's share becomes R, from its own PRF (known
    offline, so the layers after it send their client messages offline); online
    it sends the server ``z_0 - R``, which the server adds to its share ``z_1``.
    Without R the server would hold ``z_0 + z_1``, the product itself."""
    if sess.role == 'client':
        r = sess.stream('own', op, 13).ring(shape)
        if not sess.is_offline:
            sess.send('server', z - r)
        return r
    if sess.role == 'server' and not sess.is_offline:
        return z + sess.recv_ring('client', shape)
    return meta(shape)


def mult(sess: Session, x, y) -> Tensor:
    """Element-wise product of two shared tensors of the same shape (Beaver)."""
    return _beaver(sess, sess.next_op(), x, y)


# ------------------------------------------------------------------ comparison
def _pc_masks(sess: Session, op: int, n: int, cols: int):
    """PrivateCompare's data-independent client-server randomness: a nonzero
    multiplier s and an additive mask u per column, and an independent random
    column permutation per element (see :func:`_private_compare`)."""
    s = sess.stream('cs', op, 21).zp_nonzero((n, cols)).to(DTYPE)
    u = sess.stream('cs', op, 23).zp((n, cols)).to(DTYPE)
    return s, u, sess.stream('cs', op, 22).permutations(n, cols)


def _private_compare(sess: Session, op: int, xbits_share, t_bits, beta, masks) -> Tensor:
    """PrivateCompare, client/server side: send the blinded columns to the helper.

    The helper-known value x is bit-shared over Z_67 (``xbits_share``, (n, m)
    MSB first); ``t_bits`` (n, m) are the bits of the public t; ``beta`` (n,)
    the client-server mask bit. The helper learns ``beta xor [x > t]`` from
    m + 1 columns per element (the last one detects x == t for beta = 1),
    each multiplied by a fresh nonzero s and permuted by an independent
    random permutation per element.

    The client sends ``pi(s c_0 + u)`` and the server ``pi(s c_1 - u)``: u is
    uniform per column, so each vector alone is uniform, and only their sum
    ``pi(s c)`` (the helper's legitimate output) carries the comparison.
    Without u the helper divides one vector by the other, cancels s, and
    with the bit shares it dealt solves for t (SECURITY.md, PrivateCompare).
    """
    n, m = t_bits.shape
    j = _j(sess)
    xs = xbits_share.to(DTYPE)
    t = t_bits.to(DTYPE)
    bt = beta.to(DTYPE).unsqueeze(1)
    w = xs * (1 - 2 * t) + j * t                         # shares of x_i xor t_i
    pre = torch.cumsum(w, 1) - w                          # sum over i < j
    total = w.sum(1, keepdim=True)
    sign = 1 - 2 * bt                                     # +1 for beta = 0, -1 for beta = 1
    cols = pre + sign * (j * t - xs) + j                 # beta=0: t - x + 1; beta=1: x - t + 1
    extra = total + j * (1 - bt)                          # beta=0: sum + 1; beta=1: sum
    c = torch.cat([cols, extra], 1) % P
    s, u, perm = masks
    sess.send('helper', pack_zp(torch.gather((c * s + (u if j == 0 else -u)) % P, 1, perm)))


def _send_bit_shares(sess: Session, x: Tensor, hi: int, lo: int, stream) -> None:
    """Helper: Z_67 shares of bits ``hi .. lo`` of x for PrivateCompare; the
    client's are drawn from ``stream`` (client-helper PRF), the server's sent."""
    u = stream.zp((x.numel(), hi - lo + 1)).to(DTYPE)
    sess.send('server', pack_zp((bits_msb_first(x, hi, lo).to(DTYPE) - u) % P))


def _recv_zp(sess: Session, peer: str, rows: int, cols: int, what: str) -> Tensor:
    """Receive a packed Z_67 message of ``rows x cols`` digits (uint8, that shape);
    a malformed one raises, naming ``what`` and the peer."""
    return unpack_zp(sess.recv(peer), rows, cols, f'{sess.role}: {what} from {peer}')


def _private_compare_result(sess: Session, n: int, cols: int) -> Tensor:
    """PrivateCompare, helper side: ``beta xor [x > t]`` (int64 0/1, (n,))."""
    d = _recv_zp(sess, 'client', n, cols, 'PrivateCompare vector').to(DTYPE) + \
        _recv_zp(sess, 'server', n, cols, 'PrivateCompare vector').to(DTYPE)
    return ((d % P) == 0).any(1).to(DTYPE)


def _xor_public(sess: Session, g: Tensor, c: Tensor) -> Tensor:
    """Z_{2^64} shares of ``g xor c`` for a shared bit g and a bit c public to
    client and server: ``1 - g`` where c = 1 (the client adds the 1)."""
    return torch.where(c == 1, (1 - _j(sess)) - g, g)


def _pre_shift(a: Tensor, bits: int, shift: int) -> Tensor:
    """The compared value of an approximate DReLU (see :func:`drelu`)."""
    return (a >> shift) << (64 - bits) if bits < 64 or shift else a


def drelu(sess: Session, x, bits: int = 64, shift: int = 0) -> Tensor:
    """Shares of DReLU(x) = [x >= 0] (int64 0/1), exact at bits=64 (see :func:`_drelu`)."""
    return _drelu(sess, x, bits, shift, arith=True, groups=channel_groups(_shape(x)))[0]


def _recv_bits(sess: Session, peer: str, groups, n: int, k: int, what: str) -> Tensor:
    """Receive ``(n, k)`` packed bits (:func:`.bits.pack_rows`; uint8 0/1); a
    malformed message raises, naming ``what`` and the peer."""
    return unpack_rows(sess.recv(peer), groups, n, k, f'{sess.role}: {what} from {peer}')


def _recv_words(sess: Session, peer: str, n: int, bits: int, what: str) -> Tensor:
    """Receive ``n`` ring values sent as their top ``bits`` bits (:func:`.bits.pack_words`)."""
    return unpack_words(sess.recv(peer), n, bits, f'{sess.role}: {what} from {peer}')


def _exchange_bits(sess: Session, mine: Tensor, groups, what: str) -> Tensor:
    """Client and server open XOR-shared bits ``(n, k)`` to each other (both
    send, then receive: one round); returns ``mine xor theirs``."""
    peer = _other(sess)
    sess.send(peer, pack_rows(mine, groups))
    return mine ^ _recv_bits(sess, peer, groups, *mine.shape, what)


def _drelu(sess: Session, x, bits: int, shift: int, arith: bool = False,
           fuse: Optional[Tensor] = None, select=None, groups=None):
    """DReLU(x) = [x >= 0] over the bits of a dealt mask, and the products it gates.

    With ``bits < 64`` (set per call) the compared value is the pre-shifted
    ``a = (x >> shift) << (64 - bits)`` (local truncation, then an exact left
    shift): its sign is computed exactly, so the result is right whenever
    ``-2^(bits-1+shift) + 2^shift <= x < 2^(bits-1+shift)`` ulp, apart from
    ``0 <= x < 2^shift``, which the local truncation (-1 ulp of ``2^shift``)
    may turn negative. At bits=64, shift=0, a = x and DReLU is exact.

    Protocol (the helper only deals; it receives nothing). X = X0 + X1, X0
    from the client-helper and X1 from the server-helper PRF, each with its
    low ``64 - bits`` bits zero; y = a + X is opened to client and server
    (the client's half offline, the server's online; ``bits`` bits each).
    MSB(a) = MSB(y) xor MSB(X) xor [X > y] on the compared bits 62 .. 64 -
    bits. The comparison is a tree over 3-bit digits (:class:`.bits.ComparePlan`):
    offline the helper deals XOR shares of the one-hot vector of every digit
    of X (the client's from the client-helper PRF, the server's sent packed),
    of MSB(X), and of AND triples (operands from the PRFs, the server's
    product share sent); online each digit gives shares of [v > t] and
    [v = t] locally, and each tree level merges neighbours with two Beaver
    ANDs sharing one operand (GT = GT_hi xor EQ_hi GT_lo, EQ = EQ_hi EQ_lo),
    both parties opening their masked bits at once. The XOR share d of DReLU
    is then opened masked by a dealt bit r: e = d xor r (public to client and
    server, uniform to each), and with [r] dealt in Z_{2^64}:

    * ``arith``: [DReLU] = e + (1 - 2e)[r], re-randomised like the products
      (so its client share is known offline and it composes like any share);
    * ``fuse`` (bool, one per element; bits=64, shift=0): ReLU(a) = a DReLU
      = e a + (1 - 2e)(y [r] - [X r]), [X r] dealt;
    * ``select = (v, idx)``: ``v g[idx]`` for the multiplicands v (flat) and
      g = DReLU, or ``1 - DReLU`` if ``select[2]`` is True: v - A is opened (A
      dealt; the client's half offline) and v r = (v - A) r + A r, [A r] dealt.

    The products' client shares are then re-randomised (8 B each, as after a
    Beaver product), so they are known offline. Bit messages pad each of
    ``groups`` (element counts, e.g. channels; default one group) to whole
    bytes (:func:`.bits.pack_rows`). Returns ``(arithmetic DReLU
    shares (x's shape) or None, fused ReLU shares (flat) or None, selected
    products (flat) or None)``.
    """
    plan = ComparePlan(bits)
    if bits + shift > 64:  # each party truncates its own share: a wrap cancels only up to here
        raise ValueError(f'bits + shift must be <= 64, got {bits} + {shift}')
    op = sess.next_op()
    shape = _shape(x)
    n = int(np.prod(shape, dtype=np.int64))
    lo = 64 - bits
    j = _j(sess)
    pair = 'ch' if j == 0 else 'sh'
    fidx = None
    if fuse is not None:
        if bits != 64 or shift:
            raise ValueError('a fused DReLU product needs bits=64 and shift=0 (a = x)')
        fidx = torch.nonzero(fuse.reshape(-1)).reshape(-1)
    nf = 0 if fidx is None else fidx.numel()
    if select is not None:
        sel_v, sel_idx = select[0], select[1].reshape(-1)
        flip = len(select) > 2 and bool(select[2])
    ms = 0 if select is None else sel_idx.numel()
    nd = n if arith else 0           # arithmetic DReLU shares, re-randomised with the products
    want = (arith, fuse is not None, select is not None)
    dealt = plan.leaf_bits + 1 + plan.triple_bits   # per element: leaves, MSB(X), ANDs
    if sess.is_offline:
        if sess.role == 'helper':
            big_x = (sess.stream('ch', op, 0).ring((n,)) << lo) + \
                (sess.stream('sh', op, 0).ring((n,)) << lo)
            parts = [plan.one_hot(big_x) ^ sess.stream('ch', op, 1).bits((n, plan.leaf_bits),
                                                                      torch.uint8),
                     msb(big_x).to(torch.uint8).reshape(n, 1)
                     ^ sess.stream('ch', op, 2).bits((n, 1), torch.uint8)]
            for lv, (p, q) in enumerate(plan.levels):  # p merges, q of them with EQ
                m0, m1 = (sess.stream(k, op, 100 + lv).bits((n, 2 * p + q), torch.uint8)
                          for k in ('ch', 'sh'))
                m = m0 ^ m1
                a = m[:, :p]
                c = torch.cat([a & m[:, p:2 * p], a[:, :q] & m[:, 2 * p:]], 1)
                parts.append(c ^ sess.stream('ch', op, 200 + lv).bits((n, p + q), torch.uint8))
            sess.send('server', pack_rows(torch.cat(parts, 1), groups))
            r = sess.stream('ch', op, 5).bits((n,)) ^ sess.stream('sh', op, 5).bits((n,))
            ring = [r - sess.stream('ch', op, 6).ring((n,))]
            if nf:
                ring.append(big_x[fidx] * r[fidx] - sess.stream('ch', op, 7).ring((nf,)))
            if ms:
                big_a = sess.stream('ch', op, 8).ring((ms,)) + sess.stream('sh', op, 8).ring((ms,))
                ring.append(big_a * r[sel_idx] - sess.stream('ch', op, 9).ring((ms,)))
            sess.send('server', torch.cat(ring))
            return _outputs(shape, nd, nf, ms, want)
        if sess.role == 'server':
            sess.put(op, 'bits', _recv_bits(sess, 'helper', groups, n, dealt, 'DReLU dealt bits'))
            sess.put(op, 'ring', sess.recv_ring('helper', (n + nf + ms,)))
            sess.put(op, 'y0', _recv_words(sess, 'client', n, bits, 'DReLU opening of y'))
            if ms:
                sess.put(op, 'e0', sess.recv_ring('client', (ms,)))
            return _outputs(shape, nd, nf, ms, want)
        a = _pre_shift(x.reshape(-1), bits, shift)
        sess.send('server', pack_words(a + (sess.stream('ch', op, 0).ring((n,)) << lo), bits))
        if ms:
            sess.send('server', sel_v.reshape(-1) - sess.stream('ch', op, 8).ring((ms,)))
        return _outputs(shape, nd, nf, ms, want,
                        _rerandomise(sess, op, (nd + nf + ms,)) if nd + nf + ms else None)
    if sess.role == 'helper':
        return _outputs(shape, nd, nf, ms, want)
    a = _pre_shift(x.reshape(-1), bits, shift)
    y_j = a + (sess.stream(pair, op, 0).ring((n,)) << lo)
    if ms:
        big_a = sess.stream(pair, op, 8).ring((ms,))
        v = sel_v.reshape(-1)
    if j == 1:
        sess.send('client', pack_words(y_j, bits))
        if ms:
            sess.send('client', v - big_a)
        y = y_j + sess.take(op, 'y0')
        if ms:
            big_e = v - big_a + sess.take(op, 'e0')
        leaf, msbx, *triples = torch.split(sess.take(op, 'bits'), [plan.leaf_bits, 1] + [
            p + q for p, q in plan.levels], 1)
        ring = sess.take(op, 'ring')
        r_a, xr, ar = ring[:n], ring[n:n + nf], ring[n + nf:]
    else:
        y = y_j + _recv_words(sess, 'server', n, bits, 'DReLU opening of y')
        if ms:
            big_e = v - big_a + sess.recv_ring('server', (ms,))
        leaf = sess.stream('ch', op, 1).bits((n, plan.leaf_bits), torch.uint8)
        msbx = sess.stream('ch', op, 2).bits((n, 1), torch.uint8)
        triples = [sess.stream('ch', op, 200 + lv).bits((n, p + q), torch.uint8)
                   for lv, (p, q) in enumerate(plan.levels)]
        r_a = sess.stream('ch', op, 6).ring((n,))
        xr = sess.stream('ch', op, 7).ring((nf,)) if nf else None
        ar = sess.stream('ch', op, 9).ring((ms,)) if ms else None
    gt, eq = plan.leaves(leaf, y)
    for lv, (p, q) in enumerate(plan.levels):  # p merges, q of them with EQ (one round)
        m = sess.stream(pair, op, 100 + lv).bits((n, 2 * p + q), torch.uint8)
        am, bm, bm2 = m[:, :p], m[:, p:2 * p], m[:, 2 * p:]
        hi_gt, hi_eq = gt[:, 0:2 * p:2], eq[:, 0:2 * p:2]
        lo_gt, lo_eq = gt[:, 1:2 * p:2], eq[:, 1:2 * p:2][:, :q]
        o = _exchange_bits(sess, torch.cat([hi_eq ^ am, lo_gt ^ bm, lo_eq ^ bm2], 1), groups,
                           'DReLU comparison opening')
        big_p, big_q, big_q2 = o[:, :p], o[:, p:2 * p], o[:, 2 * p:]
        c = triples[lv]
        and_gt = (big_p & bm) ^ (big_q & am) ^ c[:, :p]
        and_eq = (big_p[:, :q] & bm2) ^ (big_q2 & am[:, :q]) ^ c[:, p:]
        if j == 0:
            and_gt ^= big_p & big_q
            and_eq ^= big_p[:, :q] & big_q2
        new_eq = torch.zeros_like(and_gt)
        new_eq[:, :q] = and_eq
        gt = torch.cat([hi_gt ^ and_gt, gt[:, 2 * p:]], 1)
        eq = torch.cat([new_eq, eq[:, 2 * p:]], 1)
    d = gt[:, 0] ^ msbx[:, 0]
    if j == 0:
        d ^= 1 ^ msb(y).to(torch.uint8)
    # open d masked by the dealt bit r: e = d xor r is uniform to each party
    e = _exchange_bits(sess, (d ^ sess.stream(pair, op, 5).bits((n,), torch.uint8))[:, None],
                       groups, 'DReLU masked bit')[:, 0].to(DTYPE)
    z = [(1 - j) * e + (1 - 2 * e) * r_a] if arith else []
    if nf:
        ef = e[fidx]
        z.append(ef * a[fidx] + (1 - 2 * ef) * (y[fidx] * r_a[fidx] - xr))
    if ms:
        g = e[sel_idx] ^ 1 if flip else e[sel_idx]
        z.append(g * v + (1 - 2 * g) * (big_e * r_a[sel_idx] + ar))
    return _outputs(shape, nd, nf, ms, want,
                    _rerandomise(sess, op, (nd + nf + ms,), torch.cat(z)) if z else None)


def _outputs(shape, nd: int, nf: int, ms: int, want, out: Optional[Tensor] = None):
    """``_drelu``'s return triple (DReLU shares in ``shape``, fused, selected; None
    where ``want`` says not asked) from the re-randomised concatenation ``out``;
    shape-only where the party holds no data."""
    if out is None:
        out = meta((nd + nf + ms,))
    return (out[:nd].reshape(shape) if want[0] else None, out[nd:nd + nf] if want[1] else None,
            out[nd + nf:] if want[2] else None)


def _share_odd(sess: Session, value: Tensor, stream) -> None:
    """Helper: split ``value`` over Z_{2^64 - 1}; the client's share is drawn from
    ``stream`` (client-helper PRF), the server's is sent to it."""
    sess.send('server', odd_sub(value, odd_reduce(stream.ring(tuple(value.shape)))))


def share_convert(sess: Session, a) -> Tensor:
    """SecureNN ShareConvert: Z_{2^64} shares of ``a`` to Z_{2^64 - 1} shares of
    ``a mod (2^64 - 1)``, exact for every input (``a = 2^64 - 1``, i.e. -1 ulp,
    becomes 0: the map is not injective, which is why :func:`drelu` does not
    use it).

    With ``a0 + a1 = a + theta 2^64`` and 2^64 = 1 mod 2^64 - 1, the output is
    ``a_j - theta_j``. theta comes from unsigned wrap-around predicates (the
    authors' signed comparisons were off by 0-2 ulp): client and server share
    a random nonzero r = r0 + r1 (alpha = wrap(r0, r1)) and send the helper
    ``a_j + r_j`` (beta_j = wrap(a_j, r_j)); the helper opens x = a + r, sends
    the server delta = wrap of that opening (Z_{2^64 - 1}) and the Z_67 bit
    shares of x, PrivateCompare gives it ``eta'' xor [x >= r]`` which it
    shares, and ``theta = beta_0 + beta_1 + delta - alpha - [x < r]``.
    Shares are int64 words of unsigned values in [0, 2^64 - 2].
    """
    op = sess.next_op()
    shape = _shape(a)
    n = int(np.prod(shape, dtype=np.int64))
    if sess.is_offline:
        if sess.role != 'helper':
            sess.put(op, 'pc', _pc_masks(sess, op, n, 65))
        return meta(shape)
    if sess.role == 'helper':
        at0, at1 = sess.recv_ring('client', (n,)), sess.recv_ring('server', (n,))
        x = at0 + at1
        _send_bit_shares(sess, x, 63, 0, sess.stream('ch', op, 1))
        _share_odd(sess, wrap(at0, at1), sess.stream('ch', op, 2))
        _share_odd(sess, _private_compare_result(sess, n, 65), sess.stream('ch', op, 3))
        return meta(shape)
    j = _j(sess)
    r = sess.stream('cs', op, 30).ring((n,))
    r = torch.where(r == 0, torch.ones_like(r), r)      # [x < r] = 1 - [x > r - 1] needs r > 0
    r0 = sess.stream('cs', op, 31).ring((n,))
    r_j = r0 if j == 0 else r - r0
    a_j = a.reshape(-1)
    at = a_j + r_j
    sess.send('helper', at)
    if j == 0:
        xb = sess.stream('ch', op, 1).zp((n, 64))
        delta = odd_reduce(sess.stream('ch', op, 2).ring((n,)))
    else:
        xb = _recv_zp(sess, 'helper', n, 64, 'ShareConvert bit shares')
        delta = sess.recv_ring('helper', (n,))
    eta2 = sess.stream('cs', op, 20).bits((n,))
    _private_compare(sess, op, xb, bits_msb_first(r - 1, 63, 0), eta2, sess.take(op, 'pc'))
    eta_p = odd_reduce(sess.stream('ch', op, 3).ring((n,))) if j == 0 else \
        sess.recv_ring('helper', (n,))
    # eta = [x < r] = 1 - (eta' xor eta''): eta' where eta'' = 1, else j - eta'
    eta = torch.where(eta2 == 1, eta_p, odd_sub(torch.full_like(eta_p, j), eta_p))
    theta = odd_sub(odd_add(ult(at, a_j).to(DTYPE), delta), eta)
    if j == 1:
        theta = odd_sub(theta, wrap(r0, r - r0))
    return odd_sub(odd_reduce(a_j), theta).reshape(shape)


def compute_msb(sess: Session, a) -> Tensor:
    """SecureNN ComputeMSB: Z_{2^64} shares of the top bit of ``a``, from
    Z_{2^64 - 1} shares of ``a`` (values in [0, 2^64 - 2]); exact for all of them.

    In the odd ring MSB(a) = LSB(2a). X = X0 + X1 (client-helper and
    server-helper PRFs, no message); offline the helper sends the server the
    Z_67 bit shares of X. Online client and server
    open r = 2a + X (8 B each); then LSB(2a) = LSB(r) xor LSB(X) xor [X > r]
    (a wrap subtracts the odd 2^64 - 1). PrivateCompare gives the helper
    ``beta xor [X > r]``; it shares ``g = that xor LSB(X)`` and
    ``MSB = g xor beta xor LSB(r)`` follows locally (no multiplication).
    """
    op = sess.next_op()
    shape = _shape(a)
    n = int(np.prod(shape, dtype=np.int64))
    if sess.is_offline:
        if sess.role == 'helper':
            big_x = odd_add(odd_reduce(sess.stream('ch', op, 0).ring((n,))),
                            odd_reduce(sess.stream('sh', op, 0).ring((n,))))
            _send_bit_shares(sess, big_x, 63, 0, sess.stream('ch', op, 1))
            sess.put(op, 'lsbx', big_x & 1)
        elif sess.role == 'server':
            sess.put(op, 'v', _recv_zp(sess, 'helper', n, 64, 'MSB bit shares'))
        if sess.role != 'helper':
            sess.put(op, 'pc', _pc_masks(sess, op, n, 65))
        return meta(shape)
    if sess.role == 'helper':
        g = sess.take(op, 'lsbx') ^ _private_compare_result(sess, n, 65)
        sess.send('server', g - sess.stream('ch', op, 2).ring((n,)))
        return meta(shape)
    if sess.role == 'client':
        x_j = odd_reduce(sess.stream('ch', op, 0).ring((n,)))
        xb = sess.stream('ch', op, 1).zp((n, 64))
    else:
        x_j, xb = odd_reduce(sess.stream('sh', op, 0).ring((n,))), sess.take(op, 'v')
    a_j = a.reshape(-1)
    r_j = odd_add(odd_add(a_j, a_j), x_j)
    sess.send(_other(sess), r_j)
    r = odd_add(r_j, sess.recv_ring(_other(sess), (n,)))
    beta = sess.stream('cs', op, 20).bits((n,))
    _private_compare(sess, op, xb, bits_msb_first(r, 63, 0), beta, sess.take(op, 'pc'))
    g = sess.stream('ch', op, 2).ring((n,)) if sess.role == 'client' else \
        sess.recv_ring('helper', (n,))
    return _xor_public(sess, g, beta ^ (r & 1)).reshape(shape)


def drelu_securenn(sess: Session, x) -> Tensor:
    """SecureNN's DReLU = 1 - MSB(ShareConvert(x)): right for every x except
    -1 ulp (2^64 - 1 is 0 mod 2^64 - 1, so it comes out 1). Kept beside the
    exact and cheaper :func:`drelu` for comparison with the paper's protocol."""
    m = compute_msb(sess, share_convert(sess, x))
    return (1 - _j(sess)) - m if sess.has_data else m


def relu(sess: Session, x, bits: int = 64, shift: int = 0) -> Tensor:
    """ReLU(x) = x * DReLU(x); exact at the default ``bits=64``.

    At ``bits=64, shift=0`` the compared value is x itself and the product is
    fused into the DReLU; otherwise x is multiplied by the DReLU bit it gates
    (``select`` of :func:`_drelu`). One protocol call either way.
    """
    shape = _shape(x)
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        return x if isinstance(x, Tensor) else meta(shape)
    groups = channel_groups(shape)
    if bits == 64 and not shift:
        return _drelu(sess, x, 64, 0, fuse=torch.ones(n, dtype=torch.bool),
                      groups=groups)[1].reshape(shape)
    v = x.reshape(-1) if sess.has_data else meta((n,))
    return _drelu(sess, x, bits, shift, select=(v, torch.arange(n)),
                  groups=groups)[2].reshape(shape)


# ------------------------------------------------------------------ Block-ReLU
def block_relu(sess: Session, x, block_sizes, bits: int = 64, shift: int = 0) -> Tensor:
    """Secure Block-ReLU of ``x`` (N, C, H, W) with per-channel patch sizes (C, 2).

    Patch sums are local; one batched DReLU over all N_blk patches of the
    layer decides the gates (sign of the patch sum = sign of the patch mean;
    gate = [sum > 0] = 1 - DReLU(-sum), the plaintext layer's function, also
    at a sum of exactly 0), and gates the M_act active pixels in the same
    call (``select`` of :func:`_drelu`: per pixel an opening of v - A and a
    dealt [A r], per patch only the masked gate bit). Identity (0, 1)
    channels pass through and zero (1, 0) channels become 0, both free.

    With ``bits < 64`` or ``shift > 0``, each patch sum is first shifted right
    by ``shift + floor(log2(valid pixels))`` (so it is about the patch mean
    times [1, 2)) and then handled as in :func:`drelu`: means must fit in
    about ``2^(bits - 1 + shift)`` ulp.
    """
    N, C, H, W = _shape(x)
    sizes = check_block_sizes(block_sizes, C)
    plan = _Plan(sizes, H, W, torch.device('cpu'))
    n_p = plan.n_slots - 2
    index = plan.index
    per_channel = num_drelus(sizes, H, W)
    if (bits < 64 or shift) and n_p:
        active = (sizes[:, 0] > 0) & (sizes[:, 1] > 0)
        pixels = int((np.minimum(sizes[active, 0], H) * np.minimum(sizes[active, 1], W)).max())
        if bits + shift + int(np.floor(np.log2(pixels))) > 64:
            raise ValueError(f'bits + shift + log2(patch pixels) must be <= 64 (each party '
                             f'truncates its own share), got bits={bits}, shift={shift}, '
                             f'{pixels} pixels')
    if N == 0 or n_p == 0:
        if not sess.has_data:
            return x if isinstance(x, Tensor) else meta((N, C, H, W))
        keep = (index != n_p + 1).reshape(1, C, H, W).to(DTYPE)
        return x * keep
    act = torch.nonzero(index < n_p).reshape(-1)
    idx = index[act]
    groups = np.tile(per_channel[per_channel > 0], N)       # bit messages pad per channel
    # At 64 bits the patches of (1, 1) channels fuse the product into the DReLU
    # (as relu does): the compared value is -x and x [x > 0] = x + ReLU(-x).
    single = np.repeat((sizes[:, 0] == 1) & (sizes[:, 1] == 1), per_channel)
    fuse = bits == 64 and not shift and bool(single.any())
    single = torch.from_numpy(single if fuse else np.zeros(n_p, bool))
    pos = torch.cumsum(single.long(), 0) - 1                # a patch's place among the singles
    act_s, act_m = act[single[idx]], act[~single[idx]]
    # each gated pixel's patch, as a flat index into the (N, n_p) DReLUs
    gate_of = (torch.arange(N).unsqueeze(1) * n_p + index[act_m]).reshape(-1)
    fuse_mask = single.expand(N, n_p) if fuse else None
    if sess.has_data:
        flat = x.reshape(N, C * H * W)
        sums = torch.zeros((N, plan.n_slots), dtype=DTYPE).scatter_add_(
            1, index.expand(N, -1), flat)[:, :n_p]
        # [sum > 0] = 1 - [-sum >= 0]: negation is local (each party negates its share),
        # and comes before the pre-shift so that only the truncation's -1 ulp blurs 0
        neg = -sums
        if bits < 64 or shift:
            counts = torch.bincount(idx, minlength=n_p)
            neg = neg >> (torch.floor(torch.log2(counts.to(torch.float64))).to(DTYPE) + shift)
        _, z, g = _drelu(sess, neg, bits, 0, fuse=fuse_mask, groups=groups,
                         select=(flat[:, act_m], gate_of, True) if act_m.numel() else None)
        out = flat.clone()
        if fuse:
            out[:, act_s] = flat[:, act_s] + z.reshape(N, -1)[:, pos[index[act_s]]]
        if act_m.numel():
            out[:, act_m] = g.reshape(N, -1)
        out[:, index == n_p + 1] = 0
        return out.reshape(N, C, H, W)
    _drelu(sess, meta((N, n_p)), bits, 0, fuse=fuse_mask, groups=groups,
           select=(meta((N, act_m.numel())), gate_of, True) if act_m.numel() else None)
    return meta((N, C, H, W))


# ------------------------------------------------------------------ MaxPool
def max_pool2d(sess: Session, x, kernel_size, stride=None, padding=0, bits: int = 64,
               shift: int = 0) -> Tensor:
    """Secure max pooling (any kernel, stride, padding; floor mode).

    Padding replicates the nearest edge pixel, which is always inside the same
    window, so it equals -inf padding. The K = kh*kw window values are
    reduced by a tree of pairwise maxima ``max(a, b) = b + ReLU(a - b)``:
    K - 1 ReLUs per output in ceil(log2 K) batched levels.
    """
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride or kernel_size), \
        _pair(padding)
    N, C, H, W = _shape(x)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out_shape = (N, C, Ho, Wo)
    if sess.has_data:
        rows = torch.arange(-ph, H + ph).clamp(0, H - 1)
        cols = torch.arange(-pw, W + pw).clamp(0, W - 1)
        xp = x[:, :, rows][:, :, :, cols]
        win, _, _ = _im2col(xp, (kh, kw), (sh, sw), (0, 0), (1, 1))
        vals = [win[:, :, i].reshape(out_shape) for i in range(kh * kw)]
    else:
        vals = [meta(out_shape)] * (kh * kw)
    while len(vals) > 1:
        half = len(vals) // 2
        a = torch.stack(vals[0:2 * half:2])
        b = torch.stack(vals[1:2 * half:2])
        m = add(sess, b, relu(sess, a - b, bits, shift))
        vals = list(m.unbind(0)) + vals[2 * half:]
    return vals[0]
