"""What one party receives, under keys the test controls.

The three parties run the real protocol code in three threads of this process,
connected by real framed connections (:class:`~block_relu_plugin.mpc.transport.Connection`
over ``socket.socketpair``; TLS adds nothing to a party's own view). After the
normal key agreement the test installs its own keys, so a view test can fix the
adversary's keys (its own PRF and its two pairwise keys) and draw the other
parties' keys fresh for every trial: if a protocol is simulatable from what
the adversary may know, its whole received view (and everything it computes
from it, such as its output shares) is then independent of the input.

A view is the list of ``(peer, phase, array)`` the party received after the
keys were installed, plus the party's return value.
"""
import os
import socket
import threading
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from block_relu_plugin.mpc import prf as _prf
from block_relu_plugin.mpc.session import PAIRS, ROLES, Session
from block_relu_plugin.mpc.transport import Connection, Meter

# The keys each party holds: its own PRF and the pairwise keys of its two links.
KEYS_OF = {r: ('own_' + r,) + tuple(PAIRS[frozenset((r, p))] for p in ROLES if p != r)
           for r in ROLES}


def fresh_keys() -> Dict[str, bytes]:
    names = {'cs', 'ch', 'sh'} | {'own_' + r for r in ROLES}
    return {k: os.urandom(_prf.KEY_BYTES) for k in names}


def keys_fixed_for(role: str, fixed: Dict[str, bytes]) -> Dict[str, bytes]:
    """Fresh keys for everything ``role`` does not hold; ``fixed`` for what it does."""
    keys = fresh_keys()
    keys.update({k: fixed[k] for k in KEYS_OF[role]})
    return keys


class _Recorder:
    """Wraps a connection's ``recv`` to keep a copy of every received array.

    Packed messages cross as bytes; the protocols' own decoders hand what they
    decoded back to the recorder, which puts it in the view in place of the
    bytes: Z_67 digits (uint8, (elements, columns)), bits (bool, (elements, bits)) and
    words of fewer than 64 bits (bool, (elements, bits): their bits), so every
    view array is ring elements (int64), Z_67 digits (uint8) or bits (bool)."""

    by_session: Dict[Tuple[int, str], '_Recorder'] = {}

    def __init__(self, conn: Connection, view: list, sess_id: int):
        self.conn, self.view, self._recv = conn, view, conn.recv
        self.last = None
        conn.recv = self.recv
        _Recorder.by_session[(sess_id, conn.peer)] = self

    def recv(self, phase, timeout=None):
        t = self._recv(phase, timeout)
        self.last = None
        if self.active:
            self.last = len(self.view)
            self.view.append((self.conn.peer, phase, t.numpy().copy()))
        return t

    def decoded(self, arr: np.ndarray) -> None:
        if self.last is not None:
            peer, phase, raw = self.view[self.last]
            assert raw.dtype == np.uint8, 'a packed message must cross as bytes'
            self.view[self.last] = (peer, phase, arr)
            self.last = None

    active = False


def _hook(P, name: str, convert) -> None:
    inner = getattr(P, name)
    if getattr(inner, 'feeds_views', False):
        return

    def receive(sess, peer, *args):
        out = inner(sess, peer, *args)
        rec = _Recorder.by_session.get((id(sess), peer))
        if rec is not None:
            rec.decoded(convert(out, *args))
        return out
    receive.feeds_views = True
    setattr(P, name, receive)


def _word_view(values: torch.Tensor, n, bits, what) -> np.ndarray:
    v = values.numpy().copy()
    if bits == 64:
        return v
    top = (v.view(np.uint64) >> np.uint64(64 - bits))[:, None] >> np.arange(bits, dtype=np.uint64)
    return (top & np.uint64(1)).astype(bool)


def _decode_into_views() -> None:
    """Wrap the protocols' packed-message receivers once per process (see :class:`_Recorder`)."""
    from block_relu_plugin.mpc import protocols as P
    _hook(P, '_recv_zp', lambda out, *a: out.numpy().copy())
    _hook(P, '_recv_bits', lambda out, *a: out.numpy().astype(bool))
    _hook(P, '_recv_words', _word_view)


