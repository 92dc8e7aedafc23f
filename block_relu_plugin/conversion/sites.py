"""ReLU sites: where a network applies a ReLU, with the shape it applies it to.

A site is named by the path of its module in the model (after
:func:`split_reused_relus`), e.g. ``backbone.layer1.0.relu2`` or
``decode_head.aspp_modules.1.activate``. The name is stable across builds of
the same config and is the key of spec files.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..layers.block_relu import BlockReLU, num_drelus

#: Activation modules that are Block-ReLU sites.
SITE_TYPES = (nn.ReLU, BlockReLU)


@dataclass(frozen=True)
class ReLUSite:
    """One ReLU application of a network at a given input size."""
    name: str
    channels: int
    height: int
    width: int

    @property
    def relus(self) -> int:
        """Ordinary ReLU count (one DReLU per activation)."""
        return self.channels * self.height * self.width

    def drelus(self, block_sizes) -> np.ndarray:
        """Per-channel DReLU count of ``block_sizes`` ``(C, 2)`` at this site."""
        return num_drelus(block_sizes, self.height, self.width)


def run_tensor_forward(model: nn.Module, inputs: torch.Tensor):
    """The inference forward of an OpenMMLab model (``mode='tensor'``) or a plain module.

    For an mmseg segmentor this is backbone + decode head: auxiliary heads
    only run for training losses, so their ReLUs are not sites.
    """
    from mmengine.model import BaseModel
    if isinstance(model, BaseModel):
        return model(inputs, mode='tensor')
    return model(inputs)


def infer_in_channels(model: nn.Module) -> int:
    """Input channels of ``model``: those of its first convolution, else 3."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return 3


class SiteError(RuntimeError):
    """A ReLU site that cannot be listed (raised while tracing, never retried)."""


class TraceError(ValueError):
    """The model does not run on the zero image traced to find its sites."""


class NoSitesError(ValueError):
    """A network without ReLU sites (its activations, if any, are not convertible)."""


#: Tried in turn when no input size is given: 224 for fixed-size ImageNet
#: classifier FCs (VGG); site names and channels do not depend on the size.
DEFAULT_TRACE_SIZES = ((64, 64), (224, 224))


def trace_forward(model: nn.Module, fn: Callable[[Callable[[], object]], None],
                  input_size: Union[None, int, Sequence[int]] = None,
                  in_channels: Optional[int] = None,
                  what: str = 'trace the model') -> Tuple[int, int]:
    """Call ``fn(forward)``, where ``forward()`` runs the model on a zero image.

    The model is in eval mode without grad meanwhile (modes are restored).
    ``input_size`` None tries :data:`DEFAULT_TRACE_SIZES` until one runs.

    Returns:
        tuple: the ``(H, W)`` that ran.

    Raises:
        TraceError: one line naming the sizes tried and the first error.
        SiteError: from ``fn``'s hooks, as is.
    """
    sizes = DEFAULT_TRACE_SIZES if input_size is None else (_pair(input_size), )
    in_channels = infer_in_channels(model) if in_channels is None else int(in_channels)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    modes = {m: m.training for m in model.modules()}
    errors = []
    try:
        model.eval()
        for size in sizes:
            # in the model's own float dtype (a float64 model gets a float64 image)
            dtype = param.dtype if param is not None and param.is_floating_point() else None
            x = torch.zeros(1, in_channels, *size, device=device, dtype=dtype)
            try:
                with torch.no_grad():
                    fn(lambda: run_tensor_forward(model, x))
                return size
            except SiteError:
                raise
            except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as e:
                errors.append(e)
    finally:
        for m, mode in modes.items():
            m.training = mode
    tried = ', '.join(f'{h}x{w}' for h, w in sizes)
    first = (str(errors[0]).strip().splitlines() or [''])[0]
    raise TraceError(f'cannot {what}: its forward fails on a {in_channels}-channel zero image '
                     f'of {tried} ({type(errors[0]).__name__}: {first}); give the input size '
                     'it needs (block_relu_cfg input_size, or --shape)')


