"""Candidate sets: the authors' lists, the rule they follow, names, config and restriction."""
import numpy as np
import pytest

from block_relu_plugin.budget.candidates import (CANDIDATE_SETS, all_pairs_candidates,
                                                 authors_lists, candidate_set,
                                                 candidates_from_cfg, construct_candidates,
                                                 default_candidates, paper_candidates,
                                                 restrict_candidates)
from block_relu_plugin.layers.block_relu import IDENTITY, RELU, ZERO, num_drelus

# Where the rule and the authors' lists part, and why (also in the module docstring):
# 14x14: they dropped these three by hand (the 16 -> 14 rescaling gives them);
# 320x320: their list is a copy of the 256x256 one, the rule rescales the 512 template.
RULE_ONLY = {14: {(6, 7), (7, 6), (12, 12)}}
THEIRS_ONLY = {14: set()}


def as_set(sizes):
    return {tuple(s) for s in np.asarray(sizes).tolist()}


def test_authors_data_counts():
    lists = authors_lists()
    assert sorted(lists) == [1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112, 128, 256, 320, 512]
    # METHOD.md: counts without identity/zero, as published (repeats included).
    published = {7: 23, 14: 73, 32: 78, 56: 98, 112: 99, 256: 101}
    for side, count in published.items():
        assert len([s for s in lists[side] if s not in (IDENTITY, ZERO)]) == count


@pytest.mark.parametrize('side', [1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112, 128, 256, 512])
def test_rule_reproduces_authors_lists(side):
    """The construction rule gives their list (order included) at every size they covered."""
    theirs = paper_candidates(side, side)
    rule = construct_candidates(side, side)
    assert as_set(rule) - as_set(theirs) == RULE_ONLY.get(side, set())
    assert as_set(theirs) - as_set(rule) == THEIRS_ONLY.get(side, set())
    if side not in RULE_ONLY:
        np.testing.assert_array_equal(rule, theirs)


def test_rule_differs_at_320_only_by_the_copied_list():
    theirs, rule = as_set(paper_candidates(320, 320)), as_set(construct_candidates(320, 320))
    assert theirs == as_set(paper_candidates(256, 256))
    assert (320, 320) in rule and (320, 320) not in theirs
    assert {(20, 20), (40, 40), (80, 80), (160, 160)} <= rule


def test_paper_lists_are_the_authors_normalised():
    lists = authors_lists()
    for side, sizes in lists.items():
        got = paper_candidates(side, side)
        capped = {s if s in (IDENTITY, ZERO) else (min(s[0], side), min(s[1], side))
                  for s in sizes}
        assert as_set(got) == capped
        assert len(got) == len(capped)  # no repeats
        assert tuple(got[-2]) == IDENTITY and tuple(got[-1]) == ZERO
        assert tuple(got[0]) == RELU
    # Their 14x14 list holds (4, 15): on that map it tiles as their (4, 14).
    assert (4, 15) in lists[14] and (4, 14) in as_set(paper_candidates(14, 14))
    # 56x56: repeats in their list ((8, 14) twice) appear once here.
    assert lists[56].count((8, 14)) == 2 and len(paper_candidates(56, 56)) == 96


@pytest.mark.parametrize('hw', [(32, 64), (64, 32), (20, 20), (3, 5), (100, 100), (7, 112),
                                (1, 1), (1, 9), (1024, 1024), (60, 80)])
def test_rule_on_other_maps(hw):
    h, w = hw
    cand = paper_candidates(h, w)
    sizes = as_set(cand)
    assert len(sizes) == len(cand)
    assert {RELU, IDENTITY, ZERO, (h, w)} <= sizes  # ReLU, both codes, the whole map
    normal = cand[(cand[:, 0] > 0) & (cand[:, 1] > 0)]
    assert np.all(normal[:, 0] <= h) and np.all(normal[:, 1] <= w)
    if min(h, w) >= 16:  # on thinner maps capping at the map elongates patches
        # Near-square patches: every patch with both sides <= 16 has aspect ratio <= 8
        # (the whole map and its halvings follow the map's own shape).
        small = normal[(normal <= 16).all(axis=1)]
        assert np.all(small.max(1) <= 8 * small.min(1))
    assert num_drelus(cand, h, w).min() == 0


def test_non_square_is_the_transpose_of_its_transpose():
    a, b = paper_candidates(32, 64), paper_candidates(64, 32)
    assert as_set(a) == {(s[1], s[0]) if s not in (IDENTITY, ZERO) else s for s in as_set(b)}
    assert (32, 64) in as_set(a) and (16, 16) in as_set(a) and (32, 32) in as_set(a)


