import itertools
import json
import os
import runpy
import sys

import numpy as np
import pytest
import torch

from block_relu_plugin import BlockReLU, BlockReLUSpec, convert_block_relu, find_relu_sites
from block_relu_plugin.budget import solve as solve_module
from block_relu_plugin.budget.candidates import candidate_set, default_candidates
from block_relu_plugin.budget.distortion import (build_manifest, extract_distortion,
                                                 load_distortion, save_array)
from block_relu_plugin.budget.knapsack import BudgetError
from block_relu_plugin.budget.solve import (budget_drelus, cached_budget_spec, solve_budget,
                                            solve_uniform_at_least, uniform_patches)
from block_relu_plugin.conversion import ReLUSite
from block_relu_plugin.layers.block_relu import num_drelus
from block_relu_plugin.spec import drelu_report

from test_distortion import SIDE, tiny_inputs, tiny_model

TOOLS = os.path.join(os.path.dirname(__file__), '..', '..', 'tools')



@pytest.fixture(scope='module')
def sketch_dir(tmp_path_factory):
    """Sketched distortions of the tiny network (17 sites, 488 channels, 4,352 ReLUs), with
    both candidate sets, so solves can restrict to either."""
    path = str(tmp_path_factory.mktemp('dist') / 'sketch')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert extract_distortion(tiny_model(), tiny_inputs(8), path, 'sketch', batch_size=4,
                                  num_probes=4, candidates=candidate_set('paper+all_pairs'),
                                  info=dict(config='tiny.py'))
    finally:
        torch.set_num_threads(threads)
    return path


def write_distortion(path, sites, values, candidates):
    """A distortion directory with given values (what an extraction would write)."""
    manifest = build_manifest(sites, 'exact', torch.zeros(1, 3, 4, 4), 10,
                              lambda h, w: candidates[(h, w)], chunk_channels=2,
                              info=dict(config='synthetic'))
    os.makedirs(path)
    with open(os.path.join(path, 'manifest.json'), 'w') as f:
        json.dump(manifest, f)
    for site, entry in zip(sites, manifest['sites']):
        for start, stop, file in entry['chunks']:
            save_array(os.path.join(path, 'values', file), values[site.name][start:stop])
    return path


def test_solve_round_trip(sketch_dir, tmp_path):
    distortion = load_distortion(sketch_dir)
    spec = solve_budget(distortion, 0.06, 'exact')
    meta = spec.metadata
    assert meta['relus'] == 4352 and meta['budget_drelus'] == int(0.06 * 4352)
    assert 0 < meta['drelus'] <= meta['budget_drelus']
    assert meta['lower_bound'] <= meta['objective'] + 1e-12 and meta['optimal']
    assert meta['distortion_method'] == 'sketch' and meta['num_samples'] == 8
    assert meta['input_size'] == [SIDE, SIDE] and meta['config'] == 'tiny.py'
    assert meta['budget'] == 0.06 and meta['solver'] == 'exact'
    # The objective is the summed distortion of the choice.
    total = 0.0
    for site in distortion.sites:
        cand = distortion.candidates[site.name]
        index = [int(np.flatnonzero((cand == b).all(1))[0]) for b in spec.sites[site.name]]
        total += distortion.values[site.name][np.arange(site.channels), index].sum()
    assert total == pytest.approx(meta['objective'], rel=1e-9)
    # The paper's dense program reaches the same optimum.
    dense = solve_budget(distortion, 0.06, 'dense')
    assert dense.metadata['objective'] == pytest.approx(meta['objective'], rel=1e-9)
    # File round trip, DReLU count by the one accounting, and conversion.
    spec.save(str(tmp_path / 'spec.json'))
    loaded = BlockReLUSpec.load(str(tmp_path / 'spec.json'))
    assert loaded == spec
    model = tiny_model()
    assert drelu_report(find_relu_sites(model, SIDE), loaded)['drelus'] == meta['drelus']
    convert_block_relu(model, str(tmp_path / 'spec.json'), input_size=SIDE)
    assert sum(isinstance(m, BlockReLU) for m in model.modules()) == len(distortion.sites)


def test_knapsack_instance_matches_brute_force(tmp_path):
    """Pruning, padding and column mapping lose nothing: the optimum over all choices."""
    rng = np.random.default_rng(0)
    sites = [ReLUSite('a', 2, 2, 2), ReLUSite('b', 2, 3, 2)]
    candidates = {(s.height, s.width): default_candidates(s.height, s.width) for s in sites}
    values = {}
    for s in sites:
        cand = candidates[(s.height, s.width)]
        # Rounded values: ties within and across equal-cost candidates.
        values[s.name] = np.round(rng.random((s.channels, len(cand))), 1)
        values[s.name][:, (cand == 1).all(1)] = 0.0
    path = write_distortion(str(tmp_path / 'd'), sites, values, candidates)
    per_channel = [(s, c) for s in sites for c in range(s.channels)]
    for budget in (3, 5, 8, 12):
        spec = solve_budget(path, f'drelus={budget}', 'exact')
        best = np.inf
        options = [range(len(candidates[(s.height, s.width)])) for s, _ in per_channel]
        for choice in itertools.product(*options):
            cost = sum(int(num_drelus(candidates[(s.height, s.width)][k], s.height, s.width))
                       for (s, _), k in zip(per_channel, choice))
            if cost <= budget:
                total = sum(values[s.name][c, k] for (s, c), k in zip(per_channel, choice))
                best = min(best, total)
        assert spec.metadata['objective'] == pytest.approx(best, abs=1e-9)
        assert spec.metadata['drelus'] <= budget


