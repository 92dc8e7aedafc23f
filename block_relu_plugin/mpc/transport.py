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

Limits (what a peer can make this party allocate): a header whose payload
exceeds ``Connection.max_frame`` (at most the per-connection cap
``max_frame_bytes``, default 1 GiB; a caller may set a tighter limit from the
program's largest message), whose shape disagrees with its byte count, or that
is otherwise malformed ends the connection with a :class:`PeerError` naming
the peer and the problem, before anything is allocated. Payloads are
accumulated as their bytes arrive, so a header alone costs nothing. Received
frames wait for ``recv`` in a queue of at most ``max_queued_bytes`` (plus one
frame); when it is full the I/O thread stops reading the socket, and TCP
flow control holds the sender back.

Set-up (:func:`connect_all`): the dialing party verifies that the certificate
is valid for the host it dialed *and* was issued for the role it dialed (see
:func:`.certs.cert_role`); the listening party accepts only the roles it
expects, each once. Listeners handshake every accepted connection in its own
thread with a timeout, so a stray or idle connection cannot hold up the real
peers.

Accounting lives here and only here: :class:`Meter` records every data frame
(peer, direction, payload bytes, phase, layer label) when it is sent and when
the protocol consumes it. Payload bytes exclude the frame header and TLS, as
in the authors' accounting; ``header_bytes`` keeps the framing overhead.
"""
import collections
import math
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

from .certs import cert_paths, cert_role

MAGIC = b'BR'
_HDR = struct.Struct('<2sBBBBHQ')
KIND_DATA, KIND_ABORT = 0, 1
PHASES = ('session', 'offline', 'online')
_DTYPES = {1: np.int64, 2: np.uint8, 3: np.int8, 4: np.float64, 5: np.float32,
           6: np.int32}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_CHUNK = 1 << 20  # send granularity
_RECV_CHUNK = 1 << 16  # read granularity (a TLS record is at most 16 KiB)
MAX_NDIM = 16
MAX_FRAME = 1 << 30  # default cap on one frame's payload (config ``max_frame_bytes``)
MIN_FRAME = 1 << 12  # limits are never set below this: key agreement and aborts always fit
MAX_ABORT = 4000  # bytes of an abort message
MAX_QUEUED = 256 << 20  # received bytes waiting for ``recv`` before reading pauses
HANDSHAKE_TIMEOUT = 10.0  # seconds for one TLS handshake (and role claim)
MAX_PENDING_HANDSHAKES = 16  # a listener closes further connections while this many run


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


def _limit(name: str, value) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return int(value)
    raise ValueError(f'{name} must be a positive whole number of bytes, got {value!r}')


class Connection:
    """One authenticated TLS connection to a peer with its own I/O thread.

    Args:
        sock: The connected socket (TLS, or a plain socket in tests).
        me, peer: Role names, for messages.
        meter: Where sent and received data frames are recorded.
        timeout: Seconds a ``recv`` waits for the peer.
        max_frame: The cap on one frame's payload, in either direction;
            ``max_frame`` can later be set lower (never above this cap).
        max_queued: Received bytes held for ``recv`` before reading pauses.
    """

    def __init__(self, sock: ssl.SSLSocket, me: str, peer: str, meter: Meter,
                 timeout: float = 120.0, max_frame: int = MAX_FRAME,
                 max_queued: int = MAX_QUEUED):
        self.me, self.peer, self.meter, self.timeout = me, peer, meter, timeout
        self.max_frame_cap = max(_limit('max_frame_bytes', max_frame), MIN_FRAME)
        self._max_frame = self.max_frame_cap
        self.max_queued = _limit('max_queued_bytes', max_queued)
        self._queued = 0  # bytes of data frames delivered and not yet taken by recv
        self.queued_peak = 0
        self._q_lock = threading.Lock()
        self._sock = sock
        sock.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._out: collections.deque = collections.deque()
        self._out_lock = threading.Lock()
        self._in: queue.Queue = queue.Queue()
        self._scratch = memoryview(bytearray(_RECV_CHUNK))
        self._expect('hdr', _HDR.size)
        self._closing = False
        self._error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name=f'{me}<->{peer}', daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public
    @property
    def max_frame(self) -> int:
        """The largest payload accepted from (and sent to) the peer."""
        return self._max_frame

    @max_frame.setter
    def max_frame(self, nbytes: int) -> None:
        nbytes = _limit('max_frame', nbytes)
        if nbytes > self.max_frame_cap:
            raise ValueError(f'{self.me}: a frame limit of {nbytes} bytes exceeds this '
                             f'connection\'s cap of {self.max_frame_cap} (max_frame_bytes)')
        self._max_frame = max(nbytes, MIN_FRAME)

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
        if arr.nbytes > self._max_frame:  # the peer would refuse it: fail here, naming it
            raise ValueError(f'{self.me}: a {arr.nbytes}-byte message to {self.peer} exceeds '
                             f'the frame limit of {self._max_frame} bytes (max_frame_bytes)')
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
        with self._q_lock:
            was_full = self._queued >= self.max_queued
            self._queued -= arr.nbytes
            resume = was_full and self._queued < self.max_queued
        if resume:
            self._wake()  # the I/O thread paused reading: let it go on
        if got_phase != phase:
            raise PeerError(f'{self.me}: protocol out of step with {self.peer}: expected a '
                            f'{phase} message, got a {got_phase} one')
        self.meter.add(self.peer, 'recv', arr.nbytes, got_phase, hdr)
        return torch.from_numpy(arr)

    def abort(self, message: str) -> None:
        """Tell the peer this party failed (best effort), then close."""
        try:
            data = np.frombuffer(message.encode('utf-8', 'replace')[:MAX_ABORT], dtype=np.uint8)
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

    def _reading(self) -> bool:
        return self._queued < self.max_queued

    def _tls_buffered(self) -> bool:
        """Decrypted bytes wait inside the SSL object (``select`` cannot see them)."""
        pending = getattr(self._sock, 'pending', None)
        return bool(pending is not None and pending())

    def _run(self):
        sock = self._sock
        try:
            while True:
                with self._out_lock:
                    pending_out = bool(self._out)
                if self._closing and not pending_out:
                    break
                reading = self._reading()
                buffered = reading and self._tls_buffered()
                r, w, _ = select.select([sock, self._wake_r] if reading else [self._wake_r],
                                        [sock] if pending_out else [], [],
                                        0 if buffered else 0.5)
                if self._wake_r in r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                if sock in r or buffered:
                    if not self._read_available():
                        return
                if sock in w:
                    self._write_available()
        except PeerError as e:  # a malformed frame: the message names the problem
            self._fail(str(e))
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

    # Incoming frames are read part by part ('hdr', 'shape', 'payload'); each part
    # is accumulated in a bytearray that grows only as its bytes arrive.
    def _expect(self, part: str, nbytes: int, info: tuple = ()):
        self._rx_part, self._rx_need, self._rx_buf, self._rx_info = part, nbytes, bytearray(), info

    def _read_available(self) -> bool:
        """Read what is available (until the queue is full); False once the peer closed."""
        while self._reading():
            if self._rx_need == 0:
                self._part_done()
                continue
            try:
                n = self._sock.recv_into(self._scratch, min(self._rx_need, len(self._scratch)))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return True
            if n == 0:
                within = ' in the middle of a frame' if (self._rx_part != 'hdr'
                                                         or self._rx_buf) else ''
                self._fail(f'{self.me}: {self.peer} closed the connection{within} (peer '
                           'process ended or dropped the link)')
                return False
            self._rx_buf += self._scratch[:n]
            self._rx_need -= n
        return True

    def _bad(self, problem: str):
        raise PeerError(f'{self.me}: bad frame from {self.peer}: {problem}')

    def _part_done(self):
        part, data, info = self._rx_part, self._rx_buf, self._rx_info
        if part == 'hdr':
            magic, kind, phase, code, ndim, _, nbytes = _HDR.unpack(bytes(data))
            if magic != MAGIC:
                self._bad(f'magic {magic!r} is not {MAGIC!r} (not a block-relu frame)')
            if kind not in (KIND_DATA, KIND_ABORT):
                self._bad(f'unknown kind {kind}')
            if phase >= len(PHASES):
                self._bad(f'unknown phase {phase}')
            if code not in _DTYPES:
                self._bad(f'unknown dtype code {code}')
            if ndim > MAX_NDIM:
                self._bad(f'{ndim} dims (at most {MAX_NDIM})')
            limit = MAX_ABORT if kind == KIND_ABORT else self._max_frame
            if nbytes > limit:  # checked before anything is allocated
                self._bad(f'a payload of {nbytes} bytes exceeds the limit of {limit} bytes'
                          + ('' if kind == KIND_ABORT else ' (max_frame_bytes)'))
            self._expect('shape', 8 * ndim, (kind, PHASES[phase], _DTYPES[code], nbytes))
        elif part == 'shape':
            kind, phase, dtype, nbytes = info
            shape = tuple(int(v) for v in np.frombuffer(bytes(data), dtype='<i8'))
            if any(d < 0 for d in shape):
                self._bad(f'negative dimension in shape {shape}')
            size = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
            if size != nbytes:
                self._bad(f'shape {shape} of {np.dtype(dtype).name} is {size} bytes but the '
                          f'header says {nbytes}')
            self._expect('payload', nbytes, info + (shape,))
        else:
            kind, phase, dtype, nbytes, shape = info
            self._expect('hdr', _HDR.size)
            arr = np.frombuffer(data, dtype=dtype).reshape(shape)
            if kind == KIND_ABORT:
                self._fail(f'{self.me}: {self.peer} aborted: '
                           f'{arr.tobytes().decode("utf-8", "replace")}')
                return
            with self._q_lock:
                self._queued += nbytes
                self.queued_peak = max(self.queued_peak, self._queued)
            self._in.put((phase, arr, _HDR.size + 8 * len(shape)))


# ---------------------------------------------------------------- set-up
# Who connects to whom: the client connects to the server and the helper, the
# helper connects to the server. So the server listens for two peers and the
# helper for one; the client only dials out.
CONNECTS_TO = {'client': ('server', 'helper'), 'helper': ('server',), 'server': ()}
ACCEPTS_FROM = {'server': ('client', 'helper'), 'helper': ('client',), 'client': ()}
_CLAIM = 8  # bytes of the role name a dialing party sends after the handshake


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
    ctxs[1].check_hostname = True  # the dialed host; the role is checked separately
    return ctxs


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b''
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError('closed before sending its role')
        data += part
    return data


def listen(role: str, host: str, port: int) -> socket.socket:
    """Bind the listening socket of a party that accepts peers (port 0: any free)."""
    if not ACCEPTS_FROM[role]:
        return None
    lsock = socket.create_server((host, port), reuse_port=False)
    return lsock


def _dial(role: str, peer: str, address: Tuple[str, int], ctx: ssl.SSLContext,
          deadline: float, handshake_timeout: float) -> ssl.SSLSocket:
    """Connect to ``peer``, retrying until ``deadline``; verify its host and role."""
    host, port = address
    where = f'{peer} at {host}:{port}'
    while True:
        try:
            raw = socket.create_connection((host, port), timeout=5)
        except OSError as e:
            if time.monotonic() > deadline:
                raise PeerError(f'{role}: cannot reach {where}: {e}') from e
            time.sleep(0.05)
            continue
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(handshake_timeout)
        try:
            ssock = ctx.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as e:
            raw.close()
            raise PeerError(f'{role}: the certificate of the {where} does not verify: '
                            f'{e.verify_message or e}') from None
        except (ssl.SSLError, OSError) as e:  # not listening yet, reset, handshake timeout
            raw.close()
            if time.monotonic() > deadline:
                raise PeerError(f'{role}: no TLS handshake with {where}: '
                                f'{type(e).__name__}: {e}') from e
            time.sleep(0.2)
            continue
        got = cert_role(ssock.getpeercert())
        if got != peer:
            ssock.close()
            raise PeerError(f'{role}: role mismatch: the party at {host}:{port} has a '
                            f'{got or "role-less"!s} certificate, not a {peer} one; refusing it')
        try:
            ssock.sendall(role.encode().ljust(_CLAIM, b'\0'))
        except OSError as e:
            ssock.close()
            raise PeerError(f'{role}: {where} dropped the connection: {e}') from e
        return ssock


class _Acceptor:
    """Accepts connections in a thread and handshakes each in its own thread."""

    def __init__(self, role: str, lsock: socket.socket, ctx: ssl.SSLContext,
                 handshake_timeout: float):
        self.role, self.lsock, self.ctx = role, lsock, ctx
        self.handshake_timeout = handshake_timeout
        self.expected = set(ACCEPTS_FROM[role])
        self.done: Dict[str, ssl.SSLSocket] = {}
        self.refused: List[str] = []
        self.cond = threading.Condition()
        self.pending = 0
        self.stopped = False
        lsock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, name=f'{role}-accept',
                                       daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopped:
            try:
                raw, addr = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cond:
                busy = self.pending >= MAX_PENDING_HANDSHAKES
                if not busy:
                    self.pending += 1
            if busy:
                raw.close()
                continue
            threading.Thread(target=self._handshake, args=(raw, addr), daemon=True).start()

    def _handshake(self, raw: socket.socket, addr):
        ssock, peer, reason = None, '', None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(self.handshake_timeout)
            ssock = self.ctx.wrap_socket(raw, server_side=True)
            claimed = _recv_exact(ssock, _CLAIM).rstrip(b'\0').decode('ascii', 'replace')
            peer = cert_role(ssock.getpeercert())
            if peer not in self.expected:
                reason = f'a {peer or "role-less"} certificate (expected ' \
                         f'{" or ".join(sorted(self.expected))})'
            elif claimed != peer:
                reason = f'claims {claimed!r} with a {peer} certificate'
        except (ssl.SSLError, OSError, ValueError) as e:
            reason = f'{type(e).__name__}: {e}'
        with self.cond:
            self.pending -= 1
            if reason is None and peer in self.done:
                reason = f'a second connection as {peer}'
            if reason is None and not self.stopped:
                self.done[peer] = ssock
                self.cond.notify_all()
                return
            if reason is not None:
                self.refused.append(f'{addr[0]}:{addr[1]}: {reason}')
        (ssock or raw).close()

    def wait(self, deadline: float, connect_timeout: float) -> Dict[str, ssl.SSLSocket]:
        with self.cond:
            while set(self.done) != self.expected:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(self.expected - set(self.done))
                    refused = (f'; refused {len(self.refused)} connection(s), last: '
                               f'{self.refused[-1]}' if self.refused else '')
                    raise PeerError(f'{self.role}: {missing} did not connect within '
                                    f'{connect_timeout:.0f} s{refused}')
                self.cond.wait(min(left, 0.5))
            return dict(self.done)

    def stop(self):
        """Stop accepting; handshakes still running close their sockets when done."""
        with self.cond:
            self.stopped = True
        self.thread.join()
        self.lsock.close()


def connect_all(role: str, addresses: Dict[str, Tuple[str, int]], cert_dir: str,
                meter: Meter, lsock: Optional[socket.socket] = None,
                timeout: float = 120.0, connect_timeout: float = 60.0,
                handshake_timeout: float = HANDSHAKE_TIMEOUT, max_frame: int = MAX_FRAME,
                max_queued: int = MAX_QUEUED) -> Dict[str, Connection]:
    """Open this party's two mutually authenticated TLS 1.3 connections.

    Args:
        role: 'client', 'server' or 'helper'.
        addresses: ``{role: (host, port)}`` of the listening parties. A peer's
            certificate must be valid for the host dialed (a name or IP
            address given to ``tools/mpc_certs.py`` for that role).
        cert_dir: Directory with this party's files (see :func:`.certs.cert_paths`).
        lsock: An already bound listening socket (else one is bound from
            ``addresses[role]``).
        timeout: Receive timeout of the connections (seconds).
        connect_timeout: How long to retry dialing / wait for peers.
        handshake_timeout: Limit for one TLS handshake (both sides).
        max_frame: Cap on one frame's payload (bytes) on every connection.
        max_queued: Received bytes a connection holds before it stops reading.
    """
    _limit('max_frame_bytes', max_frame)
    _limit('max_queued_bytes', max_queued)
    server_ctx, client_ctx = _contexts(cert_dir, role)
    deadline = time.monotonic() + connect_timeout
    acceptor = None
    if ACCEPTS_FROM[role]:  # accept while dialing: no start-up order between parties
        if lsock is None:
            lsock = listen(role, *addresses[role])
        acceptor = _Acceptor(role, lsock, server_ctx, handshake_timeout)
    socks: Dict[str, ssl.SSLSocket] = {}
    try:
        for peer in CONNECTS_TO[role]:
            socks[peer] = _dial(role, peer, addresses[peer], client_ctx, deadline,
                                handshake_timeout)
        if acceptor is not None:
            socks.update(acceptor.wait(deadline, connect_timeout))
    except BaseException:
        if acceptor is not None:
            acceptor.stop()
            socks.update(acceptor.done)
        for s in socks.values():
            s.close()
        raise
    if acceptor is not None:
        acceptor.stop()
    return {peer: Connection(s, role, peer, meter, timeout, max_frame, max_queued)
            for peer, s in socks.items()}
