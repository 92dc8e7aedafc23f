"""Transport: mutual-TLS connections between the parties, framing and the byte meter.

One bidirectional TLS 1.3 connection per pair of parties. Each connection has
one I/O thread that is the only user of its SSL object (non-blocking socket +
``select``): it writes queued frames and reads incoming frames into a queue at
the same time, so two parties sending big messages to each other cannot
deadlock and a send never blocks the caller. A dead peer shows up as EOF or a
socket error and every pending or later ``recv`` raises :class:`PeerError`
naming the peer; a ``recv`` that waits longer than the timeout raises too.

Frame: a 16-byte header ``magic 'BR' | kind u8 | phase u8 | dtype u8 | ndim u8 |
reserved u16 | payload bytes u64`` (little endian), ``ndim`` int64 dims, then
the raw array bytes. Nothing is pickled.

Accounting lives here and only here: :class:`Meter` records every data frame
(peer, direction, payload bytes, phase, layer label) when it is sent and when
the protocol consumes it. Payload bytes exclude the frame header and TLS, as
in the authors' accounting; ``header_bytes`` keeps the framing overhead.
"""
import collections
import queue
import select
import socket
import ssl
import struct
import threading
import time
from contextlib import contextmanager
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .certs import cert_paths

MAGIC = b'BR'
_HDR = struct.Struct('<2sBBBBHQ')
KIND_DATA, KIND_ABORT = 0, 1
PHASES = ('session', 'offline', 'online')
_DTYPES = {1: np.int64, 2: np.uint8, 3: np.int8, 4: np.float64, 5: np.float32,
           6: np.int32}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_CHUNK = 1 << 20
MAX_NDIM = 16


class PeerError(ConnectionError):
    """A peer died, closed its connection, aborted, or stayed silent too long."""


class Record(NamedTuple):
    peer: str
    direction: str  # 'send' or 'recv'
    nbytes: int
    phase: str
    label: str


class Meter:
    """Every message a party sends or receives, with its phase and layer label."""

    def __init__(self):
        self.records: List[Record] = []
        self.header_bytes = 0
        self.label = ''

    @contextmanager
    def labelled(self, label: str):
        old, self.label = self.label, label
        try:
            yield
        finally:
            self.label = old

    def add(self, peer: str, direction: str, nbytes: int, phase: str, header: int = 0):
        self.records.append(Record(peer, direction, int(nbytes), phase, self.label))
        self.header_bytes += header

    def mark(self) -> int:
        """A position; ``since(mark)`` returns the records after it."""
        return len(self.records)

    def since(self, mark: int = 0) -> List[Record]:
        return self.records[mark:]

    def totals(self, mark: int = 0, direction: str = 'send') -> Dict[Tuple[str, str], int]:
        """Bytes per ``(phase, peer)`` in one direction since ``mark``."""
        out: Dict[Tuple[str, str], int] = collections.defaultdict(int)
        for r in self.records[mark:]:
            if r.direction == direction:
                out[(r.phase, r.peer)] += r.nbytes
        return dict(out)

    def bytes(self, phase: Optional[str] = None, direction: str = 'send', mark: int = 0,
              label: Optional[str] = None) -> int:
        return sum(r.nbytes for r in self.records[mark:]
                   if r.direction == direction and (phase is None or r.phase == phase)
                   and (label is None or r.label == label))

    def messages(self, phase: Optional[str] = None, direction: str = 'send', mark: int = 0) -> int:
        return sum(1 for r in self.records[mark:]
                   if r.direction == direction and (phase is None or r.phase == phase))


def _encode_header(kind: int, phase: str, arr: np.ndarray) -> bytes:
    if arr.ndim > MAX_NDIM:
        raise ValueError(f'at most {MAX_NDIM} dims per message')
    code = _CODES.get(arr.dtype)
    if code is None:
        raise TypeError(f'cannot send dtype {arr.dtype}')
    return (_HDR.pack(MAGIC, kind, PHASES.index(phase), code, arr.ndim, 0, arr.nbytes)
            + np.asarray(arr.shape, dtype='<i8').tobytes())


