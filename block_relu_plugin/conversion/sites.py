"""ReLU sites: where a network applies a ReLU, with the shape it applies it to.

A site is named by the path of its module in the model (after
:func:`split_reused_relus`), e.g. ``backbone.layer1.0.relu2`` or
``decode_head.aspp_modules.1.activate``. The name is stable across builds of
the same config and is the key of spec files.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

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


def find_relu_sites(model: nn.Module,
                    input_size: Union[int, Sequence[int]] = 64,
                    in_channels: int = 3) -> List[ReLUSite]:
    """List the ReLU sites of ``model`` in execution order.

    Runs one inference forward on a zero image of ``input_size`` (eval mode,
    no grad; the model's mode is restored) with hooks on every ``nn.ReLU`` and
    :class:`BlockReLU`.

    Args:
        model: The network (an mmpretrain classifier, mmseg segmentor or any
            module taking an ``N x C x H x W`` tensor).
        input_size: ``(H, W)`` or a single side.
        in_channels: Channels of the input image.

    Returns:
        list[ReLUSite]: one entry per ReLU application.

    Raises:
        RuntimeError: if one ReLU module is applied more than once (it must be
            split first, see :func:`split_reused_relus`).
    """
    h, w = _pair(input_size)
    names = {m: n for n, m in model.named_modules() if isinstance(m, SITE_TYPES)}
    sites: List[ReLUSite] = []
    seen = {}

    def hook(module, args):
        x = args[0]
        name = names[module]
        if name in seen:
            raise RuntimeError(
                f'ReLU module {name!r} is applied more than once per forward; '
                'each application must be its own module (split_reused_relus '
                'handles the mmpretrain/mmseg ResNet blocks)')
        seen[name] = True
        if x.dim() == 4:
            c, hh, ww = x.shape[1:]
        elif x.dim() == 2:
            c, hh, ww = x.shape[1], 1, 1
        else:
            raise RuntimeError(f'ReLU site {name!r} sees a {x.dim()}-d input; '
                               'only N x C x H x W and N x C are supported')
        sites.append(ReLUSite(name, int(c), int(hh), int(ww)))

    handles = [m.register_forward_pre_hook(hook) for m in names]
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    try:
        model.eval()
        with torch.no_grad():
            run_tensor_forward(model, torch.zeros(1, in_channels, h, w, device=device))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return sites


def count_relus(sites: Sequence[ReLUSite]) -> int:
    """Total ordinary ReLU count of ``sites``."""
    return int(sum(s.relus for s in sites))


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)
