"""The patch-size plot: every chosen size drawn, each in its fixed colour."""
import numpy as np
import pytest

from block_relu_plugin.budget.candidates import all_pairs_candidates, paper_candidates
from block_relu_plugin.budget.plots import (patch_colour, patch_size_counts, patch_size_figure,
                                            plot_patch_map)
from block_relu_plugin.conversion.sites import ReLUSite
from block_relu_plugin.layers.block_relu import IDENTITY, ZERO
from block_relu_plugin.spec.spec import BlockReLUSpec

SITES = [ReLUSite('stem', 16, 32, 32), ReLUSite('mid', 32, 8, 8), ReLUSite('last', 8, 2, 2)]


def random_spec(seed):
    """Many sizes per site with a long tail of rare ones (1 channel each), identity included."""
    rng = np.random.default_rng(seed)
    sizes = {}
    for s in SITES:
        cand = paper_candidates(s.height, s.width)
        chosen = cand[rng.choice(len(cand), s.channels)]
        chosen[0] = IDENTITY
        sizes[s.name] = chosen
    spec = BlockReLUSpec(sizes)
    spec.describe(SITES)
    return spec


def segments(fig):
    """(x, height, facecolor) of the top panel's bars."""
    ax = fig.axes[0]
    return [(round(p.get_x() + p.get_width() / 2), p.get_height(), p.get_facecolor())
            for p in ax.patches]


def test_colour_is_fixed_and_distinct():
    sizes = {tuple(s) for s in paper_candidates(512, 512).tolist()}
    sizes |= {tuple(s) for s in all_pairs_candidates(64, 64).tolist()}
    colours = {s: patch_colour(s) for s in sizes}
    assert len(set(colours.values())) == len(sizes)  # no two sizes alike
    assert all(patch_colour(s) == c for s, c in colours.items())  # no state between calls
    assert patch_colour(IDENTITY) != patch_colour(ZERO)


@pytest.mark.parametrize('seed', [0, 1])
def test_every_chosen_size_is_a_segment_in_its_colour(seed):
    import matplotlib.pyplot as plt
    spec = random_spec(seed)
    fig = patch_size_figure(spec, SITES)
    try:
        drawn = segments(fig)
        table = patch_size_counts(spec, SITES)
        expected = [(i, count / site.channels, patch_colour(size))
                    for i, (site, counts) in enumerate(table) for size, count in counts]
        assert len(drawn) == len(expected)
        for (x, h, c), (xe, he, ce) in zip(drawn, expected):
            assert x == xe and h == pytest.approx(he) and np.allclose(c, ce)
        for i, site in enumerate(SITES):  # each bar is the whole site
            assert sum(h for x, h, _ in drawn if x == i) == pytest.approx(1.0)
            chosen = {tuple(b) for b in spec.sites[site.name].tolist()}
            assert {size for size, _ in table[i][1]} == chosen and IDENTITY in chosen
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert 'other' not in texts and 'id' in texts
    finally:
        plt.close(fig)


def test_plot_writes_png(tmp_path):
    path = plot_patch_map(random_spec(0), SITES, str(tmp_path / 'p' / 'patch_sizes.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