def test_uniform_picks_the_smallest_patch_that_fits(sketch_dir):
    distortion = load_distortion(sketch_dir)
    sites = distortion.sites
    assert uniform_patches(3) == [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)]
    spec = solve_budget(distortion, 0.2, 'uniform')
    limit = budget_drelus(0.2, 4352)
    sizes = {tuple(b) for s in spec.sites.values() for b in s}
    assert len(sizes) == 1
    size = sizes.pop()
    order = uniform_patches(SIDE)
    index = order.index(size)
    assert spec.metadata['drelus'] <= limit
    cost = [sum(s.channels * int(num_drelus(p, s.height, s.width)) for s in sites) for p in order]
    assert cost[index - 1] > limit  # the next smaller patch would not fit
    assert spec.metadata['objective'] == pytest.approx(sum(
        distortion.values[s.name][:, np.flatnonzero(
            (distortion.candidates[s.name] == (min(size[0], s.height), min(size[1], s.width)))
            .all(1))[0]].sum() for s in sites))


def test_uniform_at_least_rounds_up(sketch_dir):
    """The comparison baseline: the largest uniform patch with >= n DReLUs, counted directly."""
    distortion = load_distortion(sketch_dir)
    sites = distortion.sites
    order = uniform_patches(SIDE)
    cost = [sum(s.channels * int(num_drelus(p, s.height, s.width)) for s in sites) for p in order]
    for n in (1, 300, 1000, cost[3], cost[3] + 1, 4352):
        spec = solve_uniform_at_least(distortion, n)
        sizes = {tuple(b) for s in spec.sites.values() for b in s}
        assert len(sizes) == 1
        index = order.index(sizes.pop())
        assert spec.metadata['drelus'] == cost[index] >= n
        assert index == len(order) - 1 or cost[index + 1] < n  # the next larger patch has fewer
    assert solve_uniform_at_least(distortion, cost[3]).metadata['drelus'] == cost[3]
    with pytest.raises(BudgetError, match='4,353'):
        solve_uniform_at_least(distortion, 4353)


def test_absolute_budget(sketch_dir):
    spec = solve_budget(sketch_dir, 'drelus=300', 'exact')
    assert spec.metadata['budget_drelus'] == 300 and spec.metadata['drelus'] <= 300
    assert budget_drelus(1, 4352) == 4352  # 1 is the fraction 100 %


def test_impossible_budgets(sketch_dir, tmp_path):
    for bad in (0, -0.1, float('nan'), 2.5):
        with pytest.raises(BudgetError, match='budget'):
            solve_budget(sketch_dir, bad, 'exact')
    # Uniform needs one DReLU per channel at least: 488 channels > 6 % of 4,352.
    with pytest.raises(BudgetError, match='uniform.*488'):
        solve_budget(sketch_dir, 0.06, 'uniform')
    # Without the free identity candidate, the knapsack has a floor too.
    sites = [ReLUSite('a', 2, 2, 2)]
    candidates = {(2, 2): np.array([[1, 1], [2, 2]])}
    path = write_distortion(str(tmp_path / 'd'), sites, {'a': np.array([[0.0, 1.0]] * 2)},
                            candidates)
    with pytest.raises(BudgetError, match='cannot be met.*minimum'):
        solve_budget(path, 0.2, 'exact')  # 1 of 8 DReLUs; two channels need 2


def tiny_config(distortion_dir, **brc):
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='BlockReLUImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64),
        block_relu_cfg=dict(distortion=distortion_dir, input_size=SIDE, **brc)))


