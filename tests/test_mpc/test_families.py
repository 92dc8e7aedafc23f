"""The common convnet families, compiled and run by three party processes.

Upstream mmpretrain / mmseg configs (``tests/upstream.py``: upstream
architecture, tiny widths) plus two hand-built nets (a VGG11-like stack with
MaxPools and a fixed-size classifier, and a net with every resize mode and
adaptive pooling size). Each secure run is checked against the float model
(fixed-point error, same predictions) and its measured bytes against the
cost model, per layer and per (phase, sender, receiver). Networks that are
not ReLU networks are refused by name, with the module path, the layer and
what would make them compile.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from block_relu_plugin.conversion import relu6_to_relu
from block_relu_plugin.mpc.compiler import UnsupportedLayerError, compile_model
from block_relu_plugin.mpc.costmodel import predict_costs
from block_relu_plugin.mpc.infer import secure_inference

from networks import randomise_bn
from test_networks import check_agreement, check_bytes, resnet_cifar, with_spec
from upstream import UPSTREAM, build_upstream


def upstream(name: str, seed: int = 0) -> nn.Module:
    model = build_upstream(name, seed)
    if UPSTREAM[name][3].get('relu6_to_relu'):
        model = relu6_to_relu(model)
    return randomise_bn(model, seed)


class VGGLike(nn.Module):
    """VGG11's layout (1, 1, 2, 2, 2 convs per stage, MaxPool 2x2 after each,
    a fixed-size FC classifier) at a few channels."""

    def __init__(self, size: int = 32, width: int = 4, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for stage, n in enumerate((1, 1, 2, 2, 2)):
            cout = width * 2 ** min(stage, 3)
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = size // 32
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, 16),
                                        nn.ReLU(), nn.Dropout(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class Resizes(nn.Module):
    """Every resize mode and adaptive pooling size, concatenated (a decoder)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(s) for s in (1, 2, 3, 6))
        self.up = nn.Upsample(scale_factor=2, mode='nearest')
        self.fuse = nn.Conv2d(4 * 10, 5, 1)

    def forward(self, x):
        y = self.stem(x)                                      # 7 x 7 from 13 x 13
        h, w = y.shape[2:]

        def back(t, mode='bilinear', **kw):                  # to h x w
            return F.interpolate(t, size=(h, w), mode=mode, **kw)
        outs = [y,
                F.interpolate(y, scale_factor=1.5, mode='bilinear')[..., :h, :w],
                back(F.interpolate(y, size=(5, 4), mode='bilinear', align_corners=True),
                     align_corners=True),
                back(self.up(y), 'nearest-exact'),
                back(F.adaptive_avg_pool2d(y, (3, None)), 'bicubic', align_corners=False),
                back(F.interpolate(y, scale_factor=0.5, mode='nearest'), 'nearest')]
        outs += [back(p(y), align_corners=False) for p in self.pools]
        return self.fuse(torch.cat(outs, 1)).flatten(1)


