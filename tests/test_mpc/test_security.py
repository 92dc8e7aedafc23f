"""Transcripts: what the server and the helper receive looks uniform and does not
depend on the client's input; raw input bytes never cross a link; keys differ
per session; a killed party makes the others fail fast with a clear error."""
import os
import signal

import numpy as np
import pytest
import torch

import mpc_programs as MP
from mpc_util import ROLES, all3


def _byte_stats(payloads):
    data = np.frombuffer(b''.join(payloads), dtype=np.uint8)
    counts = np.bincount(data, minlength=256)
    exp = data.size / 256
    chi2 = ((counts - exp) ** 2 / exp).sum()
    ones = np.unpackbits(data).mean()
    return data.size, chi2, ones


def _z67_stats(payloads):
    """Max and chi-square of Z_67 digits (the decoded packed messages)."""
    data = np.frombuffer(b''.join(payloads), dtype=np.uint8)
    counts = np.bincount(data, minlength=67)
    exp = data.size / 67
    return data.max(), ((counts[:67] - exp) ** 2 / exp).sum()


def _split(received, who):
    """Ring-element payloads (int64), Z_67 digits and bits (both decoded from the
    packed uint8 messages, which are not counted twice; session keys are not either)."""
    ring_p, zp_p, bit_p = [], [], []
    for peer, phase, raw, dtype in received[who]:
        if dtype == 'int64':
            ring_p.append(raw)
        elif dtype == 'z67':
            zp_p.append(raw)
        elif dtype == 'bits':
            bit_p.append(raw)
    return ring_p, zp_p, bit_p


@pytest.fixture(scope='module')
def transcripts(cluster):
    out = {}
    for name, x in [('zeros', torch.zeros(2, 3, 8, 8, dtype=torch.int64)),
                    ('image', (torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) % 256) * 4096
                     + 0x5A5A000000)]:
        res = cluster.run(MP.transcript_program, all3(x))
        out[name] = (x, res)
    return out


@pytest.mark.parametrize('who', ['server', 'helper'])
def test_received_messages_look_uniform(transcripts, who):
    for name, (x, res) in transcripts.items():
        ring_p, zp_p, bit_p = _split(res, who)
        # (the helper's ring elements are ShareConvert's masked shares)
        n, chi2, ones = _byte_stats(ring_p)
        assert n > (20000 if who == 'server' else 8000)
        assert chi2 < 400, (name, chi2)       # 255 dof: mean 255, sd 22.6
        assert abs(ones - 0.5) < 0.01, (name, ones)
        assert sum(len(p) for p in zp_p) > 5000
        mx, chi2 = _z67_stats(zp_p)
        assert mx < 67 and chi2 < 150, (name, chi2)  # 66 dof: mean 66, sd 11.5
        # the helper deals: it receives no bits; the server's DReLU bits look uniform
        bits = np.frombuffer(b''.join(bit_p), dtype=np.uint8)
        assert (bits.size > 100000) == (who == 'server') and (bits <= 1).all()
        if bits.size:
            assert abs(bits.mean() - 0.5) < 0.01, (name, bits.mean())


@pytest.mark.parametrize('who', ['server', 'helper'])
def test_distribution_does_not_depend_on_input(transcripts, who):
    stats = {}
    for name, (x, res) in transcripts.items():
        ring_p, zp_p, bit_p = _split(res, who)
        sizes = [len(r) for _, _, r, _ in res[who]]
        bits = np.frombuffer(b''.join(bit_p), dtype=np.uint8)
        stats[name] = (sizes, _byte_stats(ring_p + zp_p)[2], bits.mean() if bits.size else 0)
    (s0, o0, b0), (s1, o1, b1) = stats.values()
    assert s0 == s1  # same message sizes, same order
    assert abs(o0 - o1) < 0.01 and abs(b0 - b1) < 0.01


def test_raw_input_never_on_a_link(transcripts):
    x, res = transcripts['image']
    raw = x.numpy().tobytes()
    windows = {raw[i:i + 16] for i in range(0, len(raw) - 16, 8)}
    for who in ROLES:
        for _, _, payload, _ in res[who]:
            for w in list(windows)[:200]:
                assert w not in payload, who


def test_keys_differ_per_session(cluster):
    from block_relu_plugin.mpc import LocalCluster
    fp1 = cluster.run(MP.fingerprints)
    assert fp1['client']['cs'] == fp1['server']['cs'] and fp1['client']['ch'] == fp1['helper']['ch']
    assert fp1['server']['sh'] == fp1['helper']['sh']
    owns = {fp1[r]['own'] for r in ROLES}
    assert len(owns) == 3
    with LocalCluster(timeout=30, light=True) as other:
        fp2 = other.run(MP.fingerprints)
        # a killed party makes both others fail quickly, naming it
        for r in ROLES:
            other.conns[r].send((MP.ping_forever, ()))
        os.kill(other.pid('server'), signal.SIGKILL)
        for r in ('client', 'helper'):
            assert other.conns[r].poll(60), f'{r} hangs after the server died'
            kind, msg = other.conns[r].recv()
            assert kind == 'err' and 'server' in msg.splitlines()[0], msg
    for k in ('cs', 'ch', 'sh'):
        assert fp1['client' if k != 'sh' else 'server'][k] != fp2['client' if k != 'sh'
                                                                  else 'server'][k]