def site_from_shape(name: str, shape: Sequence[int]) -> ReLUSite:
    """The site ``name`` whose ReLU sees inputs of ``shape`` (``N x C x H x W`` or ``N x C``)."""
    if len(shape) == 4:
        return ReLUSite(name, int(shape[1]), int(shape[2]), int(shape[3]))
    if len(shape) == 2:
        return ReLUSite(name, int(shape[1]), 1, 1)
    raise SiteError(f'ReLU site {name!r} sees a {len(shape)}-d input; '
                    'only N x C x H x W and N x C are supported')


def find_relu_sites(model: nn.Module,
                    input_size: Union[None, int, Sequence[int]] = None,
                    in_channels: Optional[int] = None) -> List[ReLUSite]:
    """List the ReLU sites of ``model`` in execution order.

    Runs one inference forward on a zero image of ``input_size`` (eval mode,
    no grad; the model's mode is restored) with hooks on every ``nn.ReLU`` and
    :class:`BlockReLU`.

    Args:
        model: The network (an mmpretrain classifier, mmseg segmentor or any
            module taking an ``N x C x H x W`` tensor), split by
            :func:`split_reused_relus`.
        input_size: ``(H, W)`` or a single side; default 64, or 224 if the
            model does not run at 64 (sites' H and W depend on it).
        in_channels: Channels of the input image (default: the first
            convolution's).

    Returns:
        list[ReLUSite]: one entry per ReLU application.

    Raises:
        SiteError: if one ReLU module is applied more than once (it must be
            split first, see :func:`split_reused_relus`).
        NoSitesError: if the model has no ReLU site; the message names the
            activations it has instead and the option that converts them.
        TraceError: if the model does not run at ``input_size``.
    """
    names = {m: n for n, m in model.named_modules() if isinstance(m, SITE_TYPES)}
    sites: List[ReLUSite] = []
    seen = set()

    def hook(module, args):
        name = names[module]
        if name in seen:
            raise SiteError(
                f'ReLU module {name!r} is applied more than once per forward; '
                'each application must be its own module (split_reused_relus does that)')
        seen.add(name)
        sites.append(site_from_shape(name, args[0].shape))

    def run(forward):
        sites.clear()
        seen.clear()
        handles = [m.register_forward_pre_hook(hook) for m in names]
        try:
            forward()
        finally:
            for handle in handles:
                handle.remove()

    trace_forward(model, run, input_size, in_channels, what='list the ReLU sites')
    if not sites:
        raise NoSitesError(no_sites_message(model))
    return sites


#: What makes a non-convertible activation type a site, where something does.
_ACTIVATION_FIXES = {'ReLU6': "relu6_to_relu=True in block_relu_cfg turns ReLU6 into ReLU"}
_NOT_ACTIVATIONS = {'Softmax', 'Softmin', 'LogSoftmax', 'Softmax2d', 'MultiheadAttention',
                    'Identity'}


def no_sites_message(model: nn.Module) -> str:
    """One line: the model has no ReLU site, the activation types it has, and what helps."""
    found: Dict[str, int] = {}
    for m in model.modules():
        mod = type(m).__module__
        name = type(m).__name__
        if (mod == 'torch.nn.modules.activation' or mod.startswith('mmcv.cnn.bricks.')
                and name in ('HSwish', 'HSigmoid', 'Swish', 'Clamp', 'GELU')) \
                and name not in _NOT_ACTIVATIONS and not isinstance(m, SITE_TYPES):
            found[name] = found.get(name, 0) + 1
    head = f'{type(model).__name__} has no ReLU sites (no nn.ReLU module runs in its forward)'
    if not found:
        return head
    kinds = ', '.join(f'{n} (x{c})' for n, c in sorted(found.items()))
    fixes = [_ACTIVATION_FIXES[n] for n in sorted(found) if n in _ACTIVATION_FIXES]
    rest = [n for n in sorted(found) if n not in _ACTIVATION_FIXES]
    tail = '; '.join(fixes + ([f'{", ".join(rest)} cannot be Block-ReLU sites (only ReLU can)']
                              if rest else []))
    return f'{head}: its activations are {kinds}, which are not sites; {tail}'


def count_relus(sites: Sequence[ReLUSite]) -> int:
    """Total ordinary ReLU count of ``sites``."""
    return int(sum(s.relus for s in sites))


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)
