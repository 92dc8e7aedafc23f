"""Budgets in what a user pays: the budget forms, byte costs, and a byte budget met by a secure run.

The end-to-end test solves a byte budget for a tiny ResNet18-CIFAR (mmpretrain
``ResNet_CIFAR``, 8 base channels, 16 x 16 inputs) at 16 compared bits, runs
the converted network under the real 3-party runtime and reads the meters:
the Block-ReLU layers' measured bytes per image (online + offline; the
once-per-session key agreement and masked weights are not per image, and the
linear layers' bytes do not depend on the spec) must be the solver's count,
within the budget, and less than one DReLU plus its gated pixels below it.
"""
import json
import os
import runpy
import sys

import numpy as np
import pytest
import torch

from block_relu_plugin.budget.budget_spec import Budget, parse_budget
from block_relu_plugin.budget.candidates import default_candidates
from block_relu_plugin.budget.distortion import build_manifest, save_array
from block_relu_plugin.budget.knapsack import BudgetError
from block_relu_plugin.budget.solve import (budget_drelus, cached_budget_spec, solve_budget,
                                            spec_cost)
from block_relu_plugin.conversion import (ReLUSite, convert_block_relu, find_relu_sites,
                                          split_reused_relus)
from block_relu_plugin.layers.block_relu import num_drelus
from block_relu_plugin.mpc import LocalCluster
from block_relu_plugin.mpc.bits import ComparePlan
from block_relu_plugin.mpc.cost import Cost, ours
from block_relu_plugin.spec import BlockReLUSpec

TOOLS = os.path.join(os.path.dirname(__file__), '..', '..', 'tools')
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'test_mpc'))
SIDE = 16
BITS = 16


# ------------------------------------------------------------------ the forms
@pytest.mark.parametrize('text, kind, value, phase, bits', [
    (0.06, 'fraction', 0.06, None, None),
    ('0.06', 'fraction', 0.06, None, None),
    ('6%', 'fraction', 0.06, None, None),
    (' 100 % ', 'fraction', 1.0, None, None),
    (1, 'fraction', 1.0, None, None),  # 1 is 100 %, not one DReLU
    ('drelus=33423', 'drelus', 33423, None, None),
    (dict(drelus=300), 'drelus', 300, None, None),
    ('bytes=20MB', 'bytes', 20_000_000, 'online+offline', 64),
    ('bytes=20e6', 'bytes', 20_000_000, 'online+offline', 64),
    ('BYTES = 1.5 KiB', 'bytes', 1536, 'online+offline', 64),
    ('online_bytes=20MB,bits=16', 'bytes', 20_000_000, 'online', 16),
    (dict(bytes='2 GB', bits=16), 'bytes', 2 * 10**9, 'online+offline', 16),
    (dict(online_bytes=2.5e6), 'bytes', 2_500_000, 'online', 64),
])
def test_budget_forms(text, kind, value, phase, bits):
    b = parse_budget(text)
    assert (b.kind, b.value, b.phase, b.bits) == (kind, value, phase, bits)
    assert parse_budget(str(b)) == b  # the canonical text reads back
    assert parse_budget(b) is b


@pytest.mark.parametrize('text, problem', [
    (6, "budget 6 is ambiguous.*'6%'.*'drelus=6'"),
    ('6', 'budget 6 is ambiguous'),
    (2.5, 'budget 2.5 is ambiguous'),
    (0, 'must be positive'),
    (-0.1, 'must be positive'),
    ('-0.1', 'must be positive'),
    (float('nan'), 'must be positive'),
    ('101%', r'percentage in \(0, 100\]'),
    ('0%', r'percentage in \(0, 100\]'),
    ('garbage', "'garbage' is not a budget"),
    ('', "'' is not a budget"),
    (None, 'None is not a budget'),
    (True, 'True is not a budget'),
    ([0.06], r'\(list\) is not a budget'),
    ('drelus=2.5', 'whole number'),
    ('drelus=0', 'whole number >= 1'),
    ('drelus=5,bits=16', 'bits only apply to byte budgets'),
    ('bytes=20XB', 'unit'),
    ('bytes=0.5', 'at least 1 byte'),
    ('bytes=20MB,bits=1', r'2\.\.64'),
    ('bytes=20MB,bits=65', r'2\.\.64'),
    ('bytes=20MB,bits=16.5', r'2\.\.64'),
    ('bytes=1,online_bytes=2', 'exactly one of'),
    ('megabytes=20', 'unknown key'),
    ('bytes=1,bytes=2', 'names bytes twice'),
    ('6%,bits=16', 'not key=value'),
])
def test_bad_budgets_say_what_and_show_the_forms(text, problem):
    with pytest.raises(BudgetError, match=problem) as e:
        parse_budget(text)
    message = str(e.value)
    assert '\n' not in message
    for form in ('0.06', "'6%'", "'drelus=33423'", "'bytes=20MB'", "'online_bytes=20MB'",
                 'bits=16'):
        assert form in message


