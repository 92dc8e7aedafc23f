"""Generic ReLU splitting: every ReLU application is a site (upstream configs, user blocks)."""
import copy
import pickle
import runpy
import sys

import numpy as np
import pytest
import torch
import torch.utils.checkpoint as cp
from mmengine.config import Config
from torch import nn

from block_relu_plugin import BlockReLU, BlockReLUSpec
from block_relu_plugin.conversion import (NoSitesError, ReLUCalls, TraceError, convert_block_relu,
                                          find_relu_sites, relu6_to_relu, run_tensor_forward,
                                          split_and_find_sites, split_reused_relus)
from block_relu_plugin.models.block_relu_cfg import apply_block_relu_cfg, set_default_input_size

from test_conversion import CountReLUCalls
from upstream import UPSTREAM, build_upstream, upstream_config

TOOLS = __file__.rsplit('/tests/', 1)[0] + '/tools'


def prepared(name, **model):
    net = build_upstream(name, **model)
    if UPSTREAM[name][3].get('relu6_to_relu'):
        relu6_to_relu(net)
    return net


@pytest.fixture(scope='module', params=list(UPSTREAM))
def upstream(request):
    name = request.param
    return name, prepared(name), UPSTREAM[name][2]


def test_sites_equal_relu_applications(upstream):
    name, model, size = upstream
    with torch.no_grad(), CountReLUCalls() as counter:
        run_tensor_forward(copy.deepcopy(model).eval(), torch.zeros(1, 3, size, size))
    split = split_reused_relus(copy.deepcopy(model), size)
    sites = find_relu_sites(split, size)
    assert split_and_find_sites(copy.deepcopy(model), size) == sites  # one trace, same sites
    assert counter.calls > 0
    assert len(sites) == counter.calls
    assert len({s.name for s in sites}) == len(sites)
    # Splitting a split model changes nothing.
    assert [s.name for s in find_relu_sites(split_reused_relus(split, size), size)] == \
        [s.name for s in sites]


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_identity_conversion_is_bit_exact(upstream, mode):
    name, model, size = upstream
    original = copy.deepcopy(model)
    converted = split_reused_relus(copy.deepcopy(model), size)
    spec = BlockReLUSpec.all_relu(find_relu_sites(converted, size))
    converted = convert_block_relu(converted, spec, input_size=size)
    assert sum(isinstance(m, BlockReLU) for m in converted.modules()) == len(spec.sites)
    x = torch.randn(2, 3, size, size)
    outs = []
    for net in (original, converted):
        getattr(net, mode)()
        torch.manual_seed(1)  # dropout
        xi = x.clone().requires_grad_()
        out = run_tensor_forward(net, xi)
        out = out[-1] if isinstance(out, tuple) else out
        out.square().sum().backward()
        outs.append((out.detach(), xi.grad))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    assert original.state_dict().keys() == converted.state_dict().keys()
    converted.load_state_dict(original.state_dict())
    original.load_state_dict(converted.state_dict())


def _names(model, size):
    return [s.name for s in find_relu_sites(split_reused_relus(model, size), size)]


def test_known_blocks_and_subclasses_keep_readable_names():
    # ResNeXt's Bottleneck subclasses ResNet's and keeps its forward: relu1..3.
    names = _names(build_upstream('resnext50'), 32)
    assert 'backbone.layer1.0.relu3' in names and not any('.relu.' in n for n in names)
    # SE-ResNet's block has its own forward: the generic split, relu.0..2.
    model = build_upstream('seresnet50')
    names = _names(model, 32)
    block = [n for n in names if n.startswith('backbone.layer1.0.')]
    assert block == ['backbone.layer1.0.relu.0', 'backbone.layer1.0.relu.1',
                     'backbone.layer1.0.se_layer.conv1.activate', 'backbone.layer1.0.relu.2']
    assert isinstance(model.backbone.layer1[0].relu, ReLUCalls)


