"""Calibration of approximate DReLUs: per-site value ranges and pre-shifts.

A DReLU with ``bits < 64`` compares the pre-shifted value
``(v >> shift) << (64 - bits)`` (:func:`.protocols.drelu`): its sign is
right only while ``v`` lies in the signed range ``[-2^(bits-1+shift),
2^(bits-1+shift))`` ulp, i.e. ``2^(bits-1+shift-frac_bits)`` real units;
outside it the sign is silently wrong (at 16 bits and shift 1, +20 gives gate
0). The compared value ``v`` of each site:

- ReLU (``nn.ReLU``, and a Block-ReLU whose patches are all 1 x 1): its input.
- Block-ReLU: each patch sum divided by ``2^floor(log2(valid pixels))``
  (:func:`.protocols.block_relu` shifts it right by that much first), about
  the patch mean times [1, 2).
- MaxPool: the differences ``a - b`` of its tree of pairwise maxima; every
  one is a difference of two values of the same window, so the window's
  ``max - min`` bounds them (at most ``2 max|x|``).

:func:`measure_ranges` runs the float model on training images and records
the largest ``|v|`` per site; :func:`choose_shift` picks the smallest shift
(best precision) that keeps ``margin`` times it inside the compared range.
``compile_model(..., calibration=ranges)`` does this per site.

Example:
    >>> ranges = measure_ranges(model, train_images)   # after the data preprocessor
    >>> program = compile_model(model, bits=16, calibration=ranges)
    >>> print(format_report(program.calibration_report()))
"""
import copy
import functools
import itertools
import math
from typing import Dict, Iterable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conversion.sites import run_tensor_forward
from ..conversion.split import split_reused_relus
from ..layers.block_relu import BlockReLU, _Plan
from .ring import FRAC_BITS

__all__ = ['measure_ranges', 'choose_shift', 'compared_range', 'format_report']


def compared_range(bits: int, shift: int, frac_bits: int = FRAC_BITS) -> float:
    """Real-unit bound R of the values whose sign a DReLU gets right: |v| < R."""
    return math.ldexp(1.0, bits - 1 + shift - frac_bits)


def choose_shift(max_abs: float, bits: int, frac_bits: int = FRAC_BITS,
                 margin: float = 4.0) -> int:
    """The smallest pre-shift with ``margin * max_abs < 2^(bits-1+shift-frac_bits)``.

    The smallest fitting shift drops the fewest low bits, so it resolves
    values nearest 0 best. Shifts run from 0 to ``64 - bits`` (the whole ring).

    Args:
        max_abs: Largest |compared value| of the site, in real units.
        bits: Compared bits (2..64).
        frac_bits: Fixed-point fractional bits.
        margin: Required ratio of the compared range to ``max_abs`` (>= 1):
            room for inputs larger than the calibration images'.

    Raises:
        ValueError: on bad arguments, or when even the largest shift cannot
            hold ``margin * max_abs`` (the values overflow the ring).
    """
    if not 2 <= int(bits) <= 64:
        raise ValueError(f'bits must be in 2..64, got {bits}')
    if not (math.isfinite(margin) and margin >= 1):
        raise ValueError(f'margin must be a finite number >= 1, got {margin}')
    if not (math.isfinite(max_abs) and max_abs >= 0):
        raise ValueError(f'max_abs must be a finite number >= 0, got {max_abs}')
    need = margin * max_abs
    for shift in range(0, 64 - int(bits) + 1):
        if need < compared_range(bits, shift, frac_bits):
            return shift
    raise ValueError(
        f'{margin:g} x {max_abs:g} does not fit the ring at {frac_bits} fractional bits '
        f'(largest compared range {compared_range(bits, 64 - bits, frac_bits):g}): '
        'use fewer fractional bits or a smaller margin')


def _block_relu_compared(mod: BlockReLU, x: Tensor, plans: dict) -> float:
    """max |patch sum| / 2^floor(log2(valid pixels)) over the comparing patches."""
    if x.dim() == 2:  # N x C features: every channel is a 1 x 1 map (as the layer)
        x = x[:, :, None, None]
    N, C, H, W = x.shape
    if mod.is_relu:
        return float(x.abs().max()) if x.numel() else 0.0
    key = (id(mod), C, H, W)
    if key not in plans:
        plans[key] = _Plan(mod.sizes_for(C), H, W, torch.device('cpu'))
    plan = plans[key]
    n_p = plan.n_slots - 2
    if n_p == 0:  # identity and zero channels only: no comparison
        return 0.0
    index = plan.index
    sums = torch.zeros((N, plan.n_slots), dtype=torch.float64).scatter_add_(
        1, index.expand(N, -1), x.reshape(N, C * H * W).double())[:, :n_p]
    counts = torch.bincount(index[index < n_p], minlength=n_p).double()
    return float((sums.abs() / torch.exp2(torch.floor(torch.log2(counts)))).max())


