"""3-party secure inference (client, server, helper) for Block-ReLU networks.

Parties: the **client** owns the input and learns only what is revealed to
it; the **server** owns the weights in the clear; the **helper** holds no
data shares and supplies correlated randomness and the comparisons.
Semi-honest, one corruption, no collusion. Values are additive shares over
Z_{2^64} (torch int64 with wrap-around) between client (share 0) and server
(share 1), fixed point with ``frac_bits`` = 12 by default.

What every party receives in every protocol, and why it learns nothing from
it, is in ``SECURITY.md`` beside this file; the code follows that text.

Modules: :mod:`.ring` (arithmetic, exact fast ``ring_conv2d``/``ring_linear``),
:mod:`.prf` (AES-CTR streams), :mod:`.transport` (mutual TLS 1.3, framing,
the byte meter), :mod:`.certs` (CA + party certificates), :mod:`.session`
(keys, passes, offline material), :mod:`.protocols` (the protocols),
:mod:`.cost` (per-op byte/round formulas, ``ours`` and ``reference``),
:mod:`.launch` (config-driven and local start-up); on top of them
:mod:`.compiler` (``compile_model``: a converted mmpretrain / mmseg model to a
secure program, BN folded, unsupported layers refused by name),
:mod:`.costmodel` (``predict_costs``: the program's bytes under ``ours``, equal
to the meter, or ``reference``, the authors' accounting) and :mod:`.infer`
(``secure_inference``: the three parties on this machine, with agreement,
bytes and time).

Session and passes
------------------
``open_session(role, config) -> Session`` (``config``: JSON path or dict with
``cert_dir``, ``client``/``server``/``helper`` ``{host, port}``, ``timeout``,
``connect_timeout``, ``handshake_timeout``, ``max_frame_bytes``,
``max_queued_bytes``, ``frac_bits``); ``LocalCluster()`` / ``run_local(fn, args)`` start all three
on 127.0.0.1 (``cluster.run(fn, {role: args})`` calls ``fn(sess, *args)`` in
each party process, ``fn`` must be importable). ``Session`` attributes:
``role``, ``frac_bits``, ``meter`` (every message: peer, direction, payload
bytes, phase, label), ``label(name)`` (context manager naming the layer for
the meter), ``offline()`` / ``online()`` (pass context managers).

Every inference runs the same program twice, in the same call order at all
three parties::

    with sess.offline():             # before the input exists; shapes only
        program(sess, shape_inputs)  # helper sends data-independent material,
                                     # server sends masked weights (first run),
                                     # client sends its masked shares
    with sess.online():
        out = program(sess, inputs)  # consumes the stored material

(``run_passes(sess, program, online_input)`` does both.) The client's share
of every tensor a protocol takes is known before the input exists (the
input is shared as ``(R, x - R)``, products re-randomise the client's share),
so the client holds real int64 shares in both passes and sends everything
that depends on them alone offline. The server holds shares online; the
helper, and the server offline, pass shape-only tensors (``meta(shape)``: a
zero-stride int64 CPU tensor; any tensor of the right shape works) and get
shape-only tensors back (values meaningless; ``sess.has_data`` says whether
a party holds real shares). A leading batch dimension N is supported
everywhere.

Protocol functions (all take ``sess`` first; ``x`` is a share or meta tensor)
--------------------------------------------------------------------------
- ``share_input(sess, image_or_shape) -> x``: client passes the float image
  (or int64 fixed point) online, others the shape. The client sends ``x - R``.
- ``reveal_to_client(sess, x) -> int64 tensor at the client, else None``;
  decode with ``ring.decode(v, sess.frac_bits)``.
- ``conv2d(sess, x, weight, bias=None, stride=1, padding=0, dilation=1,
  groups=1, shift=None, key=None) -> y``: ``weight`` is the int64
  fixed-point weight (Cout, Cin/g, kh, kw) at the server and its shape
  elsewhere; ``bias`` int64 at output scale (server; None elsewhere), added
  after truncation by ``shift`` bits (default ``frac_bits``; 0 = none).
  ``key`` names the weight for the per-session cache (default: call
  position). BN folding is the caller's job.
- ``linear(sess, x, weight, bias=None, shift=None, key=None)``: x (N, in),
  weight (out, in); as conv2d.
- ``mult(sess, x, y)``: element-wise Beaver product (no truncation).
- ``drelu(sess, x, bits=64, shift=0) -> shares of [x >= 0]`` (int64 0/1).
  Exact for every int64 at bits=64. ``bits < 64``: compares the pre-shifted
  ``(x >> shift) << (64 - bits)``; right while |x| < 2^(bits-1+shift) ulp.
- ``relu(sess, x, bits=64, shift=0)``: x * drelu(x). Default exact.
- ``share_convert(sess, x)``, ``compute_msb(sess, x)``,
  ``drelu_securenn(sess, x)``: SecureNN's ShareConvert (to Z_{2^64 - 1},
  exact), MSB over Z_{2^64 - 1} (exact) and their DReLU composition (wrong
  at -1 ulp only; kept for comparison: ``drelu`` is exact and cheaper).
- ``block_relu(sess, x, block_sizes (C, 2), bits=64, shift=0)``: Block-ReLU
  as ``layers.BlockReLU`` (gate = patch sum > 0; (0,1) identity, (1,0)
  zero, (1,1) ReLU). With bits < 64 or shift > 0 each patch sum is shifted
  right by ``shift + floor(log2(valid pixels))`` before the DReLU.
- ``max_pool2d(sess, x, kernel_size, stride=None, padding=0, bits=64, shift=0)``.
- Local (free): ``avg_pool2d(sess, x, kernel_size, stride=None, padding=0,
  count_include_pad=True)`` (±1 ulp, see its doc), ``global_avg_pool(sess, x)
  -> (N, C, 1, 1)``, ``truncate(sess, x, bits=None)``, ``add(sess, x, y)``,
  ``concat(sess, xs, dim=1)``, ``add_public(sess, x, c)``; plain torch ops
  (``+``, ``torch.cat``, reshape, indexing) are fine on shares and meta tensors.
- Fixed point: ``ring.encode(x, f)``, ``ring.decode(x, f)``.

Costs
-----
``cost.ours.<op>(...)`` / ``cost.reference.<op>(...)`` return a ``Cost``
(bytes per (phase, src, dst), ``.online``, ``.offline``, ``.session``,
``.rounds``); ops: ``handshake()``, ``conv2d(|X|, |W|, |Y|, first_use)``,
``linear``, ``mult(n)``, ``drelu(n, bits, group)``, ``relu(n, bits, group)``,
``block_relu(block_sizes, N, H, W, bits)``, ``max_pool2d(out_numel, K, bits, group)``
(``group``: elements per channel map, whose bit messages pad to whole bytes),
``reveal_to_client(n)``; ours also ``compare``, ``share_convert``, ``compute_msb``;
reference also ``private_compare``, ``share_convert``, ``msb``. ``ours`` equals the
meter exactly.
"""
from . import cost, ring
from .launch import LocalCluster, load_config, open_session, run_local, run_passes
from .protocols import (add, add_public, avg_pool2d, block_relu, compute_msb, concat, conv2d,
                        drelu, drelu_securenn, global_avg_pool, linear, max_pool2d, meta, mult,
                        relu, reveal_to_client, share_convert, share_input, truncate)
from .ring import decode, encode, ring_conv2d, ring_linear
from .session import Session
from .transport import Meter, PeerError

__all__ = [
    'cost', 'ring', 'LocalCluster', 'load_config', 'open_session', 'run_local', 'run_passes',
    'Session', 'Meter', 'PeerError', 'share_input', 'reveal_to_client', 'conv2d', 'linear',
    'mult', 'drelu', 'relu', 'share_convert', 'compute_msb', 'drelu_securenn', 'block_relu',
    'max_pool2d', 'avg_pool2d', 'global_avg_pool',
    'truncate', 'add', 'add_public', 'concat', 'meta', 'encode', 'decode', 'ring_conv2d',
    'ring_linear'
]
