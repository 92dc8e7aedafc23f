"""Give every ReLU application its own module.

A Block-ReLU site is one application of a ReLU, but networks often apply one
``nn.ReLU`` module several times per forward (mmpretrain's and mmseg's ResNet
blocks call ``self.relu`` 2-3 times, at different channel counts; SE blocks,
Res2Net, HRNet's fuse layers and user blocks do the same). Two paths split them:

- **Known blocks**: the mmpretrain/mmseg ResNet ``BasicBlock`` / ``Bottleneck``
  and their subclasses that keep the upstream forward (ResNeXt's and RegNet's
  ``Bottleneck``) are switched, by class and in place, to subclasses whose
  forward is upstream's verbatim except that call ``i`` uses ``self.relu{i}``.
  Their sites keep readable names (``layer1.0.relu2``).
- **Any other module** applied ``k > 1`` times in a traced forward is replaced,
  in the module holding it, by a :class:`ReLUCalls` holding ``k`` copies named
  ``relu.0`` .. ``relu.{k-1}`` in the order of the first forward. A call is
  routed by its *call site* (the calling function and bytecode offset), which
  is the same in train and eval mode, in every batch, and when
  ``torch.utils.checkpoint`` recomputes a block during backward, so routing
  keeps no state. Only a call site that runs more than once per forward (a
  loop) is routed by occurrence, counted from the start of the forward of the
  module holding the ReLU (or its closest ancestor that runs a forward); a
  checkpoint recomputation replays all occurrences of a forward, so they are
  taken modulo their number per forward. A module held in several places
  (shared by blocks) first gets a copy per place.

ReLUs have no parameters or buffers: state-dict keys never change.
"""
import copy
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from .sites import (SITE_TYPES, NoSitesError, ReLUSite, SiteError, no_sites_message,
                    site_from_shape, trace_forward)



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


def _known_entry(cls: Type[nn.Module], known) -> Optional[tuple]:
    """The entry of a known block class or a subclass that keeps its forward (and relu)."""
    if getattr(cls, '_relu_split', False):
        return None
    for base, entry in known.items():
        if issubclass(cls, base) and cls.forward is base.forward:
            return entry
    return None


_SPLIT_CLASSES: Dict[Type[nn.Module], Type[nn.Module]] = {}


def _qualname(cls: Type[nn.Module]) -> str:
    # A flat, unique name: subclasses share class names across modules
    # (mmpretrain's resnet.Bottleneck and resnext.Bottleneck).
    name = f'{cls.__module__}.{cls.__qualname__}'
    return 'SplitReLU_' + name.replace('_', '__').replace('.', '_')


def _split_class(cls: Type[nn.Module], forward) -> Type[nn.Module]:
    if cls not in _SPLIT_CLASSES:
        qualname = _qualname(cls)
        # The type keeps the upstream name so model printouts read as before.
        split = type(cls.__name__, (cls, ), {
            'forward': forward,
            '_relu_split': True,
            '__module__': __name__,
            '__qualname__': qualname,
            '__doc__': f'{cls.__module__}.{cls.__name__} with one ReLU module per call.',
        })
        _SPLIT_CLASSES[cls] = split
        globals()[qualname] = split  # reachable by name: whole-model pickles work
    return _SPLIT_CLASSES[cls]


def __getattr__(name: str):
    # Split classes are made on first use; a fresh process that unpickles a
    # split model finds them here by their qualname.
    if name.startswith('SplitReLU_'):
        known = _known_blocks()
        todo = list(known)
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            entry = _known_entry(cls, known)
            if entry is not None and _qualname(cls) == name:
                return _split_class(cls, entry[0])
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def _call_site() -> Tuple[str, int]:
    """Where the running ReLU module was called from: ``(function qualname, bytecode offset)``.

    Called from a module's forward or forward pre-hook. Stable across
    processes of one Python version (no file paths), and the same for a
    forward and its recomputation under ``torch.utils.checkpoint``.
    """
    frame = sys._getframe(2)  # skip this function and the forward or hook calling it
    while frame is not None and frame.f_code.co_filename == _MODULE_FILE:
        frame = frame.f_back
    if frame is None:  # pragma: no cover - called from torch internals only
        return ('<unknown>', -1)
    code = frame.f_code
    return getattr(code, 'co_qualname', code.co_name), frame.f_lasti


# Frames of torch's module call machinery are not call sites.
_MODULE_FILE = nn.Module._call_impl.__code__.co_filename


class ReLUCalls(nn.Module):
    """One ReLU module applied several times per forward, one copy per application.

    Replaces the reused module in its holder. Copies are children
    ``'0'``, ``'1'``, ... (the sites ``<path>.0``, ``<path>.1``, ...) and are
    looked up on every call, so converting a copy to Block-ReLU is setting the
    child. Built by :func:`split_reused_relus`, not by hand.

    Args:
        relu: The shared module (deep-copied).
        routes: Call site -> the copies its 1st, 2nd, ... call per forward uses.
    """

    def __init__(self, relu: nn.Module, routes: Dict[Tuple[str, int], List[int]]):
        super().__init__()
        count = 1 + max(i for idx in routes.values() for i in idx)
        for i in range(count):
            self.add_module(str(i), copy.deepcopy(relu))
        self.routes = {site: list(idx) for site, idx in routes.items()}
        self._occurrences: Dict[Tuple[str, int], int] = {}

    def forward(self, x):
        site = _call_site()
        idx = self.routes.get(site)
        if idx is None:
            raise SiteError(
                f'a split ReLU is applied from {site[0]} (bytecode offset {site[1]}), a call '
                'site the tracing forward of split_reused_relus did not reach; split the '
                'unsplit model with an input that reaches it')
        if len(idx) == 1:
            return self._modules[str(idx[0])](x)
        n = self._occurrences.get(site, 0)
        # Modulo: a checkpoint recomputation re-runs the calls of one forward.
        self._occurrences[site] = n + 1
        return self._modules[str(idx[n % len(idx)])](x)

    def reset(self, *_):
        """Restart occurrence counts (a forward pre-hook of the enclosing module)."""
        self._occurrences.clear()

    def extra_repr(self) -> str:
        return f'{len(self._modules)} applications'


