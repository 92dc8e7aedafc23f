"""Calibrated approximate DReLUs: measured ranges, per-site shifts, refusals,
and a secure run where the calibration fixes signs a fixed shift gets wrong."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from block_relu_plugin.layers import BlockReLU
from block_relu_plugin.mpc.calibrate import (choose_shift, compared_range, format_report,
                                             measure_ranges)
from block_relu_plugin.mpc.compiler import SecureMaxPool2d, SecureReLU, compile_model
from block_relu_plugin.mpc.protocols import _pre_shift

SIZES = [[2, 2], [3, 2], [0, 1], [1, 0]]  # patches (partial ones at 7 x 7), identity, zero


class Net(nn.Module):
    """conv -> Block-ReLU -> conv -> ReLU (inplace) -> MaxPool 3x3/s2 (padded)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = BlockReLU(SIZES)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.act2 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, padding=1)

    def forward(self, x):
        return self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))


def _images(n=5, size=7, scale=3.0, seed=0):
    return scale * torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------- choose_shift
def test_choose_shift_boundaries():
    # 16 bits at 12 fractional bits: shift s holds |v| < 2^(3 + s) real units
    assert compared_range(16, 0, 12) == 8.0
    assert choose_shift(0.0, 16, 12) == 0
    assert choose_shift(8 - 2 ** -12, 16, 12, margin=1) == 0
    assert choose_shift(8.0, 16, 12, margin=1) == 1       # the range is half-open
    assert choose_shift(2.0, 16, 12, margin=4) == 1       # 4 x 2 = 8 does not fit shift 0
    assert choose_shift(20.0, 16, 12) == 4                # 80 < 128
    assert choose_shift(1e6, 64, 12) == 0                 # exact comparisons: no shift
    # the largest shift (64 - bits) compares the whole ring
    assert choose_shift(2 ** 49 - 1, 16, 12, margin=4) == 48
    with pytest.raises(ValueError, match='does not fit the ring'):
        choose_shift(2 ** 49, 16, 12, margin=4)
    for bad in (dict(bits=1), dict(bits=65), dict(margin=0.5), dict(margin=math.nan),
                dict(max_abs=-1.0), dict(max_abs=math.inf)):
        args = dict(max_abs=1.0, bits=16, frac_bits=12, margin=4.0)
        args.update(bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            choose_shift(**args)


@pytest.mark.parametrize('bits,shift', [(16, 0), (16, 4), (20, 1), (8, 9)])
def test_compared_range_is_the_protocols(bits, shift):
    """The value the secure DReLU compares keeps its sign exactly inside the range."""
    top = int(compared_range(bits, shift, 12) * 2 ** 12)  # ulp
    x = torch.tensor([top - 1, -top, top, -top - 2 ** shift], dtype=torch.int64)
    signs = (_pre_shift(x, bits, shift) >= 0).tolist()
    assert signs == [True, False, False, True]  # the last two wrapped


# ----------------------------------------------------------------- measure_ranges
def _direct_ranges(model: Net, x: torch.Tensor):
    """The compared values, computed patch by patch and window by window."""
    with torch.no_grad():
        a = model.conv1(x)
        N, C, H, W = a.shape
        block = 0.0
        for c, (bh, bw) in enumerate(SIZES):
            if bh == 0 or bw == 0:
                continue  # identity / zero channels compare nothing
            for i in range(0, H, bh):
                for j in range(0, W, bw):
                    patch = a[:, c, i:i + bh, j:j + bw]
                    div = 2 ** math.floor(math.log2(patch[0].numel()))
                    block = max(block, float(patch.sum((1, 2)).abs().max()) / div)
        b = model.conv2(model.act1(a))
        r = torch.relu(b)
        lo = F.pad(r, (1, 1, 1, 1), value=math.inf).unfold(2, 3, 2).unfold(3, 3, 2)
        hi = F.pad(r, (1, 1, 1, 1), value=-math.inf).unfold(2, 3, 2).unfold(3, 3, 2)
        spread = hi.amax((-1, -2)) - lo.amin((-1, -2))
    return {'act1': block, 'act2': float(b.abs().max()), 'pool': float(spread.max())}


def test_measure_ranges_matches_direct_computation():
    model = Net().eval()
    x = _images()
    got = measure_ranges(model, x, batch_size=2)
    want = _direct_ranges(model, x)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5), k
    # a MaxPool difference is bounded by twice the largest input
    assert got['pool'] <= 2 * got['act2']
    # the labels are the compiler's comparison sites
    prog = compile_model(model, bits=16, relu_bits=16, pool_bits=16, calibration=got,
                         trace_size=(7, 7), with_weights=False)
    assert {label for label, m in prog.sites()
            if isinstance(m, (SecureReLU, SecureMaxPool2d))} == set(got)
    # the model was not touched (the inplace ReLU saw its input before overwriting it)
    assert measure_ranges(model, x) == pytest.approx(got, rel=1e-5)


