"""The compiler: folding, per-site options, refusals (in-process, no parties)."""
import pickle
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_networks import deeplab_mnv2, deeplab_r18v1c, resnet_cifar, resnet_maxpool, with_spec

from block_relu_plugin.conversion import relu6_to_relu
from block_relu_plugin.mpc import ring
from block_relu_plugin.mpc.calibrate import choose_shift, measure_ranges
from block_relu_plugin.mpc.compiler import (SecureConv2d, SecureIdentity, SecureLinear,
                                            SecureMaxPool2d, SecureReLU, UnsupportedLayerError,
                                            _fold_bn, compile_model)
from block_relu_plugin.mpc.costmodel import program_costs


class Resize(nn.Module):
    def forward(self, x):
        # (bilinear resizes compile; an antialiased one does not)
        return F.interpolate(x, size=(5, 5), mode='bilinear', antialias=True)


class Scale(nn.Module):
    def forward(self, x):
        return x * 0.5


class TwoUses(nn.Module):
    """A conv output used by its BN and by a residual add: cannot be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


@pytest.mark.parametrize('model,where,what', [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), '1', 'GELU'),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6()), '1', 'ReLU6'),
    (nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1)), '0', 'BatchNorm2d'),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.LayerNorm([4, 32, 32])), '1', 'LayerNorm'),
    (nn.Sequential(nn.Conv2d(3, 4, 1), Resize()), '1', 'antialias'),
    (nn.Sequential(nn.Conv2d(3, 4, 1), Scale()), '1', 'mul'),
    (TwoUses(), 'bn', 'BatchNorm2d'),
])
def test_unsupported_refused_by_name(model, where, what):
    with pytest.raises(UnsupportedLayerError) as e:
        compile_model(model.eval())
    assert where in str(e.value) and what in str(e.value)


def test_mobilenetv2_needs_relu6_to_relu():
    with pytest.raises(UnsupportedLayerError, match=r'backbone\.conv1\.activate \(ReLU6\)'):
        compile_model(deeplab_mnv2(), with_weights=False)
    compile_model(relu6_to_relu(deeplab_mnv2()), with_weights=False)


def test_fold_bn_matches_float():
    model = resnet_cifar()
    conv, bn = model.backbone.conv1, model.backbone.norm1
    x = torch.randn(2, 3, 8, 8)
    w, b = _fold_bn(conv, bn)
    want = bn(conv(x)).double()
    assert torch.allclose(F.conv2d(x.double(), w, b, padding=1), want, atol=1e-5)
    prog = compile_model(model)
    sconv = prog.model.backbone.conv1
    assert isinstance(sconv, SecureConv2d) and isinstance(prog.model.backbone.norm1,
                                                          SecureIdentity)
    assert torch.equal(sconv.weight, ring.encode(w, 12))
    assert torch.equal(sconv.bias, ring.encode(b, 12))


def test_public_program_has_no_weights_and_pickles():
    prog = compile_model(resnet_cifar())
    pub = prog.public()
    convs = [m for m in pub.model.modules() if isinstance(m, SecureConv2d)]
    assert convs and all(m.weight is None and m.bias is None for m in convs)
    assert all(m.weight is not None for m in prog.model.modules()
               if isinstance(m, SecureConv2d))
    # The local launcher's pipe pickles it into the party processes.
    again = pickle.loads(pickle.dumps(pub))
    assert again.uid == prog.uid and len(again.sites()) == len(prog.sites())
    # no parameter or buffer value is left anywhere in the public program
    assert all(t.is_meta for t in list(pub.model.parameters()) + list(pub.model.buffers()))


class Extras(nn.Module):
    """Weights the forward never uses: an unused conv and linear, a custom buffer,
    tensors in a plain attribute and inside a helper object."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)
        self.unused_conv = nn.Conv2d(3, 4, 3)
        self.unused_fc = nn.Linear(4, 4)
        self.register_buffer('secret', torch.randn(7))
        self.cache = {'scale': [torch.randn(6)]}
        self.holder = types.SimpleNamespace(table=torch.randn(5))

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def _all_tensors(obj, seen):
    """Every tensor reachable from obj through attributes and containers."""
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type)):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    else:
        items = list(getattr(obj, '__dict__', {}).values())
    return [t for v in items for t in _all_tensors(v, seen)]