def _applications(model: nn.Module, input_size, in_channels):
    """Trace one forward: ReLU modules' call sites, ReLU calls in order, modules called."""
    relus = [m for m in model.modules() if isinstance(m, SITE_TYPES)]
    calls: Dict[nn.Module, List[Tuple[str, int]]] = {}
    order: List[Tuple[nn.Module, int, torch.Size]] = []  # (module, its k-th call, input shape)
    called = set()

    def record(module, args):
        sites = calls.setdefault(module, [])
        order.append((module, len(sites), args[0].shape))
        sites.append(_call_site())

    def run(forward):
        calls.clear()
        order.clear()
        called.clear()
        handles = [m.register_forward_pre_hook(record) for m in relus]
        handles += [m.register_forward_pre_hook(lambda m, a: called.add(m))
                    for m in model.modules()]
        try:
            forward()
        finally:
            for h in handles:
                h.remove()

    trace_forward(model, run, input_size, in_channels, what='trace the model to find reused ReLUs')
    return calls, order, called


def split_reused_relus(module: nn.Module,
                       input_size: Union[None, int, Sequence[int]] = None,
                       in_channels: Optional[int] = None) -> nn.Module:
    """Give every ReLU application of ``module`` its own module (in place).

    Known ResNet blocks get ``relu1`` .. ``reluN``; any other module applied
    more than once in one traced forward becomes a :class:`ReLUCalls`.
    Already split modules are left alone, so splitting twice is a no-op.
    Like :func:`mmengine.model.revert_sync_batchnorm`, the (same) module is
    returned.

    Args:
        module: The network (an mmpretrain classifier, mmseg segmentor or any
            module taking an ``N x C x H x W`` tensor).
        input_size: Side or ``(H, W)`` of the tracing forward; default 64,
            then 224 if the model does not run at 64.
        in_channels: Input channels (default: the first convolution's).

    Returns:
        nn.Module: ``module``, split.

    Raises:
        TraceError: if the model runs at none of the sizes tried.
    """
    _split(module, input_size, in_channels)
    return module


def split_and_find_sites(module: nn.Module,
                         input_size: Union[None, int, Sequence[int]] = None,
                         in_channels: Optional[int] = None) -> List[ReLUSite]:
    """:func:`split_reused_relus`, then :func:`find_relu_sites`, with one traced forward.

    Raises:
        NoSitesError: if the model has no ReLU site.
        SiteError: for a ReLU on an input that is neither ``N x C x H x W`` nor ``N x C``.
        TraceError: if the model runs at none of the sizes tried.
    """
    order, names = _split(module, input_size, in_channels)
    if not order:
        raise NoSitesError(no_sites_message(module))
    return [site_from_shape(names[m] if isinstance(names[m], str) else names[m][k], shape)
            for m, k, shape in order]


def _split(module, input_size, in_channels):
    """Split; return the traced ReLU calls and each module's site name (or names, per call)."""
    known = _known_blocks()
    for block in module.modules():
        entry = _known_entry(type(block), known)
        if entry is None or not isinstance(getattr(block, 'relu', None), nn.Module):
            continue
        forward, calls = entry
        relu = block.relu
        del block.relu
        for i in range(1, calls + 1):
            block.add_module(f'relu{i}', copy.deepcopy(relu))
        block.__class__ = _split_class(type(block), forward)

    _unshare(module)
    calls, order, called = _applications(module, input_size, in_channels)
    paths = {m: n for n, m in module.named_modules()}
    names = {m: paths[m] for m in calls}
    for relu, sites in calls.items():
        if len(sites) < 2:
            continue
        routes: Dict[Tuple[str, int], List[int]] = {}
        for i, site in enumerate(sites):
            routes.setdefault(site, []).append(i)
        split = ReLUCalls(relu, routes)
        parent_path, _, name = paths[relu].rpartition('.')
        parent = module.get_submodule(parent_path)
        parent._modules[name] = split
        names[relu] = [f'{paths[relu]}.{i}' for i in range(len(sites))]
        if any(len(idx) > 1 for idx in routes.values()):
            _scope(module, parent_path, called).register_forward_pre_hook(split.reset)
    return order, names


def _unshare(model: nn.Module) -> None:
    """Give every place that holds a shared ReLU module a copy of its own.

    Each holder's calls are then routed by call site alone, and sites are
    named after their own holder (``b.relu``, not ``a.relu.3``).
    """
    seen = set()
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, SITE_TYPES):
                if child in seen:
                    parent._modules[name] = copy.deepcopy(child)
                seen.add(child)


def _scope(model: nn.Module, path: str, called) -> nn.Module:
    """``path`` or its innermost ancestor whose forward ran in the trace."""
    parts = path.split('.') if path else []
    while parts:
        m = model.get_submodule('.'.join(parts))
        if m in called:
            return m
        parts.pop()
    return model
