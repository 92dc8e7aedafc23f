"""Transport, certificate and PRF hardening, tried as a hostile peer would.

Real certificates from ``generate_certs``, real TLS over loopback sockets, the
real :func:`connect_all`; a hostile peer is a plain ``ssl`` socket holding a
real party certificate that writes whatever bytes the test chooses.
"""
import importlib.util
import os
import socket
import ssl
import stat
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from block_relu_plugin.mpc import prf
from block_relu_plugin.mpc.certs import ROLES, generate_certs
from block_relu_plugin.mpc.transport import Meter, PeerError, connect_all, listen

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOPBACK = {r: ['127.0.0.1'] for r in ROLES}
HDR = struct.Struct('<2sBBBBHQ')  # the wire format, written out independently of the code
INT64, ONLINE = 1, 2


def header(nbytes, shape, magic=b'BR', code=INT64):
    return HDR.pack(magic, 0, ONLINE, code, len(shape), 0, nbytes) + struct.pack(
        f'<{len(shape)}q', *shape)


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('certs'))
    generate_certs(d, LOOPBACK)
    return d


class FakePeer:
    """A raw TLS listener with ``role``'s real certificate: after the handshake and
    the dialer's role claim it runs ``act(ssock, release)`` (then closes); acts that
    hold the link open wait for the event ``release``."""

    def __init__(self, cert_dir, role, act, release):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(cert_dir, role, f'{role}.pem'),
                            os.path.join(cert_dir, role, f'{role}.key'))
        ctx.load_verify_locations(os.path.join(cert_dir, role, 'ca.pem'))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.lsock = socket.create_server(('127.0.0.1', 0))
        self.lsock.settimeout(60)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(ctx, act, release),
                                       daemon=True)
        self.thread.start()

    def _serve(self, ctx, act, release):
        try:
            raw, _ = self.lsock.accept()
            with ctx.wrap_socket(raw, server_side=True) as ssock:
                ssock.recv(8)
                act(ssock, release)
        except (OSError, ssl.SSLError):
            pass  # the dialer hung up: what some tests want
        finally:
            self.lsock.close()


def hold(ssock, release):
    release.wait(60)


def client_against(cert_dir, act_server, act_helper=None, host='127.0.0.1',
                   server_role='server', **kwargs):
    """The real client's ``connect_all`` against two fake listeners."""
    release = threading.Event()
    fakes = {'server': FakePeer(cert_dir, server_role, act_server, release),
             'helper': FakePeer(cert_dir, 'helper', act_helper or hold, release)}
    addresses = {r: (host, f.port) for r, f in fakes.items()}
    try:
        return connect_all('client', addresses, cert_dir, Meter(), connect_timeout=20,
                           **kwargs), release
    except BaseException:
        release.set()
        raise


def close(conns, release):
    release.set()
    for c in conns.values():
        c.close(wait=5)