def test_measure_ranges_refuses_bad_inputs():
    x = _images()
    x[3, 0, 2, 2] = math.nan  # in the second batch: a later NaN is not hidden by max()
    with pytest.raises(ValueError, match='non-finite activations at act1'):
        measure_ranges(Net(), x, batch_size=2)
    with pytest.raises(ValueError, match='non-empty N x C x H x W'):
        measure_ranges(Net(), torch.zeros(0, 3, 7, 7))


def test_measure_ranges_labels_follow_the_split_relus():
    """ResNet blocks reuse one ReLU; sites are named after the split, as compiled."""
    from test_networks import resnet_cifar, with_spec
    model = with_spec(resnet_cifar(), 16, every=2)
    ranges = measure_ranges(model, torch.randn(2, 3, 16, 16))
    prog = compile_model(model, bits=16, calibration=ranges, trace_size=(16, 16),
                         with_weights=False)
    assert set(ranges) == {label for label, m in prog.sites() if isinstance(m, SecureReLU)}
    assert any(label.endswith('relu2') for label in ranges)


# ----------------------------------------------------------------- compile_model
@pytest.mark.parametrize('option', ['bits', 'relu_bits', 'pool_bits'])
def test_compile_below_64_bits_needs_calibration(option):
    with pytest.raises(ValueError, match=f'{option}=16 < 64.*calibration'):
        compile_model(Net(), trace_size=(7, 7), **{option: 16})
    shift = {'bits': 'shift', 'relu_bits': 'relu_shift', 'pool_bits': 'pool_shift'}[option]
    prog = compile_model(Net(), trace_size=(7, 7), **{option: 16, shift: 3})  # explicit: ok
    assert 3 in prog.options['site_shifts'].values()
    with pytest.raises(ValueError, match=f'{option} must be in 2..64, got 65'):
        compile_model(Net(), trace_size=(7, 7), **{option: 65})


def test_compile_site_shifts_from_calibration():
    model = Net().eval()
    ranges = measure_ranges(model, _images())
    with pytest.raises(ValueError, match="no range for site 'pool'"):
        compile_model(model, pool_bits=16, trace_size=(7, 7),
                      calibration={k: v for k, v in ranges.items() if k != 'pool'})
    prog = compile_model(model, bits=16, relu_bits=20, pool_bits=16, calibration=ranges,
                         trace_size=(7, 7))
    bits = {'act1': 16, 'act2': 20, 'pool': 16}
    want = {k: choose_shift(ranges[k], bits[k], 12, 4.0) for k in bits}
    assert prog.options['site_shifts'] == want
    assert {label: m.shift for label, m in prog.sites()
            if isinstance(m, (SecureReLU, SecureMaxPool2d))} == want
    rows = {r['site']: r for r in prog.calibration_report()}
    for k, r in rows.items():
        assert r['bits'] == bits[k] and r['max_abs'] == ranges[k]
        assert r['range'] == compared_range(bits[k], want[k], 12)
        # the smallest shift with the margin: one shift less would not keep it
        assert 4.0 <= r['margin'] and (want[k] == 0 or r['margin'] < 8.0)
    assert 'margin' in format_report(prog.calibration_report())
    # client and helper get the shifts, not the server's measured ranges
    pub = prog.public()
    assert pub.options['site_shifts'] == want and 'site_ranges' not in pub.options
    assert all(r['max_abs'] is None for r in pub.calibration_report())
    # the ReLU feeding the pool runs after it: the pool compares the ReLU's input
    swapped = compile_model(model, relu_bits=16, pool_bits=16, pool_before_relu=True,
                            calibration=ranges, trace_size=(7, 7))
    assert swapped.options['site_shifts']['pool'] == choose_shift(
        max(ranges['pool'], 2 * ranges['act2']), 16, 12, 4.0)


