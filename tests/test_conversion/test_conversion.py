import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from block_relu_plugin import (BlockReLU, BlockReLUSpec, SpecError, convert_block_relu,
                               count_relus, find_relu_sites, maxpool_to_avgpool,
                               relu6_to_relu, split_reused_relus)
from block_relu_plugin.conversion import run_tensor_forward

from networks import NETWORKS, build_network


class CountReLUCalls(TorchFunctionMode):
    """Counts ReLU applications by intercepting torch functions, not modules."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, '__name__', '') in ('relu', 'relu_'):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def prepared(name):
    """The network with the architecture edits its tests use."""
    model = build_network(name)
    if NETWORKS[name][2].get('relu6_to_relu'):
        relu6_to_relu(model)
    return model


@pytest.fixture(scope='module', params=list(NETWORKS))
def network(request):
    name = request.param
    return name, prepared(name), NETWORKS[name][1]


def test_sites_equal_relu_applications(network):
    name, model, size = network
    plain = copy.deepcopy(model).eval()
    with torch.no_grad(), CountReLUCalls() as counter:
        run_tensor_forward(plain, torch.zeros(1, 3, size, size))
    sites = find_relu_sites(split_reused_relus(copy.deepcopy(model)), size)
    assert counter.calls > 0
    assert len(sites) == counter.calls
    assert len({s.name for s in sites}) == len(sites)


def test_reused_relu_is_refused_until_split():
    model = build_network('resnet18_cifar')
    with pytest.raises(RuntimeError, match=r"backbone\.layer1\.0\.relu'.*more than once"):
        find_relu_sites(model, 32)


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_identity_conversion_is_bit_exact(network, mode):
    name, model, size = network
    original = copy.deepcopy(model)
    converted = split_reused_relus(copy.deepcopy(model))
    spec = BlockReLUSpec.all_relu(find_relu_sites(converted, size))
    converted = convert_block_relu(converted, spec)
    n_block = sum(isinstance(m, BlockReLU) for m in converted.modules())
    assert n_block == len(spec.sites)
    x = torch.randn(2, 3, size, size)
    outs = []
    for net in (original, converted):
        getattr(net, mode)()
        torch.manual_seed(1)  # dropout in the segmentation heads
        xi = x.clone().requires_grad_()
        out = run_tensor_forward(net, xi)
        out.square().sum().backward()
        outs.append((out.detach(), xi.grad))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    # Same state-dict keys: checkpoints load both ways.
    assert original.state_dict().keys() == converted.state_dict().keys()
    converted.load_state_dict(original.state_dict())
    original.load_state_dict(converted.state_dict())


def test_convert_applies_patch_sizes():
    model = split_reused_relus(build_network('resnet18_cifar'))
    sites = find_relu_sites(model, 32)
    rng = np.random.default_rng(0)
    spec = BlockReLUSpec({s.name: rng.integers(0, 4, (s.channels, 2)).clip(min=1)
                          for s in sites})
    convert_block_relu(model, spec)
    act = dict(model.named_modules())[sites[3].name]
    assert isinstance(act, BlockReLU)
    assert np.array_equal(act.block_sizes.numpy(), spec.sites[sites[3].name])
    assert spec.drelus(sites)[sites[0].name] == int(sites[0].drelus(spec.sites[sites[0].name]).sum())


def test_convert_rejects_bad_spec_without_touching_model():
    model = split_reused_relus(build_network('resnet18_cifar'))
    sites = find_relu_sites(model, 32)
    spec = BlockReLUSpec.all_relu(sites)
    spec.sites[sites[2].name] = spec.sites[sites[2].name][:-1]
    before = copy.deepcopy(model)
    with pytest.raises(SpecError, match=sites[2].name):
        convert_block_relu(model, spec)
    assert [type(m) for m in model.modules()] == [type(m) for m in before.modules()]


def test_published_relu_totals():
    r18 = split_reused_relus(build_network('resnet18_cifar'))
    assert count_relus(find_relu_sites(r18, 32)) == 557_056
    r50 = split_reused_relus(build_network('resnet50'))
    sites = find_relu_sites(r50, 224)
    assert count_relus(sites) == 9_608_704
    assert (sites[0].name, sites[0].height) == ('backbone.relu', 112)


def test_architecture_edits():
    r50 = maxpool_to_avgpool(build_network('resnet50'))
    assert isinstance(r50.backbone.maxpool, nn.AvgPool2d)
    assert not any(isinstance(m, nn.MaxPool2d) for m in r50.modules())
    mnv2 = build_network('deeplabv3_mnv2')
    n_relu6 = sum(isinstance(m, nn.ReLU6) for m in mnv2.modules())
    assert n_relu6 > 0
    relu6_to_relu(mnv2)
    assert not any(isinstance(m, nn.ReLU6) for m in mnv2.modules())
    assert len(find_relu_sites(split_reused_relus(mnv2), 64)) >= n_relu6