def _images(n, size, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _run(cluster, model, size, tol=0.01, rel_tol=0.0, flip_tol=0.0):
    """One secure run: measured bytes == cost model, logits == float within
    ``tol + rel_tol * logit scale`` (errors accumulate with depth, in proportion
    to the activations), same predictions."""
    res = secure_inference(model, images=_images(1, size, seed=1), cluster=cluster)
    check_bytes(res)
    scale = float(res['plain_logits'].abs().max())
    check_agreement(res, tol + rel_tol * scale, flip_tol)
    return res


# ----------------------------------------------------------------- compile
@pytest.mark.parametrize('name', ['resnet18', 'resnext50', 'vgg11', 'mobilenet_v2', 'fcn',
                                  'pspnet', 'deeplabv3', 'deeplabv3plus', 'unet'])
def test_upstream_compiles(name):
    size = UPSTREAM[name][2]
    prog = compile_model(upstream(name), with_weights=False, trace_size=(size, size))
    labels = [label for label, _ in prog.sites()]
    assert labels and all(labels)  # every secure module is named by its path


# ----------------------------------------------------------------- secure runs
@pytest.mark.parametrize('name,size', [
    ('resnext50', 16),      # grouped 3x3 convs (ResNeXt Bottleneck)
    ('mobilenet_v2', 32),   # depthwise convs, relu6_to_relu
])
def test_classifier_families(cluster, name, size):
    _run(cluster, upstream(name), size, rel_tol=0.005)


def test_resnet18_cifar_and_vgg_like(cluster):
    _run(cluster, resnet_cifar(), 16)
    res = _run(cluster, randomise_bn(VGGLike(), 1), 32)   # MaxPool + fixed-size FC
    assert res['measured']['features.3'].online > 0      # the first MaxPool's comparisons


@pytest.mark.parametrize('name', [
    'fcn',
    'pspnet',          # adaptive pooling 1, 2, 3, 6 (overlapping windows on 4x4) + resize
    'deeplabv3',       # ASPP: dilated convs, image pool (1x1 resize)
    'deeplabv3plus',   # depthwise-separable ASPP, resize to 1/4, concat
    'unet',            # upsampling decoder (bilinear x2 + conv), concat
])
def test_segmentor_families(cluster, name):
    model = upstream(name)
    if name in ('pspnet', 'unet'):  # Block-ReLU sites in the new families too
        model = with_spec(model, 32, every=3)
    res = _run(cluster, model, 32, rel_tol=0.005, flip_tol=0.25)
    assert res['task'] == 'segmentation' and res['predictions'][0].shape == (32, 32)
    assert not any(k.startswith('auxiliary_head') for k in res['measured'])


def test_every_resize_mode(cluster):
    torch.manual_seed(0)
    _run(cluster, Resizes().eval(), 13)


# ----------------------------------------------------------------- trace size
def test_trace_size_is_the_size_asked_for():
    model = randomise_bn(VGGLike(size=64), 2)   # its FC fits 64 x 64 inputs only
    with pytest.raises(ValueError, match='32x32'):
        compile_model(model, with_weights=False)  # the default 32 x 32 trace
    prog = compile_model(model, with_weights=False, trace_size=(64, 64))
    assert prog.options['in_channels'] == 3
    rep = predict_costs(model, (64, 64))         # traces at the size asked for
    assert rep.total.online > 0 and rep.input_shapes == [(1, 3, 64, 64)]


# ----------------------------------------------------------------- refusals
def _refusal(model, size=32) -> str:
    with pytest.raises(UnsupportedLayerError) as e:
        compile_model(model, with_weights=False, trace_size=(size, size))
    return str(e.value)


def test_se_resnet_refused_by_name():
    msg = _refusal(upstream('seresnet50'))
    assert msg.startswith('backbone.layer1.0.se_layer.'), msg
    assert '(Sigmoid)' in msg
    assert 'a sigmoid gate is not a ReLU network' in msg
    assert 'only ReLU-family nonlinearities' in msg
    assert 'to compile,' in msg


class _Act(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.act = act

    def forward(self, x):
        return self.act(self.relu(self.conv(x)))


@pytest.mark.parametrize('act,layer,what', [
    (nn.Hardswish(), 'Hardswish', 'an HSwish activation'),
    (nn.GELU(), 'GELU', 'a GELU activation'),
    (nn.Hardsigmoid(), 'Hardsigmoid', 'a hard-sigmoid gate'),
    (nn.ReLU6(), 'ReLU6', 'relu6_to_relu'),
])
def test_activation_refused_by_name(act, layer, what):
    msg = _refusal(_Act(act))
    assert msg.startswith(f'act ({layer}): '), msg
    assert what in msg and 'to compile,' in msg


def test_mmcv_hswish_refused_by_name():
    from mmcv.cnn.bricks.hswish import HSwish
    msg = _refusal(_Act(HSwish()))
    assert msg.startswith('act (') and 'HSwish activation' in msg, msg


class _Head(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x) * x


class _DirectHead(nn.Module):
    """Calls its head's ``forward`` directly, as mmseg segmentors do (no hooks fire)."""

    def __init__(self, top_level_gate=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = _Head()
        self.top_level_gate = top_level_gate

    def forward(self, x):
        y = self.conv(x)
        return torch.sigmoid(y) if self.top_level_gate else self.head.forward(y)


def test_functional_refusals_name_the_module():
    msg = _refusal(_DirectHead())
    assert msg.startswith('head (_Head, torch.sigmoid): a sigmoid gate'), msg
    msg = _refusal(_DirectHead(top_level_gate=True))
    assert msg.startswith('<top level of _DirectHead> (_DirectHead, torch.sigmoid)'), msg


def test_antialiased_resize_refused():
    class Net(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=(5, 5), mode='bilinear', antialias=True)
    msg = _refusal(Net(), 16)
    assert msg.startswith('<top level of Net>') and 'antialias=False' in msg, msg
