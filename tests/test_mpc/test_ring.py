"""Ring arithmetic, exact linear layers, PRF streams and certificates (no processes)."""
import numpy as np
import pytest
import torch

from block_relu_plugin.mpc import prf, ring
from block_relu_plugin.mpc.ring import (ring_conv2d, ring_conv2d_reference, ring_linear,
                                        ring_linear_reference)


def rand64(*shape):
    return torch.randint(-2**63, 2**63 - 1, shape, dtype=torch.int64)


CONVS = [
    ((2, 6, 9, 7), (8, 3, 3, 2), dict(stride=2, padding=1, groups=2)),        # non-square, groups
    ((1, 4, 9, 8), (6, 4, 3, 3), dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1))),
    ((2, 8, 6, 6), (8, 1, 3, 3), dict(padding=1, groups=8)),                  # depthwise
    ((2, 8, 6, 6), (16, 1, 3, 3), dict(stride=2, padding=1, groups=8)),       # depth multiplier
    ((3, 8, 5, 5), (4, 8, 1, 1), {}),                                         # 1x1
    ((1, 3, 11, 11), (5, 3, 5, 3), dict(stride=(2, 1), padding=(2, 1), dilation=2)),
]


@pytest.mark.parametrize('method', ['int64', 'limbs'])
@pytest.mark.parametrize('xs,ws,kw', CONVS)
def test_ring_conv2d_exact(xs, ws, kw, method):
    x, w = rand64(*xs), rand64(*ws)
    assert torch.equal(ring_conv2d(x, w, method=method, **kw), ring_conv2d_reference(x, w, **kw))
    # small weights take the one-limb path
    w = torch.randint(-2**15, 2**15, ws)
    assert torch.equal(ring_conv2d(x, w, method=method, **kw), ring_conv2d_reference(x, w, **kw))


def test_ring_linear_and_limb_width():
    x, w = rand64(5, 33), rand64(7, 33)
    for m in ('int64', 'limbs'):
        assert torch.equal(ring_linear(x, w, method=m), ring_linear_reference(x, w))
    assert ring.limb_bits_for(4608) == 16
    assert ring.limb_bits_for(2**22) == 8


def test_encode_decode_and_predicates():
    v = torch.tensor([0.0, 1.5, -2.25, 1e-4])
    assert torch.allclose(ring.decode(ring.encode(v)), v.double(), atol=2**-12)
    a = torch.tensor([-1, 0, 5, -2**63], dtype=torch.int64)
    b = torch.tensor([1, 0, 2**63 - 1, -2**63], dtype=torch.int64)
    assert ring.wrap(a, b).tolist() == [1, 0, 0, 1]
    assert ring.ult(torch.tensor([1]), torch.tensor([-1])).item()
    assert ring.msb(a).tolist() == [1, 0, 0, 1]


def test_odd_ring_ops():
    L1 = 2**64 - 1
    edge = [0, 1, 2, 2**63 - 1, 2**63, 2**64 - 3, 2**64 - 2]
    vals = edge + [int(v) for v in np.random.default_rng(0).integers(0, 2**64 - 1, 200,
                                                                     dtype=np.uint64)]
    a = [v % L1 for v in vals]
    b = a[::-1]
    as_t = lambda xs: torch.tensor(np.array(xs, dtype=np.uint64).view(np.int64))  # noqa: E731
    got = lambda t: [int(v) for v in t.numpy().view(np.uint64)]  # noqa: E731
    assert got(ring.odd_add(as_t(a), as_t(b))) == [(x + y) % L1 for x, y in zip(a, b)]
    assert got(ring.odd_sub(as_t(a), as_t(b))) == [(x - y) % L1 for x, y in zip(a, b)]
    assert got(ring.odd_neg(as_t(a))) == [(-x) % L1 for x in a]
    assert got(ring.odd_reduce(as_t([2**64 - 1, 5]))) == [0, 5]


def test_prf_streams():
    key = prf.new_key()
    p1, p2 = prf.PRF(key), prf.PRF(key)
    assert torch.equal(p1.stream(0, 3, 1).ring((100,)), p2.stream(0, 3, 1).ring((100,)))
    assert not torch.equal(p1.stream(0, 3, 1).ring((100,)), p1.stream(0, 3, 2).ring((100,)))
    assert not torch.equal(p1.stream(0, 3, 1).ring((100,)), prf.PRF(prf.new_key()).stream(
        0, 3, 1).ring((100,)))
    s = p1.stream(1, 2, 3)
    z = s.zp((200000,)).numpy()
    assert z.max() == 66 and z.min() == 0
    counts = np.bincount(z, minlength=67)
    chi2 = ((counts - z.size / 67) ** 2 / (z.size / 67)).sum()
    assert chi2 < 150  # 66 dof: mean 66, sd 11.5
    nz = s.zp_nonzero((10000,)).numpy()
    assert nz.min() == 1 and nz.max() == 66
    bits = s.bits((100000,))
    assert abs(bits.float().mean().item() - 0.5) < 0.01
    perms = s.permutations(2000, 16)
    assert torch.equal(perms.sort(1).values, torch.arange(16).expand(2000, 16))
    # independent per row: the position of item 0 is spread over all columns
    pos = (perms == 0).nonzero()[:, 1]
    assert len(pos.unique()) == 16 and len({tuple(r) for r in perms[:50].tolist()}) == 50


def test_no_fixed_seeds_in_mpc():
    import os
    import re
    root = os.path.dirname(prf.__file__)
    for name in os.listdir(root):
        if name.endswith('.py'):
            src = open(os.path.join(root, name)).read()
            assert 'manual_seed(' not in src and not re.search(r'default_rng\(\d', src), name


def test_certs_cli(tmp_path):
    import ssl
    import subprocess
    import sys
    out = tmp_path / 'certs'
    subprocess.run([sys.executable, 'tools/mpc_certs.py', str(out), '--server', '10.1.2.3',
                    'party.example', '--helper', '10.1.2.4'], check=True,
                   cwd=str(__import__('pathlib').Path(__file__).parents[2]))
    for f in ('ca/ca.pem', 'client/client.pem', 'server/server.key', 'helper/helper.pem'):
        assert (out / f).exists()
    from cryptography import x509
    cert = x509.load_pem_x509_certificate((out / 'server' / 'server.pem').read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert 'urn:block-relu:role:server' in san.get_values_for_type(x509.UniformResourceIdentifier)
    assert 'party.example' in san.get_values_for_type(x509.DNSName)
    ctx = ssl.create_default_context(cafile=str(out / 'ca' / 'ca.pem'))
    ctx.load_cert_chain(str(out / 'client' / 'client.pem'), str(out / 'client' / 'client.key'))
