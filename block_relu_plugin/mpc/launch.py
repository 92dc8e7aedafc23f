"""Starting parties: from a JSON config (deployment) or all three locally.

Config (JSON)::

    {"cert_dir": "certs/",
     "client": {"host": "10.0.0.1"},
     "server": {"host": "10.0.0.2", "port": 7001},
     "helper": {"host": "10.0.0.3", "port": 7002},
     "timeout": 120, "connect_timeout": 60, "frac_bits": 12}

The server and the helper listen on their ``host:port`` (the client connects
to both, the helper to the server); the certificate of each must be valid for
that host (``tools/mpc_certs.py OUT --server HOST --helper HOST``).
``cert_dir`` holds this party's bundle (``ca.pem``, ``<role>.pem``,
``<role>.key``) or the tool's whole output directory.
``open_session(role, config)`` connects and returns a
:class:`~.session.Session`. ``connect_timeout`` (default 60 s) bounds the
start-up: dialing the peers and waiting for them to connect;
``handshake_timeout`` (default 10 s) one TLS handshake; ``timeout`` (default
120 s) bounds every wait for a peer's message after that.
``max_frame_bytes`` (default 1 GiB) caps one message's payload and
``max_queued_bytes`` (default 256 MiB) the received data a connection holds
before it stops reading (see :mod:`.transport`).

``LocalCluster`` starts the three parties as separate processes on
127.0.0.1 (multiprocessing spawn) with fresh certificates in a temporary
directory (the CA key is deleted once they are made), keeps them alive, and
runs picklable functions ``fn(sess, *args)`` on all three at once
(``cluster.run(fn, args)``); ``run_local(fn, ...)`` is the one-call version.
"""
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import traceback
from typing import Any, Callable, Dict, Optional

from .certs import CA_DIR, generate_certs
from .session import ROLES, Session
from .transport import (HANDSHAKE_TIMEOUT, MAX_FRAME, MAX_QUEUED, Meter, PeerError,
                        connect_all, listen)


def load_config(path_or_dict) -> Dict[str, Any]:
    if isinstance(path_or_dict, dict):
        return dict(path_or_dict)
    with open(path_or_dict) as f:
        return json.load(f)


def open_session(role: str, config, lsock=None) -> Session:
    """Connect this party to the two others (mutual TLS) and agree session keys."""
    cfg = load_config(config)
    addresses = {r: (cfg[r].get('host', '127.0.0.1'), int(cfg[r].get('port', 0)))
                 for r in ROLES if r in cfg}
    meter = Meter()
    conns = connect_all(role, addresses, cfg['cert_dir'], meter, lsock=lsock,
                        timeout=float(cfg.get('timeout', 120)),
                        connect_timeout=float(cfg.get('connect_timeout', 60)),
                        handshake_timeout=float(cfg.get('handshake_timeout',
                                                        HANDSHAKE_TIMEOUT)),
                        max_frame=cfg.get('max_frame_bytes', MAX_FRAME),
                        max_queued=cfg.get('max_queued_bytes', MAX_QUEUED))
    return Session(role, conns, meter, frac_bits=int(cfg.get('frac_bits', 12)))


def _party_main(role: str, cert_dir: str, cmd, timeout: float, frac_bits: int,
                max_frame: int = MAX_FRAME):
    """Party process: bind, report the port, connect, then serve commands."""
    import torch
    torch.set_num_threads(1)
    sess = None
    try:
        lsock = listen(role, '127.0.0.1', 0)
        cmd.send(('port', lsock.getsockname()[1] if lsock else None))
        ports = cmd.recv()
        cfg = {'cert_dir': cert_dir, 'timeout': timeout, 'frac_bits': frac_bits,
               'max_frame_bytes': max_frame}
        for r in ROLES:
            cfg[r] = {'host': '127.0.0.1', 'port': ports.get(r) or 0}
        sess = open_session(role, cfg, lsock=lsock)
        cmd.send(('ready', None))
        while True:
            msg = cmd.recv()
            if msg is None:
                break
            fn, args = msg
            try:
                cmd.send(('ok', fn(sess, *args)))
            except Exception as e:  # noqa: BLE001 - reported to the launcher
                cmd.send(('err', f'{type(e).__name__}: {e}\n{traceback.format_exc()}'))
                if not isinstance(e, PeerError):
                    sess.abort(f'{type(e).__name__}: {e}')
                break
    except Exception as e:  # noqa: BLE001
        try:
            cmd.send(('err', f'{type(e).__name__}: {e}\n{traceback.format_exc()}'))
        except Exception:  # noqa: BLE001
            pass
    finally:
        if sess is not None:
            sess.close()


