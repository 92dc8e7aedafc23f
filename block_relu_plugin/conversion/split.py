"""Give every ReLU application its own module.

mmpretrain's and mmseg's ResNet blocks call one ``self.relu`` two or three
times, at different channel counts. Each call is a separate Block-ReLU site,
so those blocks are switched (by class, in place) to subclasses whose forward
is the upstream forward verbatim except that call ``i`` uses ``self.relu{i}``.
The swap keeps parameters, buffers and state-dict keys unchanged.
"""
import copy
from typing import Dict, Type

import torch.utils.checkpoint as cp
from torch import nn


def _run(block, inner, x):
    # Same checkpointing rule as upstream; use_reentrant is passed explicitly
    # (torch >= 2.4 warns otherwise).
    if block.with_cp and x.requires_grad:
        return cp.checkpoint(inner, x, use_reentrant=False)
    return inner(x)


def _basic_block_forward(self, x):
    def _inner_forward(x):
        identity = x
        out = self.conv1(x)
        out = self.norm1(out)
        out = self.relu1(out)
        out = self.conv2(out)
        out = self.norm2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        if hasattr(self, 'drop_path'):  # mmpretrain only
            out = self.drop_path(out)
        out += identity
        return out

    return self.relu2(_run(self, _inner_forward, x))


def _bottleneck_forward(self, x):
    with_plugins = getattr(self, 'with_plugins', False)  # mmseg only

    def _inner_forward(x):
        identity = x
        out = self.conv1(x)
        out = self.norm1(out)
        out = self.relu1(out)
        if with_plugins:
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
        out = self.conv2(out)
        out = self.norm2(out)
        out = self.relu2(out)
        if with_plugins:
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
        out = self.conv3(out)
        out = self.norm3(out)
        if with_plugins:
            out = self.forward_plugin(out, self.after_conv3_plugin_names)
        if self.downsample is not None:
            identity = self.downsample(x)
        if hasattr(self, 'drop_path'):  # mmpretrain only
            out = self.drop_path(out)
        out += identity
        return out

    return self.relu3(_run(self, _inner_forward, x))


def _known_blocks() -> Dict[Type[nn.Module], tuple]:
    """Upstream block class -> (forward using relu1..relun, number of calls)."""
    known = {}
    try:
        from mmpretrain.models.backbones import resnet as pretrain_resnet
        known[pretrain_resnet.BasicBlock] = (_basic_block_forward, 2)
        known[pretrain_resnet.Bottleneck] = (_bottleneck_forward, 3)
    except ImportError:  # pragma: no cover - mmpretrain is part of the stack
        pass
    try:
        from mmseg.models.backbones import resnet as seg_resnet
        known[seg_resnet.BasicBlock] = (_basic_block_forward, 2)
        known[seg_resnet.Bottleneck] = (_bottleneck_forward, 3)
    except ImportError:  # pragma: no cover
        pass
    return known


_SPLIT_CLASSES: Dict[Type[nn.Module], Type[nn.Module]] = {}


def _split_class(cls: Type[nn.Module], forward) -> Type[nn.Module]:
    if cls not in _SPLIT_CLASSES:
        qualname = f'SplitReLU_{cls.__module__.split(".")[0]}_{cls.__name__}'
        # The type keeps the upstream name so model printouts read as before.
        split = type(cls.__name__, (cls, ), {
            'forward': forward,
            '__module__': __name__,
            '__qualname__': qualname,
            '__doc__': f'{cls.__module__}.{cls.__name__} with one ReLU module per call.',
        })
        _SPLIT_CLASSES[cls] = split
        globals()[qualname] = split  # reachable by name: whole-model pickles work
    return _SPLIT_CLASSES[cls]


def __getattr__(name: str):
    # Split classes are made on first use; a fresh process that unpickles a
    # split model (e.g. a party process) finds them here by their qualname.
    if name.startswith('SplitReLU_'):
        for cls, (forward, _) in _known_blocks().items():
            _split_class(cls, forward)
        if name in globals():
            return globals()[name]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def split_reused_relus(module: nn.Module) -> nn.Module:
    """Split the shared ``relu`` of known ResNet blocks into one module per call.

    ``block.relu`` becomes ``block.relu1`` .. ``block.reluN`` (deep copies, so an
    ``inplace`` flag is kept). Already split blocks are left alone. Like
    :func:`mmengine.model.revert_sync_batchnorm`, the (possibly same) module is
    returned.

    Args:
        module: Any module; blocks anywhere inside it are rewritten.

    Returns:
        nn.Module: ``module`` with split blocks.
    """
    known = _known_blocks()
    for block in module.modules():
        entry = known.get(type(block))
        if entry is None:
            continue
        forward, calls = entry
        relu = block.relu
        del block.relu
        for i in range(1, calls + 1):
            block.add_module(f'relu{i}', copy.deepcopy(relu))
        block.__class__ = _split_class(type(block), forward)
    return module