def _max_pool_compared(mod: nn.MaxPool2d, x: Tensor) -> float:
    """Largest window range max - min (bounds every pairwise difference)."""
    args = (mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)
    spread = F.max_pool2d(x, *args) + F.max_pool2d(-x, *args)
    return float(spread.max()) if spread.numel() else 0.0


def measure_ranges(model: nn.Module, images: Union[Tensor, Iterable[Tensor]],
                   batch_size: int = 16) -> Dict[str, float]:
    """Largest |value| each DReLU site compares, on float inputs, in real units.

    Args:
        model: The float (converted) network; not modified. Sites are named
            by module path after :func:`~block_relu_plugin.conversion.split_reused_relus`,
            as the compiler names them.
        images: Training inputs ``(N, C, H, W)`` after the model's data
            preprocessor (what the secure program receives), or an iterable
            of such batches.
        batch_size: Images per float forward (for a tensor ``images``).

    Returns:
        dict: ``{site: max |compared value|}`` for every ``nn.ReLU``,
        :class:`BlockReLU` and ``nn.MaxPool2d`` the inference forward calls.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if isinstance(images, Tensor):
        images = [images[i:i + batch_size] for i in range(0, images.shape[0], batch_size)]
    images = iter(images)
    first = next(images, None)
    if not isinstance(first, Tensor) or first.dim() != 4 or first.shape[0] == 0:
        raise ValueError('images must be a non-empty N x C x H x W tensor (or batches of them), '
                         f'got {tuple(first.shape) if isinstance(first, Tensor) else first!r}')
    # the compiler's copy: auxiliary head dropped, reused ReLUs split (same names)
    m = copy.deepcopy(model).cpu().float().eval()
    if getattr(m, 'auxiliary_head', None) is not None:
        m.auxiliary_head = None
    split_reused_relus(m, tuple(first.shape[2:]), int(first.shape[1]))
    ranges: Dict[str, float] = {}
    plans: dict = {}  # patch index maps per (layer, input shape)

    def hook(path, measure):
        def pre(mod, args):  # before the module runs: an inplace ReLU overwrites x
            v, old = measure(mod, args[0].detach()), ranges.get(path, 0.0)
            ranges[path] = math.nan if math.isnan(v) or math.isnan(old) else max(old, v)
        return pre

    handles = []
    for path, mod in m.named_modules():
        if isinstance(mod, BlockReLU):
            handles.append(mod.register_forward_pre_hook(
                hook(path, functools.partial(_block_relu_compared, plans=plans))))
        elif type(mod) is nn.ReLU:
            handles.append(mod.register_forward_pre_hook(
                hook(path, lambda _, x: float(x.abs().max()) if x.numel() else 0.0)))
        elif type(mod) is nn.MaxPool2d:
            handles.append(mod.register_forward_pre_hook(hook(path, _max_pool_compared)))
    try:
        with torch.no_grad():
            for batch in itertools.chain([first], images):
                run_tensor_forward(m, batch.float())
    finally:
        for h in handles:
            h.remove()
    bad = [k for k, v in ranges.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f'non-finite activations at {bad[0]} (and {len(bad) - 1} more sites)')
    return ranges


def format_report(rows: List[dict]) -> str:
    """A table of :meth:`SecureProgram.calibration_report` rows."""
    lines = [f'{"site":<40} {"kind":<10} {"bits":>4} {"shift":>5} {"max |v|":>10} '
             f'{"range":>10} {"margin":>8}']
    for r in rows:
        mx = '-' if r['max_abs'] is None else f'{r["max_abs"]:.4g}'
        mg = '-' if r['margin'] is None else ('inf' if math.isinf(r['margin'])
                                              else f'{r["margin"]:.3g}')
        lines.append(f'{r["site"]:<40} {r["kind"]:<10} {r["bits"]:>4} {r["shift"]:>5} '
                     f'{mx:>10} {r["range"]:>10.4g} {mg:>8}')
    return '\n'.join(lines)


def check_ranges(ranges: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
    """Validate a calibration (``{site: max_abs}``, e.g. loaded from JSON)."""
    if ranges is None:
        return None
    if not isinstance(ranges, dict):
        raise ValueError(f'calibration must be a dict {{site: max |value|}}, '
                         f'got {type(ranges).__name__}')
    out = {}
    for k, v in ranges.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f'calibration[{k!r}] is not a number: {v!r}') from None
        if not (math.isfinite(f) and f >= 0):
            raise ValueError(f'calibration[{k!r}] must be finite and >= 0, got {v!r}')
        out[str(k)] = f
    return out