def test_rescaling_at_other_sides():
    # 20 = 5/8 of 32: the divisor sides 8, 16, 24, 32 become 5, 10, 15, 20.
    sizes = as_set(paper_candidates(20, 20))
    assert {(5, 5), (10, 10), (15, 15), (20, 20)} <= sizes and (24, 24) not in sizes
    # 100 from the 128 template: 16, 32, 64, 128 -> 13, 25, 50, 100; side 6 stays.
    sizes = as_set(paper_candidates(100, 100))
    assert {(13, 13), (25, 25), (50, 50), (100, 100), (6, 6)} <= sizes


def test_paper_has_what_all_pairs_lacks():
    """The point of the change: sides 9..16 on large maps."""
    paper, pairs = as_set(paper_candidates(128, 128)), as_set(all_pairs_candidates(128, 128))
    assert {(16, 16), (12, 12), (10, 10)} <= paper - pairs
    assert (1, 32) in pairs and (1, 32) not in paper


def test_names_and_unions():
    assert candidate_set() is paper_candidates
    assert candidate_set('all_pairs') is all_pairs_candidates
    np.testing.assert_array_equal(default_candidates(14, 14), paper_candidates(14, 14))
    union = candidate_set('paper+all_pairs')(28, 28)
    assert as_set(union) == as_set(paper_candidates(28, 28)) | as_set(all_pairs_candidates(28, 28))
    assert len(union) == len(as_set(union))
    with pytest.raises(ValueError, match="unknown candidate set 'papr'"):
        candidate_set('papr')
    with pytest.raises(ValueError, match='map size must be positive'):
        paper_candidates(0, 4)
    assert set(CANDIDATE_SETS) == {'paper', 'all_pairs'}


def test_from_config():
    cfg = dict(model=dict(block_relu_cfg=dict(candidates='all_pairs')))
    assert candidates_from_cfg(cfg) == 'all_pairs'
    assert candidates_from_cfg(dict(model=dict())) == 'paper'
    with pytest.raises(ValueError, match='unknown candidate set'):
        candidates_from_cfg(dict(model=dict(block_relu_cfg=dict(candidates='nope'))))


def test_restrict():
    measured = candidate_set('paper+all_pairs')(8, 8)
    idx = restrict_candidates(measured, paper_candidates(8, 8))
    assert as_set(measured[idx]) == as_set(paper_candidates(8, 8))
    with pytest.raises(ValueError, match="site 'relu': 41 candidate"):
        restrict_candidates(paper_candidates(8, 8), all_pairs_candidates(8, 8), 'relu')


@pytest.mark.parametrize('flag, expected', [(None, 'all_pairs'), ('paper+all_pairs',
                                                                  'paper+all_pairs')])
def test_extract_tool_takes_the_config_set(tmp_path, flag, expected):
    """``block_relu_cfg.candidates`` chooses the set the tool extracts; ``--candidates`` wins."""
    import os
    import runpy
    import sys

    import mmcv

    from block_relu_plugin.budget.distortion import load_distortion
    rng = np.random.default_rng(0)
    for cls in ('a', 'b'):
        (tmp_path / 'data' / cls).mkdir(parents=True)
        for i in range(2):
            mmcv.imwrite(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                         str(tmp_path / 'data' / cls / f'{i}.png'))
    config = tmp_path / 'tiny.py'
    config.write_text(f"""
default_scope = 'mmpretrain'
model = dict(
    type='BlockReLUImageClassifier',
    data_preprocessor=dict(mean=[127.5] * 3, std=[50.0] * 3, to_rgb=True),
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=4, base_channels=4),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=32),
    block_relu_cfg=dict(candidates='all_pairs'))
train_dataloader = dict(dataset=dict(
    type='CustomDataset', data_root={str(tmp_path / 'data')!r},
    pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
distortion_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
""")
    tool = os.path.join(os.path.dirname(__file__), '..', '..', 'tools', 'extract_distortion.py')
    out = tmp_path / 'dist'
    argv = sys.argv
    try:
        sys.argv = [tool, str(config), 'none', '--out', str(out), '--method', 'sketch',
                    '--num-samples', '2', '--batch-size', '2', '--num-probes', '1',
                    '--shape', '8', '8'] + (['--candidates', flag] if flag else [])
        runpy.run_path(tool, run_name='__main__')
    finally:
        sys.argv = argv
    loaded = load_distortion(str(out))
    assert loaded.manifest['model']['candidates'] == expected
    fn = candidate_set(expected)
    for site in loaded.sites:
        np.testing.assert_array_equal(loaded.candidates[site.name], fn(site.height, site.width))
