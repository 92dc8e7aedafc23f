"""A party's session: role, TLS connections, per-session keys, passes and offline material.

A :class:`Session` is what every protocol function receives. It knows the
party's role, holds the two connections, the pairwise PRFs (keys agreed over
TLS at start-up: the first party of each pair in ``ROLES`` order draws 32
bytes from ``os.urandom`` and sends them to the other) and the party's own
PRF, and the byte meter.

Passes. An inference is run as two passes over the same program:
``with sess.offline(): program(...)`` (shapes only; the helper produces and
sends all data-independent material; the server sends each masked weight the
first time it is used in the session; received material is stored) and then
``with sess.online(): program(...)`` (the real data; protocol steps consume
the stored material). Every protocol call takes the next op number of the
pass, so a call's PRF streams ``(run, op, tag)`` are the same in both passes
and at every party. The i-th online pass uses the material of the i-th
offline pass, so the helper may run several offline passes ahead.
"""
from contextlib import contextmanager
from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor

from . import prf as _prf
from .ring import FRAC_BITS
from .transport import Connection, Meter, PeerError

ROLES = ('client', 'server', 'helper')
PAIRS = {frozenset(('client', 'server')): 'cs', frozenset(('client', 'helper')): 'ch',
         frozenset(('server', 'helper')): 'sh'}


class Session:
    """One party's state for a secure-inference session.

    Args:
        role: 'client', 'server' or 'helper'.
        conns: ``{peer role: Connection}`` for the two other parties.
        meter: The :class:`~.transport.Meter` the connections record into.
        frac_bits: Fixed-point fractional bits.
    """

    def __init__(self, role: str, conns: Dict[str, Connection], meter: Meter,
                 frac_bits: int = FRAC_BITS):
        if role not in ROLES:
            raise ValueError(f'unknown role {role!r}')
        self.role = role
        self.conns = conns
        self.meter = meter
        self.frac_bits = frac_bits
        self.phase = 'session'
        self._runs = {'offline': 0, 'online': 0}
        self.run = 0
        self._op = 0
        self._material: Dict[tuple, Tensor] = {}
        self.cache: Dict[str, Tensor] = {}  # per-session material (masked weights)
        self._slots: Dict[str, int] = {}
        self.own = _prf.PRF(_prf.new_key())
        self.prfs: Dict[str, _prf.PRF] = {}
        self._agree_keys()
        self.phase = 'online'

    # ---------------------------------------------------------------- keys
    def _agree_keys(self):
        me = ROLES.index(self.role)
        for peer in ROLES:
            if peer == self.role:
                continue
            name = PAIRS[frozenset((self.role, peer))]
            if me < ROLES.index(peer):
                key = _prf.new_key()
                self.send(peer, torch.from_numpy(np.frombuffer(key, dtype=np.uint8).copy()))
            else:
                key = self.recv(peer).numpy().tobytes()
            self.prfs[name] = _prf.PRF(key)

    # -------------------------------------------------------------- passes
    @contextmanager
    def _pass(self, phase: str):
        old = self.phase
        self.phase, self.run, self._op = phase, self._runs[phase], 0
        try:
            yield self
        finally:
            self._runs[phase] += 1
            self.phase, self._op = old, 0

    def offline(self):
        """Context: the offline pass of the next run (call the program with shapes)."""
        return self._pass('offline')

    def online(self):
        """Context: the online pass of the next run (call the program with data)."""
        return self._pass('online')

    @property
    def is_offline(self) -> bool:
        return self.phase == 'offline'

    @property
    def has_data(self) -> bool:
        """True where this party holds real shares: the client in both passes
        (its shares are known before the input exists), the server online."""
        return self.role == 'client' or (self.role == 'server' and self.phase == 'online')

    def label(self, label: str):
        """Context manager: attribute the messages inside to a layer label."""
        return self.meter.labelled(label)

    # ----------------------------------------------------------- protocol steps
    def next_op(self) -> int:
        op = self._op
        self._op += 1
        return op

    def stream(self, pair: str, op: int, tag: int) -> _prf.Stream:
        """A PRF stream shared with a peer ('cs', 'ch', 'sh') or own ('own')."""
        prf = self.own if pair == 'own' else self.prfs[pair]
        return prf.stream(self.run, op, tag)

    def session_stream(self, pair: str, slot: int, tag: int) -> _prf.Stream:
        return self.prfs[pair].session_stream(slot, tag)

    def slot(self, key: str) -> int:
        """A stable integer for a per-session object (assigned in first-use order)."""
        if key not in self._slots:
            self._slots[key] = len(self._slots)
        return self._slots[key]

    def put(self, op: int, name: str, value: Tensor) -> None:
        """Store offline material for ``op`` of the current run."""
        self._material[(self.run, op, name)] = value

    def take(self, op: int, name: str) -> Tensor:
        """Pop the offline material stored for ``op`` of the current run."""
        try:
            return self._material.pop((self.run, op, name))
        except KeyError:
            raise RuntimeError(f'{self.role}: no offline material {name!r} for op {op} of run '
                               f'{self.run}: run the offline pass first') from None

    # -------------------------------------------------------------- messages
    def send(self, peer: str, t: Tensor, phase: Optional[str] = None) -> None:
        self.conns[peer].send(t, phase or self.phase)

    def recv(self, peer: str, phase: Optional[str] = None) -> Tensor:
        return self.conns[peer].recv(phase or self.phase)

    def recv_ring(self, peer: str, shape, phase: Optional[str] = None) -> Tensor:
        """Receive ring elements of ``shape``: anything but int64 of that many
        elements raises, naming the peer (a malformed message never becomes shares)."""
        t = self.recv(peer, phase)
        shape = tuple(int(v) for v in shape)
        n = int(np.prod(shape, dtype=np.int64))
        if t.dtype != torch.int64 or t.numel() != n:
            raise ValueError(f'{self.role}: expected {n} ring elements (int64) from {peer}, got '
                             f'{t.dtype} of shape {tuple(t.shape)}')
        return t.reshape(shape)

    # --------------------------------------------------------------- closing
    def abort(self, message: str) -> None:
        """Tell both peers this party failed, then close."""
        for c in self.conns.values():
            c.abort(f'{self.role}: {message}')

    def close(self) -> None:
        for c in self.conns.values():
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, PeerError):
            self.abort(f'{type(exc).__name__}: {exc}')
        else:
            self.close()
        return False


def key_fingerprints(sess: Session) -> Dict[str, str]:
    """Short fingerprints of the session keys (for tests: keys differ per session)."""
    import hashlib
    out = {k: hashlib.sha256(p.key).hexdigest()[:16] for k, p in sess.prfs.items()}
    out['own'] = hashlib.sha256(sess.own.key).hexdigest()[:16]
    return out
