"""Every protocol against plaintext, in one 3-party session over real TLS sockets.

Each check runs an offline and an online pass, reveals the result to the
client, and compares the bytes every party sent with ``cost.ours``.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mpc_programs as MP
from mpc_util import ROLES, all3

from block_relu_plugin.layers.block_relu import BlockReLU
from block_relu_plugin.mpc import cost, ring
from block_relu_plugin.mpc.ring import ring_conv2d_reference

EDGE = [0, -1, 1, 2**62, -2**62, 2**63 - 1, -2**63, -2**63 + 1, 2**63 - 2, 4096, -4096]


def edge_input(shape, lo=-2**40, hi=2**40):
    x = torch.randint(lo, hi, shape, dtype=torch.int64)
    flat = x.view(-1)
    flat[:len(EDGE)] = torch.tensor(EDGE, dtype=torch.int64)
    return x


def check_bytes(results, expected: cost.Cost, label):
    """The meter of every party agrees with the cost formula, message for message."""
    for role in ROLES:
        records = results[role][1] if isinstance(results[role], tuple) else results[role]
        sent = {}
        for r in records:
            if r.direction == 'send' and r.label == label:
                sent[(r.phase, r.peer)] = sent.get((r.phase, r.peer), 0) + r.nbytes
        assert sent == expected.sent_by(role), (role, sent, expected.sent_by(role))
        recvd = {}
        for r in records:
            if r.direction == 'recv' and r.label == label:
                recvd[(r.phase, r.peer)] = recvd.get((r.phase, r.peer), 0) + r.nbytes
        exp_recv = {(p, s): v for (p, s, d), v in expected.parts.items() if d == role and v}
        assert recvd == exp_recv, (role, recvd, exp_recv)


def test_mult(cluster):
    x, y = edge_input((2, 3, 4, 5)), edge_input((2, 3, 4, 5))
    res = cluster.run(MP.mult_program, all3(x, y))
    assert torch.equal(res['client'][0], x * y)  # ring product, wraps
    check_bytes(res, cost.ours.mult(x.numel()), 'mult')


def test_drelu_exact_all_int64(cluster):
    x = torch.cat([edge_input((3, 500), -2**63, 2**63 - 1).view(-1),
                   torch.arange(-300, 300), edge_input((1000,), -2**16, 2**16)])
    res = cluster.run(MP.op_program, all3('drelu', x, {}))
    assert torch.equal(res['client'][0], (x >= 0).long())
    check_bytes(res, cost.ours.drelu(x.numel(), 64), 'drelu')


def _odd(x):
    """The Z_{2^64 - 1} value of unsigned int64 words (all-ones is 0)."""
    return torch.where(x == -1, torch.zeros_like(x), x)


def test_share_convert_exact(cluster):
    x = torch.cat([edge_input((2000,), -2**63, 2**63 - 1), edge_input((500,))])
    res = cluster.run(MP.odd_program, all3('share_convert', x))
    got = res['client'][0]
    # a mod (2^64 - 1) for every a, including -1 ulp (2^64 - 1 -> 0)
    assert torch.equal(got, _odd(x))
    assert not (got == -1).any()
    check_bytes(res, cost.ours.share_convert(x.numel()), 'share_convert')


def test_compute_msb_exact(cluster):
    x = _odd(torch.randint(-2**63, 2**63 - 1, (2000,)))
    x[:9] = torch.tensor([0, 1, 2, 2**63 - 1, -2**63, -2**63 + 1, -2, -3, 2**62])
    res = cluster.run(MP.odd_program, all3('compute_msb', x))
    assert torch.equal(res['client'][0], ring.msb(x))  # -2 = 2^64 - 2: MSB 1
    check_bytes(res, cost.ours.compute_msb(x.numel()), 'compute_msb')


def test_drelu_securenn_wrong_only_at_minus_one(cluster):
    x = edge_input((1500,), -2**63, 2**63 - 1)
    res = cluster.run(MP.op_program, all3('drelu_securenn', x, {}))
    got, want = res['client'][0], (x >= 0).long()
    bad = got != want
    assert torch.equal(x[bad], torch.tensor([-1]))  # 2^64 - 1 = 0 mod 2^64 - 1
    assert got[x == -1].item() == 1
    check_bytes(res, cost.ours.drelu_securenn(x.numel()), 'drelu_securenn')


@pytest.mark.parametrize('bits,shift', [(16, 0), (16, 5), (32, 3)])
def test_drelu_approximate(cluster, bits, shift):
    lim = 2 ** (bits - 1 + shift)
    # documented range: -2^(bits-1+shift) + 2^shift <= x < 2^(bits-1+shift)
    x = torch.randint(-lim + 2**shift, lim, (3000,), dtype=torch.int64)
    x[:6] = torch.tensor([0, -1, 1, lim - 1, -lim + 2**shift, 2**shift])
    res = cluster.run(MP.op_program, all3('drelu', x, dict(bits=bits, shift=shift)))
    got = res['client'][0]
    # exact for |x| >= 2^shift (local truncation is off by at most one ulp of 2^shift)
    far = x.abs() >= 2 ** shift
    assert torch.equal(got[far], (x[far] >= 0).long())
    assert set(got.tolist()) <= {0, 1}
    check_bytes(res, cost.ours.drelu(x.numel(), bits), 'drelu')


def test_relu(cluster):
    """Exact over all of int64 (the 64-bit ReLU fuses the product into the DReLU)."""
    x = edge_input((2, 4, 6, 6), -2**63, 2**63 - 1)
    res = cluster.run(MP.op_program, all3('relu', x, {}))
    assert torch.equal(res['client'][0], x.clamp(min=0))
    check_bytes(res, cost.ours.relu(x.numel(), 64, 6 * 6), 'relu')  # bits pad per channel


CONVS = [
    ((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 9, 9), (5, 3, 3, 3), dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1))),
    ((2, 6, 5, 5), (6, 1, 3, 3), dict(padding=1, groups=6)),
]


@pytest.mark.parametrize('xs,ws,kw', CONVS)
def test_conv2d_exact(cluster, xs, ws, kw):
    x = edge_input(xs, -2**30, 2**30)
    w = torch.randint(-2**14, 2**14, ws)
    res = cluster.run(MP.conv_program, all3(x, w, None, dict(shift=0, **kw), 2))
    ref = ring_conv2d_reference(x, w, **kw)
    for run in res['client']:
        assert torch.equal(run[0], ref)
    y = ref.numel()
    # the masked weight crosses once per session; later runs pay only offline + online
    check_bytes({r: res[r][0] for r in ROLES}, cost.ours.conv2d(x.numel(), w.numel(), y), 'conv')
    check_bytes({r: res[r][1] for r in ROLES},
                cost.ours.conv2d(x.numel(), w.numel(), y, first_use=False), 'conv')


def test_conv2d_truncation_and_bias(cluster):
    f = 12
    xf = torch.randn(2, 3, 6, 6)
    wf = torch.randn(4, 3, 3, 3) * 0.3
    bf = torch.randn(4)
    x, w, b = ring.encode(xf), ring.encode(wf), ring.encode(bf)
    res = cluster.run(MP.conv_program, all3(x, w, b, dict(padding=1)))
    got = ring.decode(res['client'][0][0])
    ref = F.conv2d(xf.double(), wf.double(), bf.double(), padding=1)
    assert (got - ref).abs().max() < 0.02
    exact = (ring_conv2d_reference(x, w, padding=1) >> f) + b.view(1, -1, 1, 1)
    assert (res['client'][0][0] - exact).abs().max() <= 1  # local truncation: 1 ulp


def test_linear(cluster):
    x = edge_input((3, 20), -2**30, 2**30)
    w = torch.randint(-2**14, 2**14, (7, 20))
    b = torch.randint(-2**10, 2**10, (7,))
    res = cluster.run(MP.conv_program, all3(x, w, b, dict(shift=0)))
    assert torch.equal(res['client'][0][0], x @ w.t() + b)
    check_bytes({r: res[r][0] for r in ROLES}, cost.ours.linear(60, 140, 21), 'conv')


def test_block_relu_matches_plaintext(cluster):
    torch.manual_seed(0)  # test data only; the protocol draws no seeded randomness
    C, H, W = 7, 9, 7
    sizes = np.array([[1, 1], [2, 2], [0, 1], [3, 2], [1, 0], [9, 7], [2, 5]])
    xf = torch.randn(2, C, H, W)
    x = ring.encode(xf)
    ref = BlockReLU(sizes)(ring.decode(x))  # same fixed-point input
    for bits, shift in [(64, 0), (16, 4)]:
        res = cluster.run(MP.op_program, all3('block_relu', x, dict(block_sizes=sizes,
                                                                   bits=bits, shift=shift)))
        got = ring.decode(res['client'][0])
        assert (got - ref).abs().max() < 1e-9 if bits == 64 else (got != ref).float().mean() < 0.01
        check_bytes(res, cost.ours.block_relu(sizes, 2, H, W, bits), 'block_relu')


def test_block_relu_gate_at_zero_sum_matches_plaintext(cluster):
    """The method gates on mean > 0: a patch summing to exactly 0 (and to -1,
    +1 ulp) gets the same gate in the secure layer as in plaintext."""
    u = 1  # one ulp
    patches = [[1, -1], [-1, 1], [0, 0], [4096, -4096], [1, 0], [0, -1], [2, -1], [-2, 1]]
    x = torch.tensor(patches, dtype=torch.int64).reshape(1, len(patches), 1, 2) * u
    sizes = [[1, 2]] * len(patches)
    ref = BlockReLU(sizes)(ring.decode(x))
    res = cluster.run(MP.op_program, all3('block_relu', x, dict(block_sizes=sizes)))
    assert torch.equal(ring.decode(res['client'][0]), ref)
    assert torch.equal(res['client'][0][0, :3], torch.zeros(3, 1, 2, dtype=torch.int64))


def test_block_relu_all_identity_is_free(cluster):
    x = edge_input((1, 2, 4, 4))
    res = cluster.run(MP.op_program, all3('block_relu', x, dict(block_sizes=[[0, 1], [1, 0]])))
    assert torch.equal(res['client'][0][:, 0], x[:, 0])
    assert (res['client'][0][:, 1] == 0).all()
    check_bytes(res, cost.Cost(), 'block_relu')


@pytest.mark.parametrize('kw', [dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0))])
def test_max_pool(cluster, kw):
    # documented range: pairwise differences must not wrap, |x| < 2^62
    x = torch.randint(-2**40, 2**40, (2, 3, 7, 8), dtype=torch.int64)
    x.view(-1)[:4] = torch.tensor([0, -1, 1, -2**40])
    res = cluster.run(MP.op_program, all3('max_pool2d', x, kw))
    ref = F.max_pool2d(x.double(), **kw)  # exact: |x| < 2^53
    assert torch.equal(res['client'][0], ref.long())
    k = kw['kernel_size']
    k = k * k if isinstance(k, int) else k[0] * k[1]
    check_bytes(res, cost.ours.max_pool2d(ref.numel(), k, 64, ref.shape[2] * ref.shape[3]),
                'max_pool2d')


def test_avg_pools_and_truncate(cluster):
    x = edge_input((2, 3, 7, 7), -2**40, 2**40)
    x.view(-1)[:len(EDGE)] = 0
    for name, kw, ref in [
            ('avg_pool2d', dict(kernel_size=3, stride=2, padding=1),
             torch.div(F.avg_pool2d(x.double(), 3, 2, 1) * 9, 9, rounding_mode='floor')),
            ('avg_pool2d', dict(kernel_size=(2, 3), stride=1, count_include_pad=False),
             F.avg_pool2d(x.double(), (2, 3), 1).floor()),
            ('global_avg_pool', {}, x.double().mean((2, 3), keepdim=True).floor()),
            ('truncate', dict(bits=12), torch.div(x.double(), 4096).floor())]:
        res = cluster.run(MP.op_program, all3(name, x, kw))
        diff = res['client'][0].double() - ref
        assert diff.abs().max() <= 2, name  # floor of the exact value, -1 ulp per share
        check_bytes(res, cost.Cost(), name)


def test_batched_relu_many_images(cluster):
    x = edge_input((5, 2, 3, 3), -2**50, 2**50)
    res = cluster.run(MP.op_program, all3('relu', x, dict(bits=64)))
    assert torch.equal(res['client'][0], x.clamp(min=0))