class Connection:
    """One authenticated TLS connection to a peer with its own I/O thread."""

    def __init__(self, sock: ssl.SSLSocket, me: str, peer: str, meter: Meter,
                 timeout: float = 120.0):
        self.me, self.peer, self.meter, self.timeout = me, peer, meter, timeout
        self._sock = sock
        sock.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._out: collections.deque = collections.deque()
        self._out_lock = threading.Lock()
        self._in: queue.Queue = queue.Queue()
        self._closing = False
        self._error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name=f'{me}<->{peer}', daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public
    def send(self, t, phase: str, kind: int = KIND_DATA) -> None:
        """Queue an array (tensor or ndarray) for sending; returns at once.

        The array must not be modified afterwards (it is sent without a copy).
        """
        if self._error is not None:
            raise PeerError(self._error)
        arr = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        header = _encode_header(kind, phase, arr)
        if kind == KIND_DATA:
            self.meter.add(self.peer, 'send', arr.nbytes, phase, len(header))
        payload = memoryview(arr.reshape(-1).view(np.uint8)) if arr.nbytes else None
        with self._out_lock:
            self._out.append(memoryview(header))
            if payload is not None:
                for i in range(0, len(payload), _CHUNK):
                    self._out.append(payload[i:i + _CHUNK])
        self._wake()

    def recv(self, phase: str, timeout: Optional[float] = None) -> Tensor:
        """The next array from the peer (blocks); checks that the phases agree."""
        timeout = self.timeout if timeout is None else timeout
        try:
            item = self._in.get(timeout=timeout)
        except queue.Empty:
            raise PeerError(f'{self.me}: no message from {self.peer} within {timeout:.0f} s') \
                from None
        if isinstance(item, PeerError):
            self._in.put(item)  # every later recv fails the same way
            raise item
        got_phase, arr, hdr = item
        if got_phase != phase:
            raise PeerError(f'{self.me}: protocol out of step with {self.peer}: expected a '
                            f'{phase} message, got a {got_phase} one')
        self.meter.add(self.peer, 'recv', arr.nbytes, got_phase, hdr)
        return torch.from_numpy(arr)

    def abort(self, message: str) -> None:
        """Tell the peer this party failed (best effort), then close."""
        try:
            data = np.frombuffer(message.encode('utf-8', 'replace')[:4000], dtype=np.uint8)
            self.send(data, 'online', kind=KIND_ABORT)
        except Exception:  # noqa: BLE001 - best effort
            pass
        self.close()

    def close(self, wait: float = 10.0) -> None:
        """Flush queued frames (up to ``wait`` seconds) and close the socket."""
        self._closing = True
        self._wake()
        self._thread.join(wait)
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass

    # ------------------------------------------------------------ I/O thread
    def _wake(self):
        try:
            self._wake_w.send(b'\0')
        except OSError:
            pass

    def _fail(self, msg: str):
        if self._error is None:
            self._error = msg
            self._in.put(PeerError(msg))

    def _run(self):
        sock = self._sock
        hdr = bytearray(_HDR.size)
        state = ['hdr', memoryview(hdr), 0, None]  # what, target, filled, info
        try:
            while True:
                with self._out_lock:
                    pending_out = bool(self._out)
                if self._closing and not pending_out:
                    break
                r, w, _ = select.select([sock, self._wake_r], [sock] if pending_out else [],
                                        [], 0.5)
                if self._wake_r in r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                if sock in r:
                    if not self._read_available(state):
                        return
                if sock in w:
                    self._write_available()
        except Exception as e:  # noqa: BLE001 - any socket/TLS failure ends the link
            self._fail(f'{self.me}: connection to {self.peer} failed: '
                       f'{type(e).__name__}: {e}')
        finally:
            if self._error is None:
                self._error = f'{self.me}: connection to {self.peer} is closed'
                self._in.put(PeerError(self._error))
            try:
                sock.close()
            except OSError:
                pass

    def _write_available(self):
        while True:
            with self._out_lock:
                if not self._out:
                    return
                chunk = self._out[0]
            try:
                n = self._sock.send(chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                return
            with self._out_lock:
                if n >= len(chunk):
                    self._out.popleft()
                else:
                    self._out[0] = chunk[n:]

    def _read_available(self, state) -> bool:
        """Read everything available; False once the peer has closed."""
        while True:
            what, target, filled, info = state
            try:
                n = self._sock.recv_into(target[filled:], len(target) - filled)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return True
            if n == 0:
                self._fail(f'{self.me}: {self.peer} closed the connection (peer process '
                           'ended or dropped the link)')
                return False
            filled += n
            state[2] = filled
            if filled < len(target):
                continue
            self._frame_part_done(state)

    def _frame_part_done(self, state):
        what, target, _, info = state
        if what == 'hdr':
            magic, kind, phase, code, ndim, _, nbytes = _HDR.unpack(bytes(target))
            if magic != MAGIC or code not in _DTYPES or ndim > MAX_NDIM or phase >= len(PHASES):
                raise ValueError(f'bad frame header from {self.peer}')
            info = (kind, PHASES[phase], _DTYPES[code], nbytes)
            if ndim:
                state[:] = ['shape', memoryview(bytearray(8 * ndim)), 0, info]
                return
            self._start_payload(state, info, ())
        elif what == 'shape':
            shape = tuple(int(v) for v in np.frombuffer(bytes(target), dtype='<i8'))
            self._start_payload(state, info, shape)
        else:
            kind, phase, dtype, nbytes, shape = info
            self._deliver(kind, phase, np.frombuffer(target.obj, dtype=dtype).reshape(shape),
                          nbytes, len(shape))
            state[:] = ['hdr', memoryview(bytearray(_HDR.size)), 0, None]

    def _start_payload(self, state, info, shape):
        kind, phase, dtype, nbytes = info
        if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != nbytes:
            raise ValueError(f'frame size mismatch from {self.peer}')
        if nbytes == 0:
            self._deliver(kind, phase, np.empty(shape, dtype=dtype), 0, len(shape))
            state[:] = ['hdr', memoryview(bytearray(_HDR.size)), 0, None]
            return
        state[:] = ['payload', memoryview(bytearray(nbytes)), 0,
                    (kind, phase, dtype, nbytes, shape)]

    def _deliver(self, kind, phase, arr, nbytes, ndim):
        if kind == KIND_ABORT:
            msg = arr.tobytes().decode('utf-8', 'replace')
            self._fail(f'{self.me}: {self.peer} aborted: {msg}')
            return
        self._in.put((phase, arr, _HDR.size + 8 * ndim))


# ---------------------------------------------------------------- set-up
# Who connects to whom: the client connects to the server and the helper, the
# helper connects to the server. So the server listens for two peers and the
# helper for one; the client only dials out.
CONNECTS_TO = {'client': ('server', 'helper'), 'helper': ('server',), 'server': ()}
ACCEPTS_FROM = {'server': ('client', 'helper'), 'helper': ('client',), 'client': ()}


def _contexts(cert_dir: str, role: str):
    paths = cert_paths(cert_dir, role)
    ctxs = []
    for proto in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        ctx = ssl.SSLContext(proto)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(paths['cert'], paths['key'])
        ctx.load_verify_locations(paths['ca'])
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctxs.append(ctx)
    ctxs[1].check_hostname = True
    return ctxs


def _peer_role(ssock: ssl.SSLSocket) -> str:
    cert = ssock.getpeercert()
    for rdn in cert.get('subject', ()):
        for key, value in rdn:
            if key == 'commonName':
                return value
    return ''


def listen(role: str, host: str, port: int) -> socket.socket:
    """Bind the listening socket of a party that accepts peers (port 0: any free)."""
    if not ACCEPTS_FROM[role]:
        return None
    lsock = socket.create_server((host, port), reuse_port=False)
    return lsock


def connect_all(role: str, addresses: Dict[str, Tuple[str, int]], cert_dir: str,
                meter: Meter, lsock: Optional[socket.socket] = None,
                timeout: float = 120.0, connect_timeout: float = 60.0) -> Dict[str, Connection]:
    """Open this party's two mutually authenticated TLS 1.3 connections.

    Args:
        role: 'client', 'server' or 'helper'.
        addresses: ``{role: (host, port)}`` of the listening parties.
        cert_dir: Directory with ``ca.pem`` and this party's cert and key.
        lsock: An already bound listening socket (else one is bound from
            ``addresses[role]``).
        timeout: Receive timeout of the connections (seconds).
        connect_timeout: How long to retry dialing / wait for peers.
    """
    server_ctx, client_ctx = _contexts(cert_dir, role)
    conns: Dict[str, Connection] = {}
    deadline = time.monotonic() + connect_timeout
    for peer in CONNECTS_TO[role]:
        host, port = addresses[peer]
        while True:
            try:
                raw = socket.create_connection((host, port), timeout=5)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise PeerError(f'{role}: cannot reach {peer} at {host}:{port}: {e}') from e
                time.sleep(0.05)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(max(1.0, deadline - time.monotonic()))
        ssock = client_ctx.wrap_socket(raw, server_hostname=peer)
        ssock.sendall(role.encode().ljust(8, b'\0'))
        conns[peer] = Connection(ssock, role, peer, meter, timeout)
    expected = set(ACCEPTS_FROM[role])
    if expected:
        if lsock is None:
            lsock = listen(role, *addresses[role])
        lsock.settimeout(1.0)
        while expected:
            if time.monotonic() > deadline:
                raise PeerError(f'{role}: {sorted(expected)} did not connect within '
                                f'{connect_timeout:.0f} s')
            try:
                raw, _ = lsock.accept()
            except socket.timeout:
                continue
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                ssock = server_ctx.wrap_socket(raw, server_side=True)
                claimed = ssock.recv(8).rstrip(b'\0').decode()
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            peer = _peer_role(ssock)
            if peer not in expected or claimed != peer:
                ssock.close()
                continue
            expected.discard(peer)
            conns[peer] = Connection(ssock, role, peer, meter, timeout)
        lsock.close()
    return conns
