"""Module rewrites: Block-ReLU conversion and the paper's architecture edits.

Each function rewrites ``module`` in place where it can and returns it (the
root itself is replaced when it is the target), in the style of
:func:`mmengine.model.revert_sync_batchnorm`.
"""
from typing import Callable, Optional, Sequence, Union

from torch import nn

from ..layers.block_relu import BlockReLU
from ..spec.spec import BlockReLUSpec, SpecError
from .sites import SITE_TYPES
from .split import split_and_find_sites


def _replace(module: nn.Module, match: Callable[[str, nn.Module], Optional[nn.Module]],
             prefix: str = '') -> nn.Module:
    """Depth-first rewrite: ``match(path, child)`` returns a replacement or None."""
    new = match(prefix, module)
    if new is not None:
        return new
    for name, child in module.named_children():
        path = f'{prefix}.{name}' if prefix else name
        new_child = _replace(child, match, path)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def maxpool_to_avgpool(module: nn.Module) -> nn.Module:
    """Replace every ``MaxPool2d(3, 2, 1)`` (the ResNet stem pool) by ``AvgPool2d(3, 2, 1)``.

    Under MPC a 3x3 max costs 8 sequential DReLU+multiply rounds per output
    while an average is local (the paper's edit, followed by a finetune).
    Padding counts in the average, as in the authors' secure runtime.
    """
    def match(_, m):
        if isinstance(m, nn.MaxPool2d) and _as_tuple(m.kernel_size) == (3, 3) \
                and _as_tuple(m.stride) == (2, 2) and _as_tuple(m.padding) == (1, 1):
            return nn.AvgPool2d(3, 2, 1, count_include_pad=True)
        return None
    return _replace(module, match)


def relu6_to_relu(module: nn.Module) -> nn.Module:
    """Replace every ``nn.ReLU6`` by ``nn.ReLU`` (MobileNetV2; makes the sites convertible)."""
    def match(_, m):
        return nn.ReLU(inplace=m.inplace) if isinstance(m, nn.ReLU6) else None
    return _replace(module, match)


def convert_block_relu(module: nn.Module,
                       spec: Union[BlockReLUSpec, str],
                       partial: bool = False,
                       input_size: Union[None, int, Sequence[int]] = None) -> nn.Module:
    """Convert the sites named in ``spec`` to :class:`BlockReLU`.

    Reused ReLU modules are split first, so site names match
    :func:`find_relu_sites`. The spec is validated against the model's sites
    (names and channel counts) before anything is changed.

    Args:
        module: The network.
        spec: A :class:`BlockReLUSpec` or the path of a spec file.
        partial: Allow model sites that the spec does not name (they stay ReLU).
        input_size: Input side or ``(H, W)`` used to discover the sites;
            names and channel counts do not depend on it, so any size the
            model accepts will do (default 64, or 224 if it does not run at 64).

    Returns:
        nn.Module: the converted module.

    Raises:
        SpecError: if the spec does not fit the model.
        NoSitesError: if the model has no ReLU site.
    """
    if not isinstance(spec, BlockReLUSpec):
        spec = BlockReLUSpec.load(spec)
    spec.validate(split_and_find_sites(module, input_size), partial=partial)

    def match(path, m):
        if path in spec.sites:
            if not isinstance(m, SITE_TYPES):
                raise SpecError(f'site {path!r} is a {type(m).__name__}, not a ReLU')
            return BlockReLU(spec.sites[path], inplace=getattr(m, 'inplace', False))
        return None
    return _replace(module, match)


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
