"""The cost model: the authors' published totals, and its formulas against the spec."""
import os

import pytest
import torch

from test_networks import resnet_cifar, with_spec

from block_relu_plugin.mpc import cost
from block_relu_plugin.mpc.compiler import SecureReLU, compile_model
from block_relu_plugin.mpc.costmodel import predict_costs, program_costs, session_costs
from block_relu_plugin.spec import BlockReLUSpec
from block_relu_plugin.conversion import find_relu_sites, split_reused_relus

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data', 'configs')


def build(name):
    from block_relu_plugin.utils.config import build_model
    return build_model(os.path.join(CONFIGS, name))


def test_reference_resnet18_cifar_all_relu():
    """PROTOCOL.md: ResNet18 / CIFAR-100, 32x32, all ReLU, b = 64."""
    rep = predict_costs(build('resnet18_cifar.py'), (32, 32), protocol='reference')
    assert rep.total.total() == rep.total.online == 493_540_032
    relus = sum(c.total() for k, c in rep.layers.items() if 'relu' in k)
    assert relus == 557_056 * 536
    assert rep.layers['handshake'].total() == 128 and rep.layers['output'].total() == 800


def test_ours_resnet18_cifar_all_relu_profile():
    """Our bytes per image, all ReLU, 64 bits, and the per-step profile that adds up to
    them: 557,056 fused ReLUs of 80.625 B (207 dealt bits, 16 B opening y, 2 x 58 opened
    tree bits, 2 x 1 bit e, 16 B dealt [r] and [X r], 8 B re-randomisation) and the
    convolutions' C_0 and E (unchanged: 10,253,088 B offline)."""
    rep = predict_costs(build('resnet18_cifar.py'), (32, 32))
    t = rep.total
    n = 557_056
    assert (t.offline, t.online, t.session) == (10_253_088 + n * (207 // 8 + 24) + n * 7 // 8,
                                                24_576 + 800 + n * 30 + n * 3 // 4, 89_683_552)
    assert t.rounds == 17 * 8 + 2
    steps = {}
    for step, phase, src, dst, v in rep.steps():
        steps[step] = steps.get(step, 0) + v
    assert steps['DReLU: dealt bits (leaves, MSB(X), AND triples)'] == 207 * n // 8
    assert steps['DReLU: comparison tree openings'] == 2 * 58 * n // 8
    assert steps['DReLU: opening y = a + X'] == 16 * n
    assert steps['DReLU: dealt [r]'] == steps['ReLU (fused): dealt [X r]'] == 8 * n
    assert steps['product: re-randomisation'] == 8 * n
    assert steps['DReLU: masked bit e'] == 2 * n // 8
    relu = sum(c.total() for k, c in rep.layers.items() if 'relu' in k)
    assert relu * 8 == 645 * n
    assert sum(steps.values()) == t.total()
    assert [r[0] for r in rep.steps()[:2]] == ['linear: masked weights F',
                                              'DReLU: dealt bits (leaves, MSB(X), AND triples)']
    assert 'DReLU: comparison tree openings' in rep.format_steps()


def test_reference_resnet50_maxpool_baseline():
    """REFERENCE-RUNTIME.md 8: MaxPool ResNet50, pool moved before the stem ReLU."""
    rep = predict_costs(build('resnet50.py'), (224, 224), protocol='reference',
                        pool_before_relu=True)
    assert rep.total.total() == 6_355_757_824
    layers = rep.layers
    conv = sum(c.total() for k, c in layers.items() if 'conv' in k or 'downsample' in k
               or k == 'head.fc')
    assert conv == 667_597_632
    assert sum(c.total() for k, c in layers.items() if 'relu' in k) == 9_006_592 * 536
    assert layers['backbone.maxpool'].total() == 8 * 200_704 * 536
    assert layers['handshake'].total() + layers['output'].total() == 128 + 8_000


def test_reference_batch_is_per_image():
    prog = compile_model(resnet_cifar(), with_weights=False)
    one = program_costs(prog, (1, 3, 16, 16), 'reference', handshake=True)
    two = program_costs(prog, (2, 3, 16, 16), 'reference', handshake=True)
    assert two.total.total() == 2 * one.total.total()


def test_ours_weights_once_per_session():
    prog = compile_model(resnet_cifar(), with_weights=False)
    one = program_costs(prog, (1, 3, 16, 16))
    again = program_costs(prog, (1, 3, 16, 16), first_use=False)
    weights = sum(m.weight_shape[0] * int(torch.tensor(m.weight_shape[1:]).prod())
                  for _, m in prog.sites() if hasattr(m, 'weight_shape'))
    assert one.total.session == 8 * weights and again.total.session == 0
    assert one.total.online == again.total.online
    both = session_costs(prog, [(1, 3, 16, 16)] * 2)
    assert both.total.session == 8 * weights + cost.ours.handshake().session
    assert both.total.online == 2 * one.total.online


@pytest.mark.parametrize('protocol', ['ours', 'reference'])
def test_drelu_bits_follow_the_spec_count(protocol):
    """Bytes saved by comparing 16 instead of 64 bits = per-DReLU saving x spec DReLUs."""
    model = with_spec(resnet_cifar(), 16, every=2)
    sites = find_relu_sites(split_reused_relus(resnet_cifar()), 16)
    prog64 = compile_model(model, bits=64, with_weights=False)
    prog16 = compile_model(model, bits=16, shift=0, with_weights=False)
    block = {label: m for label, m in prog64.sites()
             if isinstance(m, SecureReLU) and m.block_sizes is not None}
    spec = BlockReLUSpec({k: m.block_sizes for k, m in block.items()})
    per_site = spec.drelus([s for s in sites if s.name in block])
    a = program_costs(prog64, (1, 3, 16, 16), protocol).total.total()
    b = program_costs(prog16, (1, 3, 16, 16), protocol).total.total()
    if protocol == 'reference':
        assert a - b == 6 * 48 * sum(per_site.values())
    else:
        # the same count, recomputed per site from the formulas' parts: per DReLU the
        # one-hot leaves, AND corrections and openings of 63 against 15 compared bits,
        # 16 against 4 B of y; a (1, 1) pixel's 64-bit product is fused ([X r] 8 B + 8 B
        # re-randomisation), a 16-bit one a selected multiplicand (32 B)
        by_name = {s.name: s for s in sites}
        single = sum(int(((m.block_sizes == 1).all(1)).sum()) * by_name[k].height *
                     by_name[k].width for k, m in block.items())
        assert single > 0
        def bit_bytes(m, dealt, levels):  # a channel's bits, rounded up to bytes per message
            opened = sum(-(-m * (2 * p + e) // 8) for p, e in levels) + -(-m // 8)
            return -(-m * dealt // 8) + 2 * opened
        levels64 = [(10, 10), (5, 5), (3, 2), (1, 1), (1, 0)]
        levels16 = [(2, 2), (1, 1), (1, 0)]
        from block_relu_plugin.layers.block_relu import num_drelus
        per_channel = [m for k, blk in block.items() for m in num_drelus(
            blk.block_sizes, by_name[k].height, by_name[k].width)]  # bits pad per channel
        assert sum(per_channel) == sum(per_site.values())
        diff = sum(bit_bytes(m, 168 + 1 + 38, levels64) - bit_bytes(m, 40 + 1 + 7, levels16)
                   + 12 * m for m in per_channel)
        assert a - b == diff - (32 - 16) * single


def test_identity_sites_are_free():
    model = resnet_cifar()
    sites = find_relu_sites(split_reused_relus(model), 16)
    from block_relu_plugin.conversion import convert_block_relu
    model = convert_block_relu(model, BlockReLUSpec.uniform(sites, (0, 1)))
    rep = program_costs(compile_model(model, with_weights=False), (1, 3, 16, 16))
    assert all(rep.layers.get(s.name, cost.Cost()).total() == 0 for s in sites)


def test_secure_cost_tool(capsys):
    import importlib.util
    import json
    path = os.path.join(os.path.dirname(CONFIGS), '..', '..', 'tools', 'analysis',
                        'secure_cost.py')
    spec = importlib.util.spec_from_file_location('secure_cost', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([os.path.join(CONFIGS, 'resnet18_cifar.py'), '--shape', '32', '32',
               '--protocol', 'reference', '--json'])
    out = json.loads(capsys.readouterr().out)
    assert out['total']['all'] == 493_540_032
