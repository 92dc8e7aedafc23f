"""Block-ReLU: one sign decision (DReLU) per patch of each channel.

Semantics (METHOD.md): channel ``c`` of an ``N x C x H x W`` input has a patch
size ``(bh, bw)``. The map is tiled into ``bh x bw`` patches anchored at the
top-left corner (the last row/column of patches may be partial). A patch is
kept where the mean of its valid pixels is ``> 0`` and zeroed otherwise; the
gate is a constant for autograd. ``(1, 1)`` is the ordinary ReLU, ``(0, 1)``
the identity and ``(1, 0)`` the zero map; neither special code costs a DReLU.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

IDENTITY = (0, 1)
ZERO = (1, 0)
RELU = (1, 1)

BlockSizes = Union[Sequence[Sequence[int]], np.ndarray, Tensor]


def num_drelus(block_sizes, height: int, width: int) -> np.ndarray:
    """DReLUs paid per channel: ``ceil(H/bh) * ceil(W/bw)``, 0 for the special codes.

    This is the one definition of the DReLU count; every other part of the
    plugin (accounting, knapsack costs, spec metadata, MPC cost model) calls it.

    Args:
        block_sizes: ``(C, 2)`` integer patch sizes, or a single ``(bh, bw)``.
        height: Spatial height of the activation.
        width: Spatial width of the activation.

    Returns:
        np.ndarray: ``(C,)`` int64 DReLU counts (a 0-d array for a single size).
    """
    bs = np.asarray(block_sizes, dtype=np.int64)
    bh, bw = bs[..., 0], bs[..., 1]
    special = (bh == 0) | (bw == 0)
    safe_h, safe_w = np.where(special, 1, bh), np.where(special, 1, bw)
    counts = (-(-height // safe_h)) * (-(-width // safe_w))
    return np.where(special, 0, counts).astype(np.int64)


def check_block_sizes(block_sizes, num_channels: Optional[int] = None) -> np.ndarray:
    """Validate and return block sizes as a ``(C, 2)`` int64 array.

    Raises:
        ValueError: on a wrong shape, negative, non-integer or ``(0, 0)`` size,
            or a channel count other than ``num_channels``.
    """
    arr = np.asarray(block_sizes)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f'block sizes must have shape (C, 2), got {arr.shape}')
    if arr.dtype.kind == 'f':
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError('block sizes must be integers')
    elif arr.dtype.kind not in 'iu':
        raise ValueError(f'block sizes must be integers, got dtype {arr.dtype}')
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise ValueError('block sizes must be non-negative')
    if np.any((arr[:, 0] == 0) & (arr[:, 1] == 0)):
        raise ValueError('(0, 0) is not a block size; use (0, 1) for identity')
    if num_channels is not None and arr.shape[0] != num_channels:
        raise ValueError(f'expected block sizes for {num_channels} channels, '
                         f'got {arr.shape[0]}')
    return arr


class _Plan:
    """Index maps that turn a Block-ReLU of one spatial size into two passes.

    Every pixel of every channel is assigned the flat index of its patch in a
    per-sample vector of patch sums: one ``scatter_add`` builds all patch sums
    (the sign of a sum equals the sign of the mean over valid pixels), and one
    ``gather`` broadcasts the patch signs back to the pixels. The number of
    distinct patch sizes does not matter, and there is no loop over channels.
    Two extra slots hold the constant gates of identity (1) and zero (0)
    channels. Channels that are plain ReLU and channels whose patch covers the
    whole map skip the index machinery.
    """

    def __init__(self, block_sizes: np.ndarray, height: int, width: int,
                 device: torch.device):
        C = block_sizes.shape[0]
        bh, bw = block_sizes[:, 0], block_sizes[:, 1]
        ident = (bh == 0) & (bw > 0)
        zero = (bw == 0) & (bh > 0)
        special = ident | zero
        counts = num_drelus(block_sizes, height, width)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        n_patches = int(offsets[-1])
        rows = np.arange(height)[None, :]
        cols = np.arange(width)[None, :]
        sh = np.where(special, 1, bh)[:, None]
        sw = np.where(special, 1, bw)[:, None]
        wb = -(-width // sw)  # patches per row, per channel
        index = (offsets[:-1, None, None] + (rows // sh)[:, :, None] * wb[:, :, None]
                 + (cols // sw)[:, None, :])
        index[ident] = n_patches
        index[zero] = n_patches + 1
        self.n_slots = n_patches + 2
        self.index = torch.as_tensor(index.reshape(C * height * width),
                                     dtype=torch.long, device=device)


class BlockReLU(nn.Module):
    """Block-ReLU with a patch size per channel.

    Args:
        block_sizes: ``(C, 2)`` per-channel patch sizes, one ``(bh, bw)`` for
            every channel, or None for an ordinary ReLU (all ``(1, 1)``).
        inplace: Overwrite the input, as ``nn.ReLU(inplace=True)`` does.

    The block sizes are a non-persistent buffer: a converted model's
    ``state_dict`` equals the plain model's, so checkpoints load both ways.

    Examples:
        >>> act = BlockReLU([[1, 1], [2, 2], [0, 1]])
        >>> y = act(torch.randn(4, 3, 7, 7))
    """

    def __init__(self,
                 block_sizes: Optional[BlockSizes] = None,
                 inplace: bool = False):
        super().__init__()
        self.inplace = inplace
        if block_sizes is None:
            sizes = None
        else:
            arr = np.asarray(block_sizes.cpu() if isinstance(block_sizes, Tensor)
                             else block_sizes)
            sizes = torch.as_tensor(
                check_block_sizes(arr.reshape(1, 2) if arr.ndim == 1 else arr))
        self.register_buffer('block_sizes', sizes, persistent=False)
        self._plans: Dict[Tuple, _Plan] = {}

    @property
    def is_relu(self) -> bool:
        """True when every channel is an ordinary ReLU."""
        return self.block_sizes is None or bool((self.block_sizes == 1).all())

    def sizes_for(self, num_channels: int) -> np.ndarray:
        """The ``(C, 2)`` patch sizes for an input with ``num_channels`` channels."""
        if self.block_sizes is None:
            return np.ones((num_channels, 2), dtype=np.int64)
        sizes = self.block_sizes.cpu().numpy()
        if sizes.shape[0] == 1:
            return np.repeat(sizes, num_channels, axis=0)
        if sizes.shape[0] != num_channels:
            raise ValueError(f'BlockReLU has block sizes for {sizes.shape[0]} '
                             f'channels but got an input with {num_channels}')
        return sizes

    def gate(self, x: Tensor) -> Tensor:
        """The 0/1 gate of input ``x`` (``N x C x H x W``, dtype of ``x``); no autograd."""
        N, C, H, W = x.shape
        key = (C, H, W, x.device)
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(self.sizes_for(C), H, W, x.device)
            self._plans = {key: plan}  # one cached shape; shapes rarely vary
        with torch.no_grad():
            # Patch sums are accumulated in float32 at least, so float16 inputs
            # get the same signs as a float32 reference.
            acc = x.reshape(N, C * H * W)
            if acc.dtype in (torch.float16, torch.bfloat16):
                acc = acc.float()
            index = plan.index.expand(N, -1)
            sums = acc.new_zeros(N, plan.n_slots).scatter_add_(1, index, acc)
            signs = (sums > 0).to(x.dtype)
            signs[:, -2] = 1  # identity channels
            signs[:, -1] = 0  # zero channels
            return signs.gather(1, index).view(N, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        if self.is_relu:
            return F.relu(x, inplace=self.inplace)
        if x.dim() == 2:  # N x C features: every channel is a 1 x 1 map
            return self.forward(x[:, :, None, None]).view_as(x)
        if x.dim() != 4:
            raise ValueError(f'BlockReLU expects an N x C x H x W or N x C input, '
                             f'got {tuple(x.shape)}')
        # A float 0/1 multiply vectorises far better than a boolean select on
        # the CPU; autograd saves only the gate, so dy/dx = gate as for ReLU.
        # (An infinite value in a gated-off patch becomes NaN rather than 0.)
        gate = self.gate(x)
        return x.mul_(gate) if self.inplace else x * gate

    def _apply(self, fn, *args, **kwargs):
        self._plans = {}  # index maps follow the module's device
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        if self.block_sizes is None:
            return f'relu, inplace={self.inplace}'
        sizes, counts = np.unique(self.block_sizes.cpu().numpy(), axis=0, return_counts=True)
        desc = ', '.join(f'{tuple(int(v) for v in s)}x{n}' for s, n in zip(sizes, counts))
        return f'{desc}, inplace={self.inplace}'


MODELS.register_module(module=BlockReLU, force=True)