def _threads(fns: Dict[str, Callable[[], object]], timeout: float = 120.0) -> Dict[str, object]:
    out, errs = {}, {}

    def run(role):
        try:
            out[role] = fns[role]()
        except BaseException as e:  # noqa: BLE001 - reported below
            errs[role] = e
    ts = [threading.Thread(target=run, args=(r,), daemon=True) for r in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError('a party thread hangs')
    if errs:
        role, e = next(iter(errs.items()))
        raise RuntimeError(f'{role}: {type(e).__name__}: {e}') from e
    return out


class Trio:
    """Three sessions in this process; ``run`` one program under given keys."""

    def __init__(self, frac_bits: int = 12):
        conns: Dict[str, Dict[str, Connection]] = {r: {} for r in ROLES}
        self.meters = {r: Meter() for r in ROLES}
        for i, a in enumerate(ROLES):
            for b in ROLES[i + 1:]:
                sa, sb = socket.socketpair()
                conns[a][b] = Connection(sa, a, b, self.meters[a], timeout=60)
                conns[b][a] = Connection(sb, b, a, self.meters[b], timeout=60)
        self.views: Dict[str, list] = {r: [] for r in ROLES}
        self.sessions = _threads({r: (lambda r=r: Session(r, conns[r], self.meters[r],
                                                          frac_bits)) for r in ROLES})
        _decode_into_views()
        self.recorders = [_Recorder(c, self.views[r], id(self.sessions[r]))
                          for r in ROLES for c in conns[r].values()]

    def install(self, keys: Dict[str, bytes]) -> None:
        """Install ``keys`` and start the sessions afresh (run counters, stored
        material, per-session weights), so that a party whose keys are the same
        in two trials draws exactly the same PRF values in both."""
        for r, s in self.sessions.items():
            s._runs = {'offline': 0, 'online': 0}
            s._material.clear()
            s.cache.clear()
            s._slots.clear()
            s.own = _prf.PRF(keys['own_' + r])
            for name in KEYS_OF[r][1:]:
                s.prfs[name] = _prf.PRF(keys[name])

    def run(self, program: Callable, keys: Dict[str, bytes], args: Dict[str, tuple]
            ) -> Dict[str, Tuple[list, object]]:
        """``program(sess, *args[role])`` in all three under ``keys``; returns
        ``{role: (received view, return value)}``."""
        self.install(keys)
        for v in self.views.values():
            v.clear()
        for rec in self.recorders:
            rec.active = True
        try:
            res = _threads({r: (lambda r=r: program(self.sessions[r], *args.get(r, ())))
                            for r in ROLES})
        finally:
            for rec in self.recorders:
                rec.active = False
        return {r: (list(self.views[r]), res[r]) for r in ROLES}

    def close(self):
        for s in self.sessions.values():
            s.close()


# ------------------------------------------------------------------ programs
def passes(sess, body, *args):
    """Offline then online pass of ``body``; the online result is returned."""
    with sess.offline():
        body(sess, *args)
    with sess.online():
        return body(sess, *args)


def share(sess, x: torch.Tensor):
    from block_relu_plugin.mpc import protocols as P
    return P.share_input(sess, x if sess.role == 'client' and sess.has_data else tuple(x.shape))


def output_share(sess, y) -> Optional[np.ndarray]:
    """A party's share as a numpy copy (None where it holds none)."""
    if sess.role == 'helper' or not sess.has_data or y is None:
        return None
    return y.detach().numpy().copy()


# ------------------------------------------------------------------ statistics
def ring_arrays(view, peer: Optional[str] = None) -> List[np.ndarray]:
    return [a for p, _, a in view if a.dtype == np.int64 and (peer is None or p == peer)]


def zp_arrays(view, peer: Optional[str] = None) -> List[np.ndarray]:
    return [a for p, _, a in view if a.dtype == np.uint8 and (peer is None or p == peer)]


def bit_arrays(view, peer: Optional[str] = None) -> List[np.ndarray]:
    return [a for p, _, a in view if a.dtype == np.bool_ and (peer is None or p == peer)]


def byte_chi2(values: np.ndarray) -> float:
    """Chi-square of the byte histogram of int64 values against uniform (255 dof)."""
    data = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
    counts = np.bincount(data, minlength=256)
    exp = data.size / 256
    return float(((counts - exp) ** 2 / exp).sum())


def top_byte(values: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(values).astype(np.int64).view(np.uint64) >> np.uint64(56)
            ).astype(np.int64)


def chi2_two_sample(a: np.ndarray, b: np.ndarray, bins: int) -> Tuple[float, int]:
    """Two-sample chi-square of two integer samples in [0, bins); returns (stat, dof)."""
    ca, cb = np.bincount(a, minlength=bins), np.bincount(b, minlength=bins)
    na, nb = ca.sum(), cb.sum()
    keep = (ca + cb) > 0
    ca, cb = ca[keep].astype(float), cb[keep].astype(float)
    ka, kb = np.sqrt(nb / na), np.sqrt(na / nb)
    stat = float((((ka * ca - kb * cb) ** 2) / (ca + cb)).sum())
    return stat, int(keep.sum()) - 1


def chi2_limit(dof: int, sds: float = 5.0) -> float:
    """A generous upper limit for a chi-square statistic with ``dof`` degrees of freedom."""
    return dof + sds * np.sqrt(2 * dof) + 10


def pc_pairs(view) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The helper's PrivateCompare inputs, paired: (client's vectors, server's vectors)."""
    c, s = zp_arrays(view, 'client'), zp_arrays(view, 'server')
    assert len(c) == len(s)
    return list(zip(c, s))


INV67 = np.array([0] + [pow(v, -1, 67) for v in range(1, 67)], dtype=np.int64)