_LIGHT_BOOTSTRAP = """
import os, sys, types
if 'block_relu_plugin' not in sys.modules:
    pkg = types.ModuleType('block_relu_plugin')
    pkg.__path__ = [PKG_DIR]
    sys.modules['block_relu_plugin'] = pkg
from block_relu_plugin.mpc.launch import _party_main
_party_main(*ARGS)
"""


class PartyError(RuntimeError):
    """A party raised; ``errors`` maps role to its error text."""

    def __init__(self, errors: Dict[str, str]):
        self.errors = errors
        super().__init__('; '.join(f'{r}: {e.splitlines()[0]}' for r, e in errors.items()))


class LocalCluster:
    """Three party processes on 127.0.0.1 over mutual TLS, kept for several runs.

    Args:
        timeout: Receive timeout of every connection (seconds).
        frac_bits: Fixed-point fractional bits.
        light: Start the party processes without running the package's
            ``__init__`` (which imports mmpretrain/mmseg, seconds per
            process); only ``block_relu_plugin.mpc`` and what it imports are
            loaded. Functions run by the cluster must then import what they
            need themselves.
        max_frame_bytes: Cap on one message's payload.
    """

    def __init__(self, timeout: float = 60.0, frac_bits: int = 12, light: bool = False,
                 max_frame_bytes: int = MAX_FRAME):
        self.cert_dir = tempfile.mkdtemp(prefix='mpc-certs-')
        generate_certs(self.cert_dir, {r: ['127.0.0.1'] for r in ROLES})
        shutil.rmtree(os.path.join(self.cert_dir, CA_DIR))  # no more certificates to issue
        ctx = mp.get_context('spawn')
        self.conns, self.procs = {}, {}
        for role in ROLES:
            parent, child = ctx.Pipe()
            args = (role, self.cert_dir, child, timeout, frac_bits, max_frame_bytes)
            if light:
                pkg_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                p = ctx.Process(target=exec, args=(_LIGHT_BOOTSTRAP,
                                                   {'PKG_DIR': pkg_dir, 'ARGS': args}),
                                daemon=True, name=role)
            else:
                p = ctx.Process(target=_party_main, args=args, daemon=True, name=role)
            p.start()
            self.conns[role], self.procs[role] = parent, p
        ports = {r: self._get(r, 120)[1] for r in ROLES}
        for r in ROLES:
            self.conns[r].send(ports)
        errors = {}
        for r in ROLES:
            kind, val = self._get(r, 120)
            if kind != 'ready':
                errors[r] = val
        if errors:
            self.close()
            raise PartyError(errors)

    def _get(self, role: str, wait: float):
        if not self.conns[role].poll(wait):
            raise PartyError({role: f'no answer within {wait:.0f} s'})
        try:
            return self.conns[role].recv()
        except EOFError:
            raise PartyError({role: 'process ended'}) from None

    def pid(self, role: str) -> int:
        return self.procs[role].pid

    def run(self, fn: Callable, args: Optional[Dict[str, tuple]] = None,
            wait: float = 300.0, raise_errors: bool = True) -> Dict[str, Any]:
        """Run ``fn(sess, *args[role])`` in all three parties; return ``{role: result}``.

        With ``raise_errors=False`` a failed party's entry is a :class:`PartyError`.
        """
        args = args or {}
        for r in ROLES:
            self.conns[r].send((fn, tuple(args.get(r, ()))))
        out, errors = {}, {}
        for r in ROLES:
            try:
                kind, val = self._get(r, wait)
            except PartyError as e:
                kind, val = 'err', e.errors[r]
            if kind == 'ok':
                out[r] = val
            else:
                errors[r] = val
                out[r] = PartyError({r: val})
        if errors and raise_errors:
            raise PartyError(errors)
        return out

    def close(self):
        for r, c in self.conns.items():
            try:
                c.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        shutil.rmtree(self.cert_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def run_local(fn: Callable, args: Optional[Dict[str, tuple]] = None, **kwargs) -> Dict[str, Any]:
    """Start three local parties, run ``fn(sess, *args[role])`` once, stop them."""
    with LocalCluster(**kwargs) as cluster:
        return cluster.run(fn, args)


def run_passes(sess: Session, program: Callable, online_input, offline_input=None):
    """Run ``program(sess, inp)`` as an offline pass (shapes) then an online pass.

    ``offline_input`` defaults to the shape of ``online_input`` (parties other
    than the client usually pass a shape or meta tensor for both).
    """
    import torch
    if offline_input is None:
        offline_input = (torch.zeros((), dtype=online_input.dtype).expand(online_input.shape)
                         if isinstance(online_input, torch.Tensor) else online_input)
    with sess.offline():
        program(sess, offline_input)
    with sess.online():
        return program(sess, online_input)