def test_bits_option():
    assert parse_budget('bytes=1MB', bits=16).bits == 16
    assert parse_budget('bytes=1MB,bits=16', bits=16).bits == 16
    assert parse_budget('6%', bits=16) == Budget('fraction', 0.06)  # DReLUs need no bits
    with pytest.raises(BudgetError, match='says bits=16 but bits=20'):
        parse_budget('bytes=1MB,bits=16', bits=20)
    with pytest.raises(BudgetError, match='2..64'):
        parse_budget('bytes=1MB', bits=0)
    assert budget_drelus('6%', 1000) == budget_drelus(0.06, 1000) == 60
    assert budget_drelus('drelus=300', 10) == 300
    with pytest.raises(BudgetError, match='in bytes, not DReLUs'):
        budget_drelus('bytes=1MB', 1000)


# ------------------------------------------------------- byte costs per channel
@pytest.mark.parametrize('phase', ['bytes', 'online_bytes'])
@pytest.mark.parametrize('bits', [16, 64])
def test_channel_costs_add_up_to_the_cost_model(phase, bits):
    budget = parse_budget(f'{phase}=1,bits={bits}')
    phases = ('online', ) if phase == 'online_bytes' else ('online', 'offline')

    def layer(c):
        return sum(c.total(p) for p in phases)

    h, w = 7, 6
    sizes = np.array([(1, 1), (2, 2), (0, 1), (1, 0), (3, 2), (7, 6), (8, 8), (2, 5)])
    per_channel = budget.channel_costs(sizes, h, w)
    assert per_channel.dtype == np.int64
    assert per_channel[2] == per_channel[3] == 0  # identity and zero channels are free
    # A whole site with mixed sizes costs the sum of its channels (linear formulas) ...
    assert per_channel.sum() == layer(ours.block_relu(sizes, 1, h, w, bits))
    # ... one DReLU per patch (its bit messages padded to whole bytes per channel) plus
    # the gate product of every gated pixel, by hand from the comparison's plan ...
    plan = ComparePlan(bits)
    n = num_drelus(sizes, h, w)
    word = -(-bits // 8)
    online_only = phase == 'online_bytes'

    def by_hand(m, pixels, fused):
        if m == 0:
            return 0
        tree = sum(-(-m * (2 * p + e) // 8) for p, e in plan.levels) + -(-m // 8)
        online = word * m + 2 * tree + (8 if fused else 16) * pixels
        offline = -(-m * (plan.leaf_bits + 1 + plan.triple_bits) // 8) + 8 * m + word * m \
            + (8 if fused else 16) * pixels
        return online if online_only else online + offline
    fused = (sizes == 1).all(1) & (bits == 64)  # a (1, 1) channel's products fuse at 64 bits
    expect = [by_hand(m, h * w, f) for m, f in zip(n, fused)]
    assert np.array_equal(per_channel, expect)
    # ... and an all-(1, 1) site, which the compiler runs as a plain ReLU, costs the same.
    relu = budget.channel_costs([(1, 1)], h, w)[0]
    assert 5 * relu == layer(ours.relu(5 * h * w, bits, h * w))
    # DReLU budgets count DReLUs
    assert np.array_equal(parse_budget(0.5).channel_costs(sizes, h, w), n)


def write_distortion(path, sites, candidates, values):
    """A distortion directory with given per-site candidates and values."""
    manifest = build_manifest(sites, 'exact', torch.zeros(1, 3, SIDE, SIDE), 10,
                              chunk_channels=64, info=dict(config='synthetic'))
    for entry in manifest['sites']:
        entry['candidates'] = np.asarray(candidates[entry['name']]).tolist()
    os.makedirs(os.path.join(path, 'values'))
    with open(os.path.join(path, 'manifest.json'), 'w') as f:
        json.dump(manifest, f)
    for site, entry in zip(sites, manifest['sites']):
        for start, stop, file in entry['chunks']:
            save_array(os.path.join(path, 'values', file), values[site.name][start:stop])
    return path


def monotone_distortion(sites, seed=0, quiet=()):
    """Distortions falling strictly as a channel buys DReLUs (ReLU: 0).

    Real distortions fall roughly so; strictly falling ones make the
    knapsack's optimum fill its budget up to less than the cheapest upgrade
    left, so the test can bound the unspent bytes. Sites in ``quiet`` weigh
    little: their channels are upgraded last, so cheap upgrades remain there.
    """
    rng = np.random.default_rng(seed)
    candidates, values = {}, {}
    for s in sites:
        cand = default_candidates(s.height, s.width)
        kept = num_drelus(cand, s.height, s.width) / (s.height * s.width)
        weight = rng.uniform(0.5, 1.5, (s.channels, 1)) * (1e-3 if s.name in quiet else 1.0)
        candidates[s.name] = cand
        values[s.name] = weight * (1 - np.sqrt(kept))[None, :]
    return candidates, values


def test_byte_budget_knapsack_is_exact(tmp_path):
    """Costs in bytes: the solve equals a brute force over every choice."""
    import itertools
    sites = [ReLUSite('a', 2, 2, 2), ReLUSite('b', 2, 3, 2)]
    rng = np.random.default_rng(1)
    candidates = {s.name: default_candidates(s.height, s.width) for s in sites}
    values = {s.name: np.round(rng.random((s.channels, len(candidates[s.name]))), 1)
              for s in sites}
    path = write_distortion(str(tmp_path / 'd'), sites, candidates, values)
    channels = [(s, c) for s in sites for c in range(s.channels)]
    budget = parse_budget('online_bytes=1,bits=16')
    cost = {s.name: budget.channel_costs(candidates[s.name], s.height, s.width) for s in sites}
    full = spec_cost(BlockReLUSpec({}), sites, budget)  # every site a plain ReLU
    for limit in (600, 1500, full // 2, full):
        best = np.inf
        for choice in itertools.product(*[range(len(candidates[s.name])) for s, _ in channels]):
            if sum(int(cost[s.name][k]) for (s, _), k in zip(channels, choice)) <= limit:
                best = min(best, sum(values[s.name][c, k] for (s, c), k in zip(channels, choice)))
        for solver in ('exact', 'dense'):
            spec = solve_budget(path, f'online_bytes={limit}', solver, bits=16)
            m = spec.metadata
            assert m['objective'] == pytest.approx(best, abs=1e-9)
            assert m['bytes'] == spec_cost(spec, sites, budget) <= limit == m['budget_bytes']
            assert (m['bytes_phase'], m['bits'], m['budget']) == (
                'online', 16, f'online_bytes={limit},bits=16')
    # uniform: the smallest patch whose bytes fit
    spec = solve_budget(path, f'online_bytes={full},bits=16', 'uniform')
    assert {tuple(b) for s in spec.sites.values() for b in s} == {(1, 1)}
    spec = solve_budget(path, f'online_bytes={full - 1},bits=16', 'uniform')
    assert {tuple(b) for s in spec.sites.values() for b in s} == {(1, 2)}
    assert spec.metadata['bytes'] <= full - 1
    # Without free candidates there is a floor, said in bytes.
    cand = {'a': np.array([[1, 1], [2, 2]])}
    path = write_distortion(str(tmp_path / 'e'), sites[:1], cand, {'a': np.zeros((2, 2))})
    floor = 2 * int(parse_budget('bytes=1').channel_costs([(2, 2)], 2, 2)[0])
    with pytest.raises(BudgetError, match=f'cannot be met: the minimum achievable is {floor:,}'):
        solve_budget(path, f'bytes={floor - 1}', 'exact')
    assert solve_budget(path, f'bytes={floor}', 'exact').metadata['bytes'] == floor


def test_cached_byte_spec_and_block_relu_cfg(tmp_path):
    """Every form goes through the cache and ``block_relu_cfg=dict(budget=...)``."""
    from mmpretrain.registry import MODELS
    model = tiny_resnet()
    sites = find_relu_sites(split_reused_relus(model), SIDE)
    candidates, values = monotone_distortion(sites)
    dist = write_distortion(str(tmp_path / 'dist'), sites, candidates, values)
    full = spec_cost(BlockReLUSpec({}), sites, f'bytes=1,bits={BITS}')
    forms = {'6%': 'spec_exact_0.06.json',
             'drelus=500': 'spec_exact_drelus500.json',
             f'bytes={full // 4},bits=16': f'spec_exact_bytes{full // 4}-bits16.json'}
    for form, name in forms.items():
        assert os.path.basename(cached_budget_spec(dist, form)) == name
    # a dict in a config; the cached spec is the same budget's
    path = cached_budget_spec(dist, dict(bytes=full // 4, bits=16))
    assert os.path.basename(path) == forms[f'bytes={full // 4},bits=16']
    assert BlockReLUSpec.load(path).metadata['bytes'] <= full // 4
    torch.manual_seed(0)
    built = MODELS.build(dict(
        type='BlockReLUImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64),
        block_relu_cfg=dict(distortion=dist, input_size=SIDE,
                            budget=dict(bytes=full // 4, bits=16))))
    spec = BlockReLUSpec.load(path)
    acts = {n: m.block_sizes.numpy() for n, m in built.named_modules()
            if type(m).__name__ == 'BlockReLU'}
    assert set(acts) == set(spec.sites)
    assert all(np.array_equal(acts[n], spec.sites[n]) for n in acts)
    with pytest.raises(BudgetError, match='budget 6 is ambiguous'):
        cached_budget_spec(dist, 6)
    # the dense cross-check's G x budget table is refused by size at byte scale
    with pytest.raises(BudgetError, match="solver 'dense' would need a 488 x"):
        solve_budget(dist, f'bytes={full},bits=16', 'dense')


def test_solve_tool_budget_forms(tmp_path, capsys):
    sites = [ReLUSite('a', 2, 4, 4)]
    candidates = {'a': default_candidates(4, 4)}
    values = {'a': np.tile(np.linspace(1, 0, len(candidates['a'])), (2, 1))}
    dist = write_distortion(str(tmp_path / 'd'), sites, candidates, values)
    out = str(tmp_path / 'spec.json')

    def tool(*args):
        argv = sys.argv
        try:
            sys.argv = ['solve_budget.py', '--distortion', dist, '--out', out, *args]
            runpy.run_path(os.path.join(TOOLS, 'solve_budget.py'), run_name='__main__')
        finally:
            sys.argv = argv

    for bad, problem in ((['--budget', '6'], 'budget 6 is ambiguous'),
                         (['--budget', '0'], 'must be positive'),
                         (['--budget', 'bytes=1MB,bits=16', '--bits', '20'], 'says bits=16'),
                         (['--budget', 'bytes=1MB', '--bits', '0'], '--bits must be')):
        with pytest.raises(SystemExit) as e:
            tool(*bad)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert problem in err and 'Traceback' not in err
        assert not os.path.exists(out)
    with pytest.raises(SystemExit, match='error: .* is not a distortion directory'):
        tool('--budget', '6%', '--distortion', str(tmp_path / 'none'))  # the last one wins
    tool('--budget', 'online_bytes=5kB', '--bits', '16')
    m = BlockReLUSpec.load(out).metadata
    assert (m['budget'], m['budget_bytes'], m['bits']) == ('online_bytes=5000,bits=16', 5000, 16)
    assert 'budgeted bytes per image (online, bits=16)' in capsys.readouterr().out
    tool('--budget', '50%')
    assert BlockReLUSpec.load(out).metadata['budget_drelus'] == 16


# ------------------------------------------------------------- end to end
def tiny_resnet():
    from test_networks import resnet_cifar  # tests/test_mpc: the tiny ResNet18-CIFAR
    return resnet_cifar()


@pytest.fixture(scope='module')
def cluster():
    # parties import only block_relu_plugin.mpc (light); a generous receive
    # timeout only guards against a hung party on a loaded machine
    with LocalCluster(timeout=120, light=True) as cl:
        yield cl


def test_byte_budget_met_by_a_secure_run(cluster, tmp_path):
    from block_relu_plugin.mpc.infer import secure_inference
    model = tiny_resnet()
    sites = find_relu_sites(split_reused_relus(model), SIDE)
    last = sites[-1]  # 2 x 2 maps: the cheapest upgrades
    candidates, values = monotone_distortion(sites, quiet={last.name})
    # The stem may only stay ReLU: an all-(1, 1) site, compiled as a plain ReLU.
    stem = sites[0]
    candidates[stem.name] = np.array([[1, 1]])
    values[stem.name] = np.zeros((stem.channels, 1))
    dist = write_distortion(str(tmp_path / 'dist'), sites, candidates, values)
    full = spec_cost(BlockReLUSpec({}), sites, f'bytes=1,bits={BITS}')
    limit = int(0.3 * full)
    spec = solve_budget(dist, f'bytes={limit}', 'exact', bits=BITS)
    m = spec.metadata
    assert m['optimal'] and m['bytes'] <= limit
    assert (spec.sites[stem.name] == 1).all()
    assert any((spec.sites[last.name] != 1).any(1))  # upgrades left at the quiet site

    convert_block_relu(model, spec)
    images = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    res = secure_inference(model, images=images, bits=BITS, cluster=cluster,
                           calibration_images=images)
    assert res['predicted_equal']
    # meter bytes per layer label (the module path); sites with only free
    # (identity, zero) channels send nothing and have no entry
    measured = [res['measured'].get(s.name, Cost()) for s in sites]
    assert sum(c.total() > 0 for c in measured) > len(sites) // 2
    spent = sum(c.online + c.offline for c in measured)
    online = sum(c.online for c in measured)
    assert sum(c.session for c in measured) == 0  # nothing once-per-session
    # The solver's count is the meters' count, exactly, in both phases ...
    assert spent == m['bytes']
    assert online == spec_cost(spec, sites, f'online_bytes=1,bits={BITS}')
    # ... the budget holds, and less than one DReLU and its gated pixels stay unspent.
    one = parse_budget(f'bytes=1,bits={BITS}').channel_costs(
        [(last.height, last.width)], last.height, last.width)[0]
    assert 0 <= limit - spent < one, (limit, spent, one)
