"""Programs the test party processes run (importable by spawned processes).

Each function is called as ``fn(sess, *args)`` in all three parties. The
client gets plaintext inputs, the server weights; results come back to the
test process, which checks them against plaintext references.
"""
import numpy as np
import torch

from block_relu_plugin import mpc
from block_relu_plugin.mpc import protocols as P
from block_relu_plugin.mpc.protocols import meta


def _input(sess, x):
    """The client shares plaintext int64 ``x``; returns shares (meta offline)."""
    return P.share_input(sess, x if sess.role == 'client' and sess.has_data else tuple(x.shape))


def _run(sess, body, *args):
    """Offline then online pass of ``body(sess, *args)``; records meter marks."""
    mark = sess.meter.mark()
    with sess.offline():
        body(sess, *args)
    with sess.online():
        out = body(sess, *args)
    return out, sess.meter.since(mark)


def reveal(sess, y):
    return P.reveal_to_client(sess, y)


def op_program(sess, op_name, x, kwargs):
    """Share int64 x, apply one protocol op, reveal; returns (value, records)."""
    fn = getattr(P, op_name)

    def body(sess, x):
        xs = _input(sess, x)
        with sess.label(op_name):
            y = fn(sess, xs, **kwargs)
        return reveal(sess, y)
    return _run(sess, body, x)


def odd_program(sess, op_name, x):
    """Like :func:`op_program` for the ops on Z_{2^64 - 1} shares: ``share_convert``
    (Z_{2^64} in, odd out) and ``compute_msb`` (odd in, Z_{2^64} out)."""
    from block_relu_plugin.mpc.ring import odd_add, odd_reduce, odd_sub

    def odd_input(sess):
        op = sess.next_op()
        if not sess.has_data:
            return P.meta(x.shape)
        r = odd_reduce(sess.stream('cs', op, 0).ring(tuple(x.shape)))
        return r if sess.role == 'server' else odd_sub(x, r)

    def body(sess, x):
        xs = _input(sess, x) if op_name == 'share_convert' else odd_input(sess)
        with sess.label(op_name):
            y = getattr(P, op_name)(sess, xs)
        if op_name != 'share_convert':
            return reveal(sess, y)
        # open Z_{2^64 - 1} shares: the server sends its share
        srv = reveal(sess, torch.zeros_like(y) if sess.role == 'client' else y)
        return odd_add(y, srv) if srv is not None else None
    return _run(sess, body, x)


def mult_program(sess, x, y):
    def body(sess, x, y):
        a, b = _input(sess, x), _input(sess, y)
        with sess.label('mult'):
            z = P.mult(sess, a, b)
        return reveal(sess, z)
    return _run(sess, body, x, y)


_CONV_CALLS = 0


def conv_program(sess, x, w, bias, kwargs, runs=1, key=None):
    """conv2d (or linear when w is 2-D) ``runs`` times on the same weight."""
    outs = []
    global _CONV_CALLS
    _CONV_CALLS += 1
    key = key or f'conv_program{_CONV_CALLS}'  # same sequence in all three processes
    for _ in range(runs):
        def body(sess, x):
            xs = _input(sess, x)
            wt = w if sess.role == 'server' else tuple(w.shape)
            b = bias if sess.role == 'server' else None
            with sess.label('conv'):
                if w.dim() == 2:
                    y = P.linear(sess, xs, wt, b, key=key, **kwargs)
                else:
                    y = P.conv2d(sess, xs, wt, b, key=key, **kwargs)
            return reveal(sess, y)
        outs.append(_run(sess, body, x))
    return outs


def transcript_program(sess, x):
    """Run a conv, ReLU, SecureNN DReLU and Block-ReLU; return every received payload
    (for security tests): ``(peer, phase, raw bytes, dtype)``, and for each packed
    message also what it decodes to: Z_67 digits (``'z67'``), bits (``'bits'``, one
    byte 0/1 each; words of fewer than 64 bits as their bits) or int64 words."""
    received = []
    orig = {}
    for peer, conn in sess.conns.items():
        orig[peer] = conn.recv

        def rec(phase, timeout=None, _c=conn, _f=conn.recv):
            t = _f(phase, timeout)
            received.append((_c.peer, phase, t.numpy().tobytes(), str(t.numpy().dtype)))
            return t
        conn.recv = rec
    decoders = {name: getattr(P, name) for name in ('_recv_zp', '_recv_bits', '_recv_words')}

    def recorder(name, kind):
        def rec(s, peer, *args):
            d = decoders[name](s, peer, *args)
            if kind == 'words' and args[1] < 64:   # (n, bits): the words' own bits
                kind_, raw = 'bits', np.unpackbits(
                    (d.numpy().view(np.uint64) >> np.uint64(64 - args[1]))[:, None]
                    .view(np.uint8), axis=1, bitorder='little')[:, :args[1]].tobytes()
            elif kind == 'words':
                kind_, raw = 'int64', d.numpy().tobytes()
            else:
                kind_, raw = kind, d.numpy().tobytes()
            received.append((peer, s.phase, raw, kind_))
            return d
        return rec
    for name, kind in (('_recv_zp', 'z67'), ('_recv_bits', 'bits'), ('_recv_words', 'words')):
        setattr(P, name, recorder(name, kind))
    try:
        w = torch.randint(-2**12, 2**12, (4, x.shape[1], 3, 3))

        def body(sess, x):
            xs = _input(sess, x)
            y = P.conv2d(sess, xs, w if sess.role == 'server' else tuple(w.shape), None,
                         padding=1, key='t')
            y = P.relu(sess, y)
            P.drelu_securenn(sess, y)  # ShareConvert sends the helper ring elements
            y = P.block_relu(sess, y, [[2, 2]] * 4, bits=16, shift=4)
            return reveal(sess, y)
        _run(sess, body, x)
    finally:
        for name, f in decoders.items():
            setattr(P, name, f)
        for peer, conn in sess.conns.items():
            conn.recv = orig[peer]
    return received


def fingerprints(sess):
    from block_relu_plugin.mpc.session import key_fingerprints
    return key_fingerprints(sess)


def ping_forever(sess):
    """Exchange small messages until a peer fails (for the kill test)."""
    import time
    peers = list(sess.conns)
    while True:
        for p in peers:
            sess.send(p, torch.zeros(1, dtype=torch.int64))
        for p in peers:
            sess.recv(p)
        time.sleep(0.01)


def pid(sess):
    import os
    return os.getpid()