# ----------------------------------------------------------------- secure run
class Sites(nn.Module):
    """One site of each kind on its own channels: Block-ReLU (2x2), ReLU, MaxPool 2x2."""

    def __init__(self):
        super().__init__()
        self.block = BlockReLU([[2, 2], [2, 2]])
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return torch.cat([self.block(x[:, 0:2]).flatten(1), self.relu(x[:, 2:4]).flatten(1),
                          self.pool(x[:, 4:6]).flatten(1)], 1)


def _party(sess, program, shape, x=None):
    """Offline and online pass of ``program``; float outputs at the client."""
    with sess.offline():
        program(sess, shape)
    with sess.online():
        return program(sess, x if x is not None else shape)


def _secure(cluster, program, x):
    pub, shape = program.public(), tuple(x.shape)
    out = cluster.run(_party, {'client': (pub, shape, x), 'server': (program, shape),
                               'helper': (pub, shape)})
    return out['client']


def test_calibrated_shift_fixes_silent_wrong_signs(cluster):
    """Values of +-20 real units at 16 compared bits: a shift of 1 (the former
    global default) flips their signs without any error; the calibrated shifts
    give the plaintext result."""
    v = torch.tensor([[20., 20., -20., -20.], [20., 20., -20., -20.]])
    # MaxPool windows [10, 10, -10, -10]: the last pairwise difference is 20
    x = torch.stack([v, -v, v, -v, v.T.reshape(2, 4) / 2, -v / 2]).unsqueeze(0)  # (1, 6, 2, 4)
    model = Sites().eval()
    plain = model(x).double()
    bits = dict(bits=16, relu_bits=16, pool_bits=16)
    fixed = compile_model(model, shift=1, relu_shift=1, pool_shift=1, trace_size=(2, 4),
                          in_channels=6, **bits)
    ranges = measure_ranges(model, x)
    assert ranges == {'block': 20.0, 'relu': 20.0, 'pool': 20.0}
    calibrated = compile_model(model, calibration=ranges, trace_size=(2, 4), in_channels=6,
                               **bits)
    assert calibrated.options['site_shifts'] == {'block': 4, 'relu': 4, 'pool': 4}

    wrong = _secure(cluster, fixed, x)
    n = 16  # Block-ReLU and ReLU outputs (2 channels of 2 x 4); then 4 MaxPool outputs
    err = (wrong - plain).abs()[0]
    assert (err[:n] > 19).all()            # every Block-ReLU gate flipped
    assert (err[n:2 * n] > 19).all()       # every ReLU gate flipped
    assert (err[2 * n:] > 19).any()        # and MaxPool picks a wrong element
    right = _secure(cluster, calibrated, x)
    assert (right - plain).abs().max() < 0.01


# ----------------------------------------------------------------- the cost tool
def _secure_cost_tool():
    import importlib.util
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        'secure_cost', os.path.join(root, 'tools', 'analysis', 'secure_cost.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool, os.path.join(root, 'tests', 'data', 'configs', 'resnet18_cifar.py')


@pytest.mark.parametrize('option,value', [('--bits', '0'), ('--bits', '1'), ('--bits', '100'),
                                          ('--relu-bits', '65'), ('--pool-bits', 'x')])
def test_secure_cost_checks_bits_first(capsys, option, value):
    tool, config = _secure_cost_tool()
    with pytest.raises(SystemExit):
        tool.main(['no_such_config.py', option, value])  # refused before the config loads
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in err and '2..64' in err and value in err


def test_secure_cost_below_64_bits_needs_no_calibration(capsys):
    import json
    tool, config = _secure_cost_tool()
    tool.main([config, '--shape', '32', '32', '--bits', '16', '--json'])
    out = capsys.readouterr()
    assert json.loads(out.out)['total']['all'] > 0
    assert 'do not depend on the pre-shift' in out.err


def test_published_site_shifts_compile_the_same_program():
    """Client and helper compile from the server's published shifts, without
    the calibration ranges, and get the same per-site shifts."""
    model = Net().eval()
    ranges = measure_ranges(model, _images())
    server = compile_model(model, bits=16, relu_bits=16, pool_bits=16, calibration=ranges,
                           trace_size=(7, 7))
    shifts = server.options['site_shifts']
    other = compile_model(model, bits=16, relu_bits=16, pool_bits=16, site_shifts=shifts,
                          with_weights=False, trace_size=(7, 7))
    assert other.options['site_shifts'] == shifts and not other.options['site_ranges']
    with pytest.raises(ValueError, match='site_shifts'):
        compile_model(model, bits=16, relu_bits=16, pool_bits=16, trace_size=(7, 7),
                      site_shifts={k: 60 for k in shifts}, with_weights=False)
