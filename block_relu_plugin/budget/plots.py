"""Plots of a distortion directory and of a solved spec (PNG, matplotlib Agg)."""
import os
from collections import Counter
from typing import List, Sequence

import numpy as np

from ..conversion.sites import ReLUSite
from ..layers.block_relu import IDENTITY, ZERO, num_drelus
from ..spec.spec import BlockReLUSpec
from .distortion import Distortion


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def site_curve(site: ReLUSite, candidates: np.ndarray, values: np.ndarray):
    """A site's distortion against its DReLUs: per candidate cost, the least distortion
    of each channel at exactly that cost, summed over the channels.

    Returns:
        (drelus, distortion): ``site.channels x cost`` and the sums, by increasing cost.
    """
    cost = num_drelus(candidates, site.height, site.width)
    levels = np.unique(cost)
    sums = np.array([values[:, cost == c].min(axis=1).sum() for c in levels])
    return levels * site.channels, sums


def plot_distortion_curves(distortion: Distortion, path: str) -> str:
    """One line per site: distortion against the site's DReLU count, log-log.

    The DReLU axis is the fraction of the site's ReLUs, so sites of different
    sizes share it; identity (0 DReLUs) and exact zeros (the ReLU itself) do
    not show on log axes.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    cmap = plt.get_cmap('viridis')
    n = max(len(distortion.sites) - 1, 1)
    for i, site in enumerate(distortion.sites):
        x, y = site_curve(site, distortion.candidates[site.name], distortion.values[site.name])
        keep = (x > 0) & (y > 0)
        ax.plot(x[keep] / site.relus, y[keep], marker='.', ms=3, lw=1, color=cmap(i / n))
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, n))
    fig.colorbar(sm, ax=ax, label='site index (execution order)')
    ax.set_xscale('log')
    ax.set_yscale('log')
    from matplotlib.ticker import NullFormatter
    ax.xaxis.set_minor_formatter(NullFormatter())  # overlapping minor labels
    ax.set_xlabel('DReLUs / ReLUs of the site')
    ax.set_ylabel('summed channel distortion (least per cost)')
    ax.set_title(f'{distortion.method} distortion, {len(distortion.sites)} sites, '
                 f'{distortion.manifest["num_samples"]} samples')
    ax.grid(True, which='both', alpha=0.3)
    return _save(fig, path)


def _label(size) -> str:
    size = tuple(int(v) for v in size)
    if size == IDENTITY:
        return 'identity'
    if size == ZERO:
        return 'zero'
    return f'{size[0]}x{size[1]}'


def plot_patch_map(spec: BlockReLUSpec, sites: Sequence[ReLUSite], path: str,
                   top: int = 11) -> str:
    """Per site, a stacked bar of the fraction of channels per chosen patch size.

    The ``top`` most frequent patch sizes (by channel count, over all sites)
    get their own colour; the rest are ``other``.
    """
    plt = _pyplot()
    names = [s.name for s in sites if s.name in spec.sites]
    counts = {n: Counter(_label(b) for b in spec.sites[n]) for n in names}
    overall = Counter()
    for c in counts.values():
        overall.update(c)
    labels: List[str] = [lab for lab, _ in overall.most_common(top)]
    if len(overall) > top:
        labels.append('other')
    fig, ax = plt.subplots(figsize=(max(8, 0.3 * len(names) + 3), 5.5))
    bottom = np.zeros(len(names))
    cmap = plt.get_cmap('tab20')
    for j, lab in enumerate(labels):
        frac = np.array([
            (sum(v for k, v in counts[n].items() if k not in labels[:-1]) if lab == 'other'
             else counts[n].get(lab, 0)) / len(spec.sites[n]) for n in names])
        ax.bar(np.arange(len(names)), frac, bottom=bottom, color=cmap(j % 20), label=lab,
               width=0.85)
        bottom += frac
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel('fraction of channels')
    ax.set_ylim(0, 1)
    meta = spec.metadata
    title = 'patch sizes per site'
    if meta.get('drelus') is not None and meta.get('relus'):
        title += (f' - {meta["drelus"]:,} DReLUs ({100 * meta["drelus"] / meta["relus"]:.2f} % '
                  f'of {meta["relus"]:,}), solver {meta.get("solver", "?")}')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _save(fig, path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path