def test_budget_cfg_solves_once_and_caches(sketch_dir, tmp_path, monkeypatch):
    import shutil
    dist = str(tmp_path / 'dist')
    shutil.copytree(sketch_dir, dist)
    model = tiny_config(dist, budget=0.06, solver='exact')
    path = os.path.join(dist, 'spec_exact_0.06.json')
    spec = BlockReLUSpec.load(path)
    again = solve_budget(dist, 0.06, 'exact')
    assert list(spec.sites) == list(again.sites)
    assert all(np.array_equal(spec.sites[n], again.sites[n]) for n in again.sites)
    acts = {n: m for n, m in model.named_modules() if isinstance(m, BlockReLU)}
    assert set(acts) == set(spec.sites)
    for name, act in acts.items():
        assert np.array_equal(act.block_sizes.numpy(), spec.sites[name])
    # Unchanged distortion files: the cached spec is used, nothing is solved.
    real = solve_module.solve_budget

    def refuse(*args, **kwargs):
        raise AssertionError('solved again')

    monkeypatch.setattr(solve_module, 'solve_budget', refuse)
    tiny_config(dist, budget=0.06, solver='exact')
    # A changed distortion file: solved again, with the new fingerprint.
    d = load_distortion(dist)
    first = d.manifest['sites'][0]
    file = os.path.join(dist, 'values', first['chunks'][0][2])
    save_array(file, np.load(file, allow_pickle=False)[:, ::-1].copy())
    with pytest.raises(AssertionError, match='solved again'):
        tiny_config(dist, budget=0.06, solver='exact')
    monkeypatch.setattr(solve_module, 'solve_budget', real)
    old = spec.metadata['distortion_sha256']
    tiny_config(dist, budget=0.06, solver='exact')
    assert BlockReLUSpec.load(path).metadata['distortion_sha256'] != old
    assert cached_budget_spec(dist, 0.06, 'exact') == path


def test_budget_cfg_spec_override_and_errors(sketch_dir, tmp_path, monkeypatch):
    # A spec (e.g. a tool's --spec on a budgeted config) wins: nothing is solved.
    sites = find_relu_sites(tiny_model(), SIDE)
    BlockReLUSpec.uniform(sites, (2, 2)).save(str(tmp_path / 'uniform.json'))
    monkeypatch.setattr(solve_module, 'solve_budget', None)
    model = tiny_config(sketch_dir, budget=0.06, spec=str(tmp_path / 'uniform.json'))
    sizes = [m.block_sizes for m in model.modules() if isinstance(m, BlockReLU)]
    assert len(sizes) == len(sites) and all((s == 2).all() for s in sizes)
    with pytest.raises(KeyError, match='only used with budget'):
        tiny_config(sketch_dir)
    with pytest.raises(KeyError, match='needs distortion'):
        tiny_config(None, budget=0.06)


def test_solve_tool_and_plots(sketch_dir, tmp_path):
    out, plots = tmp_path / 'spec.json', tmp_path / 'plots'
    argv = sys.argv
    try:
        sys.argv = ['solve_budget.py', '--distortion', sketch_dir, '--budget', 'drelus=300',
                    '--out', str(out), '--solver', 'dense', '--plots', str(plots)]
        runpy.run_path(os.path.join(TOOLS, 'solve_budget.py'), run_name='__main__')
    finally:
        sys.argv = argv
    spec = BlockReLUSpec.load(str(out))
    assert spec.metadata['budget'] == 'drelus=300' and spec.metadata['solver'] == 'dense'
    for name in ('distortion_curves.png', 'patch_sizes.png'):
        with open(plots / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_solve_restricted_to_a_candidate_set(sketch_dir, tmp_path):
    distortion = load_distortion(sketch_dir)
    specs = {name: solve_budget(distortion, 0.06, 'exact', name)
             for name in ('paper', 'all_pairs', None)}
    for name in ('paper', 'all_pairs'):
        fn = candidate_set(name)
        for site in distortion.sites:
            allowed = {tuple(b) for b in fn(site.height, site.width).tolist()}
            assert {tuple(b) for b in specs[name].sites[site.name].tolist()} <= allowed
        assert specs[name].metadata['candidates'] == name
        # More candidates never do worse: the union's optimum is at most either's.
        assert specs[None].metadata['objective'] <= specs[name].metadata['objective'] + 1e-12
    assert specs['paper'].metadata['objective'] != specs['all_pairs'].metadata['objective']
    # Cached per set, next to the unrestricted one.
    path = cached_budget_spec(sketch_dir, 0.06, 'exact', 'paper')
    assert path.endswith('spec_exact_0.06_paper.json')
    assert BlockReLUSpec.load(path).metadata['candidates'] == 'paper'
    assert cached_budget_spec(sketch_dir, 0.06, 'exact') != path
    with pytest.raises(ValueError, match='unknown candidate set'):
        cached_budget_spec(sketch_dir, 0.06, 'exact', 'paperr')
    # A set that was not measured: one line naming the site and the sizes.
    sites = [ReLUSite('a', 2, 4, 4)]
    path = write_distortion(str(tmp_path / 'd'), sites, {'a': np.ones((2, 9))},
                            {(4, 4): candidate_set('paper')(4, 4)})
    with pytest.raises(ValueError, match="site 'a': .* not measured"):
        solve_budget(path, 0.5, 'exact', 'all_pairs')


def test_solve_tool_candidates(sketch_dir, tmp_path):
    out = tmp_path / 'spec.json'
    argv = sys.argv
    try:
        sys.argv = ['solve_budget.py', '--distortion', sketch_dir, '--budget', '0.06',
                    '--out', str(out), '--candidates', 'all_pairs']
        runpy.run_path(os.path.join(TOOLS, 'solve_budget.py'), run_name='__main__')
    finally:
        sys.argv = argv
    assert BlockReLUSpec.load(str(out)).metadata['candidates'] == 'all_pairs'
