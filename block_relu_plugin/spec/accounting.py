"""DReLU accounting of a network under a spec (the data behind count_drelus.py)."""
from typing import Optional, Sequence

from ..conversion.sites import ReLUSite, count_relus
from .spec import BlockReLUSpec


def drelu_report(sites: Sequence[ReLUSite], spec: Optional[BlockReLUSpec] = None,
                 partial: bool = False) -> dict:
    """Per-site channels, spatial size, ReLUs and DReLUs, and the totals.

    Args:
        sites: The sites at the input size of interest.
        spec: Patch sizes; None counts every site as ReLU.
        partial: Allow sites the spec does not name (counted as ReLU), as
            model building does with ``block_relu_cfg`` ``partial=True``.

    Returns:
        dict with ``sites`` (a list of per-site dicts), ``relus``, ``drelus``
        and ``fraction`` (DReLUs / ReLUs).
    """
    if spec is not None:
        spec.validate(sites, partial=partial)  # the same check as model building
        per_site = spec.drelus(sites)
    else:
        per_site = {s.name: s.relus for s in sites}
    rows = [dict(name=s.name, channels=s.channels, height=s.height, width=s.width,
                 relus=s.relus, drelus=per_site[s.name]) for s in sites]
    relus = count_relus(sites)
    drelus = sum(per_site.values())
    return dict(sites=rows, relus=relus, drelus=drelus,
                fraction=drelus / relus if relus else 0.0)


def format_report(report: dict) -> str:
    """A fixed-width table of :func:`drelu_report`."""
    width = max([len('site')] + [len(r['name']) for r in report['sites']])
    lines = [f'{"site":<{width}}  {"C":>5}  {"H x W":>9}  {"ReLUs":>11}  {"DReLUs":>11}  {"%":>7}']
    for r in report['sites']:
        frac = 100.0 * r['drelus'] / r['relus'] if r['relus'] else 0.0
        hw = f"{r['height']}x{r['width']}"
        lines.append(f"{r['name']:<{width}}  {r['channels']:>5}  {hw:>9}  "
                     f"{r['relus']:>11,}  {r['drelus']:>11,}  {frac:>6.2f}%")
    lines.append(f'{"total":<{width}}  {"":>5}  {"":>9}  {report["relus"]:>11,}  '
                 f'{report["drelus"]:>11,}  {100 * report["fraction"]:>6.2f}%')
    return '\n'.join(lines)