def test_public_program_carries_no_tensor_values():
    model = Extras().eval()
    prog = compile_model(model, trace_size=(8, 8))
    pub = prog.public()
    secrets = [t.detach() for t in _all_tensors(model, set())]
    secrets += [m.weight for _, m in prog.sites() if isinstance(m, (SecureConv2d, SecureLinear))]
    assert len(secrets) >= 10
    # every tensor left anywhere in the public model is shape-only
    left = _all_tensors(pub.model, set())
    assert left and all(t.is_meta or t.numel() == 0 for t in left)
    # shapes survive (the unused conv keeps its parameter's shape)
    assert pub.model.unused_conv.weight.shape == model.unused_conv.weight.shape
    # and no weight's bytes reach what the client and the helper receive
    blob = pickle.dumps(pub)
    for t in secrets:
        assert t.contiguous().numpy().tobytes() not in blob, tuple(t.shape)
    # the server's program keeps its weights
    assert torch.equal(prog.model.unused_conv.weight, model.unused_conv.weight)


def test_per_site_bits():
    model = with_spec(resnet_maxpool(), 32, every=2)
    ranges = measure_ranges(model, torch.randn(2, 3, 32, 32))
    prog = compile_model(model, bits=16, calibration=ranges, with_weights=False)
    relus = {label: m for label, m in prog.sites() if isinstance(m, SecureReLU)}
    block = {k: m for k, m in relus.items() if m.block_sizes is not None}
    plain = [m for m in relus.values() if m.block_sizes is None]
    assert block and plain
    # Block-ReLU sites (mixed codes) compare 16 bits after their calibrated
    # pre-shift; plain ReLU sites and the MaxPool stay exact
    assert all(m.bits == 16 and m.shift == choose_shift(ranges[k], 16) for k, m in block.items())
    assert len({m.shift for m in block.values()}) > 1  # ranges differ per site
    assert all(m.bits == 64 and m.shift == 0 for m in plain)
    pools = [m for _, m in prog.sites() if isinstance(m, SecureMaxPool2d)]
    assert len(pools) == 1 and pools[0].bits == 64


def test_segmentor_structure_any_size():
    prog = compile_model(with_spec(deeplab_r18v1c(), 32, every=2), with_weights=False)
    assert prog.task == 'segmentation'
    assert not any(label.startswith('auxiliary_head') for label, _ in prog.sites())
    # the ASPP image-pool resize is a local resize, at any input size
    for size in ((32, 32), (48, 40)):
        rep = program_costs(prog, (1, 3) + size)
        assert 'decode_head.image_pool.1.conv' in rep.layers
        assert rep.layers['output'].online == 8 * 5 * (-(-size[0] // 8)) * (-(-size[1] // 8))


def test_pool_before_relu_swaps_stem():
    model = resnet_maxpool()
    prog = compile_model(model, pool_before_relu=True, with_weights=False)
    stem = prog.model.backbone
    assert isinstance(stem.relu, SecureIdentity)
    assert isinstance(stem.maxpool, nn.Sequential)
    plain = compile_model(model, with_weights=False)
    a = program_costs(prog, (1, 3, 32, 32)).layers
    b = program_costs(plain, (1, 3, 32, 32)).layers
    # the stem ReLU runs on the pooled map (8 x 8 x 8 instead of 8 x 16 x 16), same label
    from block_relu_plugin.mpc import cost
    assert a['backbone.relu'] == cost.ours.relu(8 * 8 * 8, 64, 8 * 8)
    assert b['backbone.relu'] == cost.ours.relu(8 * 16 * 16, 64, 16 * 16)


def test_blockrelu_dispatch_all_ones_is_relu():
    m = SecureReLU('x', 64, 0, np.ones((4, 2), dtype=np.int64))
    assert m.block_sizes is None