# ------------------------------------------------------------------ frames
def test_huge_header_costs_nothing(certs):
    """A header claiming 1 GiB (the default cap) followed by 64 KiB and EOF:
    a clean error, and the receiver allocates about what arrived, not 1 GiB."""
    n = 1 << 27  # int64 elements: 1 GiB

    def act(ssock, release):
        ssock.sendall(header(8 * n, (n,)) + bytes(1 << 16))

    tracemalloc.start()
    try:
        conns, release = client_against(certs, act)
        try:
            with pytest.raises(PeerError, match='server closed the connection in the middle '
                                                'of a frame') as err:
                conns['server'].recv('online', timeout=30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            close(conns, release)
    finally:
        tracemalloc.stop()
    assert str(err.value).startswith('client: ') and '\n' not in str(err.value)
    assert peak < (16 << 20), f'{peak / 2**20:.0f} MiB traced for a 64 KiB partial frame'


@pytest.mark.parametrize('where', ['cap', 'program'])
def test_frame_over_limit_is_refused(certs, where):
    """Over the connection's cap (``max_frame_bytes``), or over a tighter limit set
    later from the program: refused on the header, the peer named."""
    go = threading.Event()
    claim = (2 << 20) if where == 'cap' else (100 << 10)

    def act(ssock, release):
        go.wait(30)
        ssock.sendall(header(claim, (claim // 8,)))
        release.wait(60)  # keep the link open: the refusal must come from the header alone

    conns, release = client_against(certs, act, max_frame=1 << 20)
    conn = conns['server']
    try:
        assert conn.max_frame == conn.max_frame_cap == 1 << 20
        if where == 'program':
            conn.max_frame = 64 << 10
            with pytest.raises(ValueError, match='exceeds the frame limit'):
                conn.send(np.zeros(9 << 10, np.int64), 'online')  # 72 KiB
        with pytest.raises(ValueError, match='cap'):
            conn.max_frame = 2 << 20
        go.set()
        limit = conn.max_frame
        with pytest.raises(PeerError, match=f'client: bad frame from server: a payload of '
                                            f'{claim} bytes exceeds the limit of {limit} bytes'):
            conn.recv('online', timeout=30)
    finally:
        close(conns, release)


@pytest.mark.parametrize('frame, problem', [
    (header(16, (2,), magic=b'XX') + bytes(16), 'magic'),
    (header(16, (3,)) + bytes(16), r'shape \(3,\) of int64 is 24 bytes but the header says 16'),
    (header(0, (-1, 0)), 'negative dimension'),
    (header(0, (1 << 62, 4)), 'is 147573952589676412928 bytes but the header says 0'),
    (header(8, (1,), code=99) + bytes(8), 'unknown dtype code 99'),
], ids=['magic', 'size-mismatch', 'negative-dim', 'int64-overflow', 'dtype'])
def test_bad_header(certs, frame, problem):
    conns, release = client_against(certs, lambda s, release: (s.sendall(frame),
                                                               release.wait(60)))
    try:
        with pytest.raises(PeerError, match='client: bad frame from server: .*' + problem):
            conns['server'].recv('online', timeout=30)
    finally:
        close(conns, release)


def test_queue_is_bounded(certs):
    """A peer that floods: the receiver holds at most ``max_queued`` (+ one frame),
    then stops reading, so the flood stalls in TCP; it all arrives once consumed."""
    frames, size, limit = 96, 1 << 20, 4 << 20  # 96 MiB: far beyond loopback TCP buffers
    finished = threading.Event()

    def act(ssock, release):
        for i in range(frames):
            ssock.sendall(header(size, (size,), code=2) + bytes([i]) * size)  # uint8
        finished.set()
        release.wait(60)

    conns, release = client_against(certs, act, max_queued=limit)
    conn = conns['server']
    try:
        deadline = time.monotonic() + 60
        while conn.queued_peak < limit:  # the receiver has read up to its limit
            assert time.monotonic() < deadline, 'nothing arrived'
            time.sleep(0.01)
        assert not finished.wait(2), 'the receiver kept reading past its queue limit'
        for i in range(frames):
            got = conn.recv('online', timeout=30)
            assert got.shape == (size,) and int(got[0]) == i and int(got[-1]) == i
        assert finished.wait(30)
        assert conn.queued_peak < limit + size, conn.queued_peak
    finally:
        close(conns, release)


# ------------------------------------------------------------------ roles
def test_dialer_refuses_wrong_role(tmp_path):
    """Certificates whose host names are shared by every party (the old tool's
    ``--hosts``): the helper, listening where the client expects the server, is
    refused by its role, though its certificate is valid for the host dialed."""
    shared = {r: ['localhost'] for r in ROLES}
    generate_certs(str(tmp_path), shared)
    with pytest.raises(PeerError) as err:
        conns, release = client_against(str(tmp_path), hold, host='localhost',
                                        server_role='helper')
        close(conns, release)
    msg = str(err.value)
    assert msg.startswith('client: role mismatch') and '\n' not in msg, msg
    assert 'helper certificate, not a server one' in msg, msg


def test_dialer_checks_host(certs):
    """The server's certificate names 127.0.0.1 only: dialing it as localhost fails."""
    with pytest.raises(PeerError, match="certificate of the server at localhost:.* does not "
                                        "verify: .*not valid for 'localhost'"):
        client_against(certs, hold, host='localhost')


def test_listener_refuses_wrong_role(certs):
    """A helper certificate claiming to be the client is turned away by the server,
    and the start-up error says so."""
    lsock = listen('server', '127.0.0.1', 0)
    port = lsock.getsockname()[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(os.path.join(certs, 'helper', 'helper.pem'),
                        os.path.join(certs, 'helper', 'helper.key'))
    ctx.load_verify_locations(os.path.join(certs, 'helper', 'ca.pem'))
    done = threading.Event()

    def impostor():
        try:
            with socket.create_connection(('127.0.0.1', port)) as raw, \
                    ctx.wrap_socket(raw, server_hostname='127.0.0.1') as ssock:
                ssock.sendall(b'client'.ljust(8, b'\0'))
                done.wait(60)
        except OSError:
            pass

    threading.Thread(target=impostor, daemon=True).start()
    try:
        with pytest.raises(PeerError, match=r"did not connect within 3 s; refused 1 "
                                            r"connection\(s\), last: .*claims 'client' with a "
                                            r"helper certificate"):
            connect_all('server', {'server': ('127.0.0.1', port)}, certs, Meter(),
                        lsock=lsock, connect_timeout=3)
    finally:
        done.set()


def test_idle_connection_does_not_block_startup(certs):
    """Idle TCP connections to both listeners, opened before the parties start:
    the three real parties still connect, and every link works."""
    lsocks = {r: listen(r, '127.0.0.1', 0) for r in ('server', 'helper')}
    addresses = {r: ('127.0.0.1', s.getsockname()[1]) for r, s in lsocks.items()}
    idle = [socket.create_connection(a) for a in addresses.values()]
    out = {}

    def party(role):
        try:
            out[role] = connect_all(role, addresses, certs, Meter(), lsock=lsocks.get(role),
                                    connect_timeout=20)
        except Exception as e:  # noqa: BLE001 - reported below
            out[role] = e

    threads = [threading.Thread(target=party, args=(r,), daemon=True) for r in ROLES]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for r in ROLES:
            assert isinstance(out.get(r), dict), f'{r}: {out.get(r)!r}'
        for a in ROLES:
            for b in ROLES:
                if a != b:
                    out[a][b].send(torch.tensor([ROLES.index(a)]), 'online')
        for a in ROLES:
            for b in ROLES:
                if a != b:
                    assert int(out[a][b].recv('online', timeout=30)) == ROLES.index(b)
    finally:
        for s in idle:
            s.close()
        for conns in out.values():
            if isinstance(conns, dict):
                for c in conns.values():
                    c.close(wait=5)


# ------------------------------------------------------------------ key files
def test_key_files_private_and_ca_apart(tmp_path):
    """Key files end 0600 even when they existed 0644 before, directories 0700,
    and each party's directory holds its own files only, never the CA key."""
    out = tmp_path / 'certs'
    for d in ('ca', 'server'):
        (out / d).mkdir(parents=True)
    for f in ('ca/ca.key', 'server/server.key', 'ca.key'):  # ca.key: the old flat layout
        (out / f).write_text('old')
        os.chmod(out / f, 0o644)
    os.chmod(out, 0o755)
    paths = generate_certs(str(out), LOOPBACK)
    assert not (out / 'ca.key').exists()
    assert sorted(os.listdir(out)) == ['ca', 'client', 'helper', 'server']
    assert sorted(os.listdir(out / 'ca')) == ['ca.key', 'ca.pem']
    for r in ROLES:
        assert sorted(os.listdir(out / r)) == sorted(['ca.pem', f'{r}.pem', f'{r}.key'])
        assert paths[f'{r}_dir'] == str(out / r)
    for d in ['.', 'ca'] + list(ROLES):
        assert stat.S_IMODE(os.stat(out / d).st_mode) == 0o700, d
    for f in ['ca/ca.key'] + [f'{r}/{r}.key' for r in ROLES]:
        assert stat.S_IMODE(os.stat(out / f).st_mode) == 0o600, f
        assert (out / f).read_text().startswith('-----BEGIN PRIVATE KEY'), f


def _certs_tool():
    spec = importlib.util.spec_from_file_location('mpc_certs_tool',
                                                  os.path.join(REPO, 'tools', 'mpc_certs.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_certs_tool_names_per_role(tmp_path, capsys):
    from cryptography import x509
    tool = _certs_tool()
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'a'), '--hosts', '10.0.0.1'])
    assert '--hosts was removed' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'b'), '--server', '10.0.0.2'])
    assert 'no host name or address for the helper' in capsys.readouterr().err
    tool.main([str(tmp_path / 'c'), '--server', '10.0.0.2', 'srv.example', '--helper',
               '10.0.0.3', '--client', '10.0.0.1'])
    assert 'give ' + str(tmp_path / 'c' / 'server') in capsys.readouterr().out
    sans = {}
    for r in ROLES:
        cert = x509.load_pem_x509_certificate((tmp_path / 'c' / r / f'{r}.pem').read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans[r] = (set(map(str, san.get_values_for_type(x509.IPAddress)))
                   | set(san.get_values_for_type(x509.DNSName)),
                   san.get_values_for_type(x509.UniformResourceIdentifier))
    assert sans['server'] == ({'10.0.0.2', 'srv.example'}, ['urn:block-relu:role:server'])
    assert sans['helper'] == ({'10.0.0.3'}, ['urn:block-relu:role:helper'])
    assert sans['client'] == ({'10.0.0.1'}, ['urn:block-relu:role:client'])


# ------------------------------------------------------------------ PRF
def test_prf_stream_stops_before_counter_wraps():
    """The 32-bit block counter must not carry into the tag: past block 2^32 - 1 a
    stream would repeat the keystream of the step (run, op, tag + 1)."""
    key = prf.new_key()
    last = struct.pack('>IIII', 3, 4, 5, 0xFFFFFFFF)  # a stream at its last block
    unguarded = Cipher(algorithms.AES(key), modes.CTR(last)).encryptor().update(bytes(32))
    assert unguarded[16:] == prf.PRF(key).stream(3, 4, 6).bytes(16).tobytes()  # the overlap
    s = prf.Stream(key, last)
    assert s.bytes(16).tobytes() == unguarded[:16]
    with pytest.raises(OverflowError, match='2\\^32 blocks'):
        s.bytes(1)
    assert prf.PRF(key).stream(0, 0, 0).left == 1 << 36  # 2^32 blocks of 16 bytes


@pytest.mark.parametrize('run, op, tag', [(-1, 0, 0), (1 << 32, 0, 0), (0xFFFFFFFF, 0, 0),
                                          (0, 1 << 32, 0), (0, 0, (1 << 32) + 5), (0, -1, 0)])
def test_prf_rejects_indices_outside_32_bits(run, op, tag):
    """Masking to 32 bits would make (0, 0, 2^32 + 5) the stream of (0, 0, 5);
    run 2^32 - 1 belongs to the session streams."""
    with pytest.raises(ValueError, match='PRF'):
        prf.PRF(prf.new_key()).stream(run, op, tag)