def test_split_models_pickle_in_a_fresh_process(monkeypatch):
    import block_relu_plugin.conversion.split as split_module
    model = split_reused_relus(build_upstream('resnext50'), 32).eval()
    blob = pickle.dumps(model)
    # What a fresh process lacks: the split classes, made on first use.
    name = type(model.backbone.layer1[0]).__qualname__
    monkeypatch.delitem(vars(split_module), name)
    monkeypatch.setattr(split_module, '_SPLIT_CLASSES', {})
    again = pickle.loads(blob)
    assert type(again.backbone.layer1[0]).__qualname__ == name
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(run_tensor_forward(again, x), run_tensor_forward(model, x))


def _mixed_spec(sites, rename=lambda n: n):
    rng = np.random.default_rng(0)
    return BlockReLUSpec({rename(s.name): rng.integers(1, 4, (s.channels, 2)) for s in sites})


def test_generic_split_routes_like_the_known_blocks():
    """A user subclass with its own forward (the generic path) computes what the known path does.

    Patch sizes differ per site, so a call routed to the wrong copy changes
    the result; with_cp recomputes blocks in backward, and two forwards before
    one backward (a siamese loss) recompute each block twice.
    """
    from mmpretrain.models.backbones.resnet import Bottleneck

    class UserBottleneck(Bottleneck):
        def forward(self, x):
            return Bottleneck.forward(self, x)

    known = build_upstream('resnet50', backbone=dict(with_cp=True))
    generic = copy.deepcopy(known)
    for m in generic.modules():
        if type(m) is Bottleneck:
            m.__class__ = UserBottleneck
    split_reused_relus(known, 32)
    split_reused_relus(generic, 32)
    sites = find_relu_sites(known, 32)
    assert isinstance(generic.backbone.layer2[1].relu, ReLUCalls)

    def rename(n):  # layer1.0.relu2 -> layer1.0.relu.1
        head, _, last = n.rpartition('.')
        return f'{head}.relu.{int(last[4:]) - 1}' if last[4:].isdigit() else n

    convert_block_relu(known, _mixed_spec(sites), input_size=32)
    convert_block_relu(generic, _mixed_spec(sites, rename), input_size=32)
    results = []
    for net in (known, generic):
        net.train()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0),
                        requires_grad=True)
        loss = sum(run_tensor_forward(net, x * s).square().sum() for s in (1.0, -0.5))
        loss.backward()
        results.append((loss.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


class _Block(nn.Module):
    """A user block: one ReLU at two call sites, the first under checkpointing."""

    def __init__(self, c, relu=None):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, 1)
        self.relu = relu or nn.ReLU(inplace=True)

    def forward(self, x):
        def inner(x):
            return self.conv2(self.relu(self.conv1(x)))
        out = cp.checkpoint(inner, x, use_reentrant=False) if x.requires_grad else inner(x)
        return self.relu(out)


class _Loop(nn.Module):
    """One ReLU applied in a loop (one call site, three applications), as Res2Net does."""

    def __init__(self, c):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(3))
        self.relu = nn.ReLU()

    def forward(self, x):
        def inner(x):
            for conv in self.convs:
                x = self.relu(conv(x))
            return x
        return cp.checkpoint(inner, x, use_reentrant=False) if x.requires_grad else inner(x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.ReLU()  # one module held by two blocks
        self.a = _Block(2, shared)
        self.b = _Block(4, shared)
        self.loop = _Loop(8)

    def forward(self, x):
        return self.loop(self.b(self.a(x)))


def _reference(net, x, patches):
    """``_Net`` written out with one activation per application; ``patches[i]`` for the i-th."""
    acts = iter(BlockReLU(torch.full((c, 2), p)) for c, p in zip((2, 4, 4, 8, 8, 8, 8), patches))
    for blk in (net.a, net.b):
        x = next(acts)(blk.conv1(x))
        x = next(acts)(blk.conv2(x))
    for conv in net.loop.convs:
        x = next(acts)(conv(x))
    return x


def test_user_blocks_shared_and_looped_relus():
    torch.manual_seed(0)
    net = _Net()
    keys = net.state_dict().keys()
    split_reused_relus(net, 8)
    sites = find_relu_sites(net, 8)
    # The shared module is copied per block first, so sites are named by block.
    assert [s.name for s in sites] == ['a.relu.0', 'a.relu.1', 'b.relu.0', 'b.relu.1',
                                       'loop.relu.0', 'loop.relu.1', 'loop.relu.2']
    assert [s.channels for s in sites] == [2, 4, 4, 8, 8, 8, 8]
    assert net.state_dict().keys() == keys
    patches = [1, 2, 1, 3, 2, 8, 1]
    convert_block_relu(net, BlockReLUSpec({s.name: np.full((s.channels, 2), p)
                                           for s, p in zip(sites, patches)}), input_size=8)
    x = torch.randn(2, 2, 8, 8)
    for mode in ('train', 'eval', 'train'):  # batches in either mode, checkpointed
        getattr(net, mode)()
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = net(x1).sum() + net(2 * x1).square().sum()
        ref = _reference(net, x2, patches).sum() + _reference(net, 2 * x2, patches).square().sum()
        out.backward()
        ref.backward()
        assert torch.equal(out, ref) and torch.equal(x1.grad, x2.grad)
    # Copies and pickles route the same.
    with torch.no_grad():
        for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            assert torch.equal(clone(x), net(x))


def test_no_sites_names_the_activations_and_the_option(tmp_path, monkeypatch):
    model = build_upstream('mobilenet_v2')
    with pytest.raises(NoSitesError, match=r'ReLU6 \(x\d+\).*relu6_to_relu=True'):
        find_relu_sites(split_reused_relus(model, 32), 32)
    with pytest.raises(NoSitesError, match='relu6_to_relu'):
        apply_block_relu_cfg(model, dict(input_size=32))
    config = tmp_path / 'mnv2.py'
    config.write_text("_base_ = 'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py'\n"
                      "model = dict(backbone=dict(widen_factor=0.25))\n")
    out = tmp_path / 'spec.json'
    for tool, extra in (('make_spec.py', ['--out', str(out)]), ('analysis/count_drelus.py', [])):
        monkeypatch.setattr(sys, 'argv', [tool, str(config), '--shape', '32', '32', *extra])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(f'{TOOLS}/{tool}', run_name='__main__')
        message = str(exit_info.value.code)
        assert 'ReLU6' in message and 'relu6_to_relu' in message and '\n' not in message
    assert not out.exists()


class _FixedFC(nn.Module):
    """A classifier whose FC fixes the input size at 40 x 40 (as VGG's does at 224)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 20 * 20, 5)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_input_size_for_fixed_size_models(tmp_path):
    with pytest.raises(TraceError, match=r'64x64, 224x224 .*input_size'):
        apply_block_relu_cfg(_FixedFC(), dict())
    model = apply_block_relu_cfg(_FixedFC(), dict(input_size=40))
    assert [(s.name, s.height) for s in find_relu_sites(model, 40)] == [('relu', 20)]
    # Default: the config's own input size, where it has one.
    config = tmp_path / 'cfg.py'
    config.write_text("model = dict(type='X', block_relu_cfg=dict())\ninput_size = (40, 40)\n")
    cfg = set_default_input_size(Config.fromfile(str(config)))
    assert cfg.model.block_relu_cfg.input_size == [40, 40]
    cfg.model.block_relu_cfg.input_size = 48
    assert set_default_input_size(cfg).model.block_relu_cfg.input_size == 48


def test_vgg_fixed_fc_traces_at_224_by_default():
    cfg = upstream_config('vgg11')
    assert cfg.model.backbone.num_classes == -1  # the tiny one has no FC; the real one:
    model = build_upstream('vgg11', backbone=dict(num_classes=10))
    split_reused_relus(model)  # 64 fails, 224 runs
    sites = find_relu_sites(model)
    assert sites[-1].name == 'backbone.classifier.4' and sites[-1].height == 1
    assert sites[0].height == 224
