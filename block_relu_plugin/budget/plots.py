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


#: Patch areas mapped onto the colour scale: 1x1 to 512x512 (larger ones get its last colour).
AREA_RANGE = (1, 2 ** 18)
IDENTITY_COLOUR = (0.80, 0.80, 0.80, 1.0)
ZERO_COLOUR = (0.0, 0.0, 0.0, 1.0)


def patch_colour(size) -> tuple:
    """The colour of a patch size, the same in every plot.

    Hue from the patch area (log scale over :data:`AREA_RANGE`, ``turbo``);
    tall patches (``bh > bw``) are lighter and wide ones darker, by the log of
    the aspect ratio, so two sizes share a colour only if they are equal.
    Identity is light grey, zero black.

    Returns:
        tuple: RGBA floats.
    """
    import matplotlib
    bh, bw = (int(v) for v in size)
    if (bh, bw) == IDENTITY:
        return IDENTITY_COLOUR
    if (bh, bw) == ZERO:
        return ZERO_COLOUR
    lo, hi = np.log2(AREA_RANGE[0]), np.log2(AREA_RANGE[1])
    t = float(np.clip((np.log2(bh * bw) - lo) / (hi - lo), 0, 1))
    rgb = np.array(matplotlib.colormaps['turbo'](0.08 + 0.86 * t)[:3])
    shade = float(np.clip(np.log2(bh / bw) / 9, -1, 1)) * 0.6  # aspect 512 -> 60 % of the way
    rgb = rgb + (1 - rgb) * shade if shade > 0 else rgb * (1 + shade)
    return (*rgb.tolist(), 1.0)


def _order(size) -> tuple:
    """Identity, zero, then by area, then wide before tall."""
    size = tuple(int(v) for v in size)
    if size == IDENTITY:
        return (0, 0, 0)
    if size == ZERO:
        return (1, 0, 0)
    return (2, size[0] * size[1], size[0])


def patch_size_counts(spec: BlockReLUSpec, sites: Sequence[ReLUSite]) -> List[tuple]:
    """Per site (in ``sites`` order, those the spec names): ``(site, [(size, channels)])``,
    every chosen size, identity first, then by area."""
    out = []
    for site in sites:
        if site.name not in spec.sites:
            continue
        counts = Counter(tuple(int(v) for v in b) for b in spec.sites[site.name])
        out.append((site, sorted(counts.items(), key=lambda kv: _order(kv[0]))))
    return out


def patch_size_figure(spec: BlockReLUSpec, sites: Sequence[ReLUSite]):
    """The figure of :func:`plot_patch_map` (returned, not saved)."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    table = patch_size_counts(spec, sites)
    n = len(table)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(max(8.0, 0.42 * n + 3.0), 9.5), sharex=True,
                                 gridspec_kw=dict(height_ratios=[3.2, 1]))
    x = np.arange(n)
    for i, (site, counts) in enumerate(table):
        bottom = 0.0
        for size, count in counts:
            frac = count / site.channels
            ax.bar(i, frac, bottom=bottom, width=0.86, color=patch_colour(size),
                   edgecolor='white', linewidth=0.4)
            if frac >= 0.028:  # label every segment tall enough to hold one
                text = 'id' if size == IDENTITY else '0' if size == ZERO else _label(size)
                rgb = np.array(patch_colour(size)[:3])
                dark = rgb @ np.array([0.299, 0.587, 0.114]) < 0.5
                ax.text(i, bottom + frac / 2, text, ha='center', va='center', fontsize=5,
                        color='white' if dark else 'black', clip_on=True)
            bottom += frac
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel('fraction of the site\'s channels\n(bottom up: identity, zero, then by '
                  'patch area)')
    meta = spec.metadata
    title = 'chosen patch sizes per site (every size shown; labels where they fit)'
    if meta.get('drelus') is not None and meta.get('relus'):
        title += (f'\n{meta["drelus"]:,} DReLUs = {100 * meta["drelus"] / meta["relus"]:.2f} % '
                  f'of {meta["relus"]:,} ReLUs, solver {meta.get("solver", "?")}')
    ax.set_title(title, fontsize=9, pad=16)

    # Fixed colour scale: hue = area, lighter = tall, darker = wide.
    import matplotlib
    import matplotlib.ticker  # noqa: F401
    sm = matplotlib.cm.ScalarMappable(
        cmap=matplotlib.colors.ListedColormap(
            [matplotlib.colormaps['turbo'](0.08 + 0.86 * t) for t in np.linspace(0, 1, 256)]),
        norm=matplotlib.colors.LogNorm(*AREA_RANGE))
    cbar = fig.colorbar(sm, ax=[ax, bx], fraction=0.03, pad=0.01, shrink=0.74, anchor=(0, 1))
    cbar.set_label('patch area bh x bw (square shade; tall lighter, wide darker)', fontsize=7)
    cbar.ax.tick_params(labelsize=7)
    ax.legend(handles=[Patch(color=IDENTITY_COLOUR, label='identity (id, 0 DReLUs)'),
                       Patch(color=ZERO_COLOUR, label='zero (0)')],
              fontsize=7, loc='lower left', bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)

    share = [100 * int(site.drelus(spec.sites[site.name]).sum()) / site.relus
             for site, _ in table]
    bx.bar(x, share, width=0.86, color='0.45')
    bx.set_yscale('log')
    bx.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    bx.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
    bx.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    low = bx.get_ylim()[0]
    for i, value in enumerate(share):
        if value == 0:  # every channel identity (or zero): nothing to draw on a log axis
            bx.text(i, low, '0', ha='center', va='bottom', fontsize=7)
    bx.set_ylabel('DReLUs, % of\nthe site\'s ReLUs', fontsize=8)
    bx.grid(True, axis='y', which='major', alpha=0.3)
    bx.set_xticks(x)
    bx.set_xticklabels([f'{site.name} ({site.height}x{site.width})' for site, _ in table],
                       rotation=90, fontsize=6)
    return fig


def plot_patch_map(spec: BlockReLUSpec, sites: Sequence[ReLUSite], path: str) -> str:
    """Per site, every chosen patch size as a share of the channels, and the DReLUs it costs.

    Top: a stacked bar per site, one segment per chosen size (identity at the
    bottom, then by area), each in its fixed :func:`patch_colour`; nothing is
    pooled into "other". Bottom: the site's DReLUs as a percentage of its ReLUs.
    """
    fig = patch_size_figure(spec, sites)
    return _save(fig, path, tight=False)


def _save(fig, path: str, tight: bool = True) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches=None if tight else 'tight')
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path

