"""Compile a (Block-ReLU converted) OpenMMLab model into a 3-party secure program.

The compiler keeps the network's own ``forward``: it deep-copies the model,
folds every BatchNorm into the convolution that produces its input, and
replaces the leaf modules by *secure modules* that call the protocols of
:mod:`.protocols` on share tensors. Residual adds, concatenations, views and
indexing in the upstream forwards are plain torch ops, which are local on
additive shares (int64 at client and server online, ``device='meta'`` tensors
for the helper and in the offline pass). A guard (a torch function mode)
runs resizes (``F.interpolate``, mmseg ``resize``: any mode, size or scale)
and functional adaptive average pooling as local secure ops, and refuses
every other tensor operation the upstream forwards might apply to shares.

Leaf modules and what they become:

==============================================  ==========================================
``nn.Conv2d`` (+ a following BatchNorm)          :func:`.protocols.conv2d` (BN folded; any
                                                 stride, padding, dilation, groups)
``nn.Linear``                                    :func:`.protocols.linear`
``nn.ReLU``                                      :func:`.protocols.relu` (``relu_bits``)
:class:`~block_relu_plugin.layers.BlockReLU`     :func:`.protocols.block_relu` (``bits``)
``nn.MaxPool2d``                                 :func:`.protocols.max_pool2d` (``pool_bits``)
``nn.AvgPool2d``                                 :func:`.protocols.avg_pool2d` (local)
``nn.AdaptiveAvgPool2d(1)``                      :func:`.protocols.global_avg_pool` (local)
``nn.AdaptiveAvgPool2d(k)``                      :func:`.protocols.adaptive_avg_pool2d` (local)
``nn.Upsample``, ``F.interpolate``               :func:`.protocols.resize` (local: public
                                                 weights, then truncation; nearest: gather)
Dropout, ``nn.Identity``, ``DropPath``           identity (inference)
==============================================  ==========================================

Anything else that the inference forward calls is refused at compile time
with :class:`UnsupportedLayerError`, naming the module path, the layer or
operation, and what would make it compile: non-ReLU activations and gates
(sigmoid / SE blocks, hard-sigmoid, HSwish, GELU, SiLU, ReLU6 unless
converted with ``relu6_to_relu``, ...: the runtime computes only ReLU-family
nonlinearities), LayerNorm, a BN not preceded by a convolution, a product
of two secret tensors, an antialiased resize.

Weights are public in shape only: the server compiles with the checkpoint
(``with_weights=True``: BN folded in float64, quantised to int64 fixed
point), client and helper compile the same config without weights, or get
``program.public()``, which carries no tensor values at all. The
architecture and spec are public, so all three programs make the same
protocol calls in the same order.

Approximate comparisons (``bits < 64`` for a kind of site) are only right
while the compared values fit the range their pre-shift leaves
(:mod:`.calibrate`); such a compile needs the per-site value ranges measured
on training data (``calibration=measure_ranges(model, images)``), from which
each site gets its own shift (or an explicit ``shift=``).

Example:
    >>> program = compile_model(model, bits=16, calibration=ranges)
    >>> with sess.offline():
    ...     program(sess, (1, 3, 32, 32))
    >>> with sess.online():
    ...     logits = program(sess, image)   # float logits at the client, else None
"""
import contextlib
import contextvars
import copy
import sys
import uuid
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from ..conversion.sites import run_tensor_forward
from ..conversion.split import split_reused_relus
from ..layers.block_relu import BlockReLU, check_block_sizes
from . import cost as _cost
from . import protocols as P
from .bits import channel_group
from .calibrate import check_ranges, choose_shift, compared_range
from .ring import FRAC_BITS, conv_out_shape, decode, encode

__all__ = ['UnsupportedLayerError', 'SecureProgram', 'compile_model']


class UnsupportedLayerError(ValueError):
    """The network uses an operation the secure runtime cannot run."""


# ----------------------------------------------------------------- runtimes
_RUNTIME: contextvars.ContextVar = contextvars.ContextVar('block_relu_mpc_runtime',
                                                         default=None)


class Runtime:
    """What a secure module calls: the protocols (a session) or a cost walker.

    Subclasses implement :meth:`call`; the program sets the active runtime
    while it runs the model's forward.
    """

    def call(self, module: 'SecureModule', x: Tensor) -> Tensor:
        raise NotImplementedError


class SessionRuntime(Runtime):
    """Run the secure modules' protocols in a session, labelling the meter per layer."""

    def __init__(self, sess):
        self.sess = sess

    def call(self, module, x):
        if module.free:
            return module.mpc(self.sess, x)
        with self.sess.label(module.label):
            return module.mpc(self.sess, x)


# ----------------------------------------------------------------- secure modules
def _numel(shape) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


class SecureModule(nn.Module):
    """A leaf of a compiled program; ``forward`` defers to the active runtime.

    Subclasses implement ``mpc(sess, x)`` (the protocol call) and
    ``cost(protocol, x, first_use) -> (Cost, output meta tensor)`` (its
    formula from :mod:`.cost`, with ``x`` a meta tensor).
    """

    free = False  # local ops: no messages, no meter label

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def forward(self, x):
        rt = _RUNTIME.get()
        if rt is None:
            raise RuntimeError(f'{self.label}: secure modules run only inside a SecureProgram')
        guard = _Guard.active()
        inside = guard.inside if guard else None
        if guard:
            guard.inside = True  # protocol internals are free to use any torch op
        try:
            return rt.call(self, x)
        finally:
            if guard:
                guard.inside = inside

    def mpc(self, sess, x):
        raise NotImplementedError

    def cost(self, protocol, x: Tensor, first_use: bool):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.label


class SecureConv2d(SecureModule):
    """Conv2d with its BatchNorm folded; the server holds the fixed-point weights."""

    def __init__(self, label: str, conv: nn.Conv2d, key: str,
                 weight: Optional[Tensor] = None, bias: Optional[Tensor] = None):
        super().__init__(label)
        if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
            raise UnsupportedLayerError(
                f'{label} ({type(conv).__name__}): only explicit zero padding is supported, '
                f'got padding={conv.padding!r}, padding_mode={conv.padding_mode!r}')
        self.key = key
        self.weight_shape = tuple(conv.weight.shape)
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        self.dilation, self.groups = tuple(conv.dilation), conv.groups
        self.register_buffer('weight', weight)
        self.register_buffer('bias', bias)

    def _w(self):
        return self.weight if self.weight is not None else self.weight_shape

    def mpc(self, sess, x):
        return P.conv2d(sess, x, self._w(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups, key=self.key)

    def cost(self, protocol, x, first_use):
        y = conv_out_shape(tuple(x.shape), self.weight_shape, self.stride, self.padding,
                           self.dilation)
        return _linear_cost(protocol, x.shape, self.weight_shape, y, first_use), P.meta(y)


class SecureLinear(SecureModule):
    """Fully connected layer ``x @ W.T + b``."""

    def __init__(self, label: str, fc: nn.Linear, key: str,
                 weight: Optional[Tensor] = None, bias: Optional[Tensor] = None):
        super().__init__(label)
        self.key = key
        self.weight_shape = tuple(fc.weight.shape)
        self.register_buffer('weight', weight)
        self.register_buffer('bias', bias)

    def mpc(self, sess, x):
        w = self.weight if self.weight is not None else self.weight_shape
        return P.linear(sess, x, w, self.bias, key=self.key)

    def cost(self, protocol, x, first_use):
        y = (x.shape[0], self.weight_shape[0])
        return _linear_cost(protocol, x.shape, self.weight_shape, y, first_use), P.meta(y)


def _linear_cost(protocol, x, w, y, first_use):
    if isinstance(protocol, _cost.Reference):
        # the authors' runtime is batch 1 and resends the masked weights per image
        n = int(x[0])
        return protocol.conv2d(_numel(x) // n, _numel(w), _numel(y) // n) * n
    # ours: the masked weights cross once per session
    return protocol.conv2d(_numel(x), _numel(w), _numel(y), first_use)


class SecureReLU(SecureModule):
    """A ReLU site: plain ReLU (``block_sizes`` None) or Block-ReLU with (C, 2) sizes."""

    def __init__(self, label: str, bits: int, shift: int,
                 block_sizes: Optional[np.ndarray] = None):
        super().__init__(label)
        self.bits, self.shift = int(bits), int(shift)
        # an all-(1, 1) Block-ReLU is a ReLU (same gate, same bytes, fewer steps)
        if block_sizes is not None and (np.asarray(block_sizes) == 1).all():
            block_sizes = None
        self.block_sizes = None if block_sizes is None else check_block_sizes(block_sizes)

    def _sizes(self, x) -> np.ndarray:
        c = x.shape[1]
        if self.block_sizes.shape[0] == 1:
            return np.repeat(self.block_sizes, c, axis=0)
        return check_block_sizes(self.block_sizes, c)

    def mpc(self, sess, x):
        if self.block_sizes is None:
            return P.relu(sess, x, self.bits, self.shift)
        if x.dim() == 2:  # N x C features: every channel is a 1 x 1 map
            return self.mpc(sess, x.reshape(*x.shape, 1, 1)).reshape(x.shape)
        return P.block_relu(sess, x, self._sizes(x), self.bits, self.shift)

    def cost(self, protocol, x, first_use):
        if self.block_sizes is None:
            return protocol.relu(x.numel(), self.bits, channel_group(x.shape)), x
        shape = tuple(x.shape) + (1, 1) if x.dim() == 2 else tuple(x.shape)
        n, _, h, w = shape
        return protocol.block_relu(self._sizes(x), n, h, w, self.bits), x

    def extra_repr(self) -> str:
        kind = 'relu' if self.block_sizes is None else 'block_relu'
        return f'{self.label}, {kind}, bits={self.bits}, shift={self.shift}'


def _pool_out_shape(x_shape, k, s, p) -> Tuple[int, int, int, int]:
    n, c, h, w = x_shape
    return (n, c, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)


class SecureMaxPool2d(SecureModule):
    """Max pooling by a tree of secure pairwise maxima."""

    def __init__(self, label: str, pool: nn.MaxPool2d, bits: int, shift: int):
        super().__init__(label)
        if pool.ceil_mode or pool.return_indices or _pair(pool.dilation) != (1, 1):
            raise UnsupportedLayerError(
                f'{label} (MaxPool2d): ceil_mode, return_indices and dilation are not supported')
        self.kernel_size, self.padding = _pair(pool.kernel_size), _pair(pool.padding)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        self.bits, self.shift = int(bits), int(shift)

    def mpc(self, sess, x):
        return P.max_pool2d(sess, x, self.kernel_size, self.stride, self.padding, self.bits,
                            self.shift)

    def cost(self, protocol, x, first_use):
        y = _pool_out_shape(x.shape, self.kernel_size, self.stride, self.padding)
        k = self.kernel_size[0] * self.kernel_size[1]
        return protocol.max_pool2d(_numel(y), k, self.bits, channel_group(y)), P.meta(y)


class SecureAvgPool2d(SecureModule):
    """Average pooling: share-wise window sums and floor division (local)."""

    free = True

    def __init__(self, label: str, pool: nn.AvgPool2d):
        super().__init__(label)
        if pool.ceil_mode or pool.divisor_override is not None:
            raise UnsupportedLayerError(
                f'{label} (AvgPool2d): ceil_mode and divisor_override are not supported')
        self.kernel_size, self.padding = _pair(pool.kernel_size), _pair(pool.padding)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        self.count_include_pad = pool.count_include_pad

    def mpc(self, sess, x):
        return P.avg_pool2d(sess, x, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)

    def cost(self, protocol, x, first_use):
        y = _pool_out_shape(x.shape, self.kernel_size, self.stride, self.padding)
        return protocol.local(), P.meta(y)


class SecureGlobalAvgPool(SecureModule):
    """Global average pooling to (N, C, 1, 1) (local)."""

    free = True

    def mpc(self, sess, x):
        return P.global_avg_pool(sess, x)

    def cost(self, protocol, x, first_use):
        return protocol.local(), P.meta(tuple(x.shape[:2]) + (1, 1))


class SecureAdaptiveAvgPool(SecureModule):
    """Adaptive average pooling to any output size (PyTorch's windows; local)."""

    free = True

    def __init__(self, label: str, output_size):
        super().__init__(label)
        self.output_size = output_size

    def mpc(self, sess, x):
        return P.adaptive_avg_pool2d(sess, x, self.output_size)

    def cost(self, protocol, x, first_use):
        return protocol.local(), P.meta(P.adaptive_pool_out_shape(x.shape, self.output_size))


class SecureResize(SecureModule):
    """``F.interpolate`` / ``nn.Upsample`` / mmseg ``resize``, any mode, size or
    scale: public interpolation weights applied to each share (local)."""

    free = True

    def __init__(self, label: str, size=None, scale_factor=None, mode: str = 'nearest',
                 align_corners=None, recompute_scale_factor=None, antialias: bool = False):
        super().__init__(label)
        if antialias:
            raise UnsupportedLayerError(
                f'{label}: an antialiased {mode} resize is not supported on secret shares; '
                'it compiles with antialias=False')
        if isinstance(size, torch.Size) or isinstance(size, (list, tuple)):
            size = tuple(int(v) for v in size)
        self.kwargs = dict(size=size, scale_factor=scale_factor, mode=mode,
                           align_corners=align_corners,
                           recompute_scale_factor=recompute_scale_factor)

    def mpc(self, sess, x):
        return P.resize(sess, x, **self.kwargs)

    def cost(self, protocol, x, first_use):
        if x.dim() != 4:
            raise UnsupportedLayerError(
                f'{self.label}: resize of a {x.dim()}-d tensor is not supported on secret '
                'shares (only (N, C, H, W) maps)')
        mh, mw = P.resize_maps(x.shape, **self.kwargs)
        return protocol.local(), P.meta(tuple(x.shape[:2]) + (mh.shape[0], mw.shape[0]))

    def extra_repr(self) -> str:
        return f'{self.label}, {self.kwargs}'


def _interpolate_args(input, size=None, scale_factor=None, mode='nearest', align_corners=None,
                      recompute_scale_factor=None, antialias=False):
    """``F.interpolate``'s arguments by name (the guard sees them positional or not)."""
    return input, dict(size=size, scale_factor=scale_factor, mode=mode,
                       align_corners=align_corners,
                       recompute_scale_factor=recompute_scale_factor, antialias=antialias)


def _adaptive_pool_args(input, output_size):
    return input, output_size


class SecureIdentity(SecureModule):
    """Dropout, Identity, DropPath and folded BatchNorms at inference: identity."""

    free = True

    def mpc(self, sess, x):
        return x

    def cost(self, protocol, x, first_use):
        return protocol.local(), x


# ----------------------------------------------------------------- refusals
_NOT_RELU_REASON = ('is not a ReLU network: the secure runtime computes only ReLU-family '
                    'nonlinearities (ReLU, Block-ReLU, MaxPool)')
_RETRAIN = ("replace it by ReLU (e.g. act_cfg=dict(type='ReLU')) and retrain or fine-tune")
#: class name of a non-ReLU activation (or gate) -> (what it is, what would make it compile)
_NOT_RELU = {
    'Sigmoid': ('a sigmoid gate', 'use the backbone without sigmoid gates (e.g. ResNet for '
                'SE-ResNet, or se_cfg/SE blocks off), or ' + _RETRAIN),
    'Hardsigmoid': ('a hard-sigmoid gate', 'use the backbone without SE blocks, or ' + _RETRAIN),
    'HSigmoid': ('a hard-sigmoid gate', 'use the backbone without SE blocks, or ' + _RETRAIN),
    'Hardswish': ('an HSwish activation', _RETRAIN),
    'HSwish': ('an HSwish activation', _RETRAIN),
    'SiLU': ('a SiLU/Swish activation', _RETRAIN),
    'Swish': ('a SiLU/Swish activation', _RETRAIN),
    'GELU': ('a GELU activation', _RETRAIN),
    'Mish': ('a Mish activation', _RETRAIN),
    'Tanh': ('a tanh activation', _RETRAIN),
    'ELU': ('an ELU activation', _RETRAIN),
    'LeakyReLU': ('a LeakyReLU activation', _RETRAIN),
    'PReLU': ('a PReLU activation', _RETRAIN),
    'Softmax': ('a softmax', 'compute it after the network, on the revealed logits'),
    'ReLU6': ('a ReLU6 (a clipped ReLU)', "convert it: relu6_to_relu=True in block_relu_cfg "
              '(block_relu_plugin.conversion.relu6_to_relu), then fine-tune'),
    'Hardtanh': ('a Hardtanh/ReLU6 (a clipped ReLU)', "relu6_to_relu=True in block_relu_cfg "
                 'for ReLU6, or ' + _RETRAIN),
}
#: functional torch ops in a forward -> (what it is, what would make it compile)
_NOT_RELU_OPS = {
    'sigmoid': _NOT_RELU['Sigmoid'], 'sigmoid_': _NOT_RELU['Sigmoid'],
    'hardsigmoid': _NOT_RELU['Hardsigmoid'], 'hardswish': _NOT_RELU['Hardswish'],
    'silu': _NOT_RELU['SiLU'], 'gelu': _NOT_RELU['GELU'], 'mish': _NOT_RELU['Mish'],
    'tanh': _NOT_RELU['Tanh'], 'elu': _NOT_RELU['ELU'], 'leaky_relu': _NOT_RELU['LeakyReLU'],
    'softmax': _NOT_RELU['Softmax'], 'relu6': _NOT_RELU['ReLU6'],
    'hardtanh': _NOT_RELU['Hardtanh'], 'hardtanh_': _NOT_RELU['Hardtanh'],
}
_FUNCTIONAL_FIX = {
    'relu': 'a functional ReLU (F.relu / torch.relu) in a forward is not a site: use an '
            'nn.ReLU module',
    'relu_': 'a functional ReLU (F.relu / torch.relu) in a forward is not a site: use an '
             'nn.ReLU module',
    'mul': 'a product in the forward (a gate of two secret tensors, as in SE or attention, '
           'or a scale by a constant) is not a ReLU-convnet layer: use the model without '
           'gates, or fold constants into a convolution',
    '__mul__': 'a product in the forward (a gate of two secret tensors, as in SE or '
               'attention, or a scale by a constant) is not a ReLU-convnet layer: use the '
               'model without gates, or fold constants into a convolution',
    'clamp': 'a clamp is a clipped activation: use ReLU (relu6_to_relu for ReLU6)',
    'clamp_': 'a clamp is a clipped activation: use ReLU (relu6_to_relu for ReLU6)',
}


def _not_relu_message(where: str, layer: str, what: str, fix: str) -> str:
    return f'{where} ({layer}): {what} {_NOT_RELU_REASON}; to compile, {fix}'


def _not_relu_layer(mod: nn.Module) -> Optional[Tuple[str, str]]:
    """(what, fix) if ``mod`` (or a class it derives from) is a known non-ReLU activation."""
    for cls in type(mod).__mro__:
        if cls.__name__ in _NOT_RELU:
            return _NOT_RELU[cls.__name__]
    return None


# ----------------------------------------------------------------- the guard
_STRUCTURAL = {
    '__get__', 'size', 'dim', 'ndimension', 'numel', '__len__', 'view', 'reshape', 'flatten',
    'contiguous', 'is_contiguous', '__getitem__', 'expand', 'expand_as', 'squeeze',
    'unsqueeze', 'permute', 'transpose', 'chunk', 'split', 'clone', 'detach', 'unbind',
}
_ADDITIVE = {'__add__', '__radd__', '__iadd__', 'add', 'add_', '__sub__', '__isub__', 'sub',
             'sub_', 'cat', 'concat', 'concatenate', 'stack'}
# ``out += x`` reaches the mode as ``add_``; on a shape-only (zero-stride)
# tensor it is done out of place, which ``+=`` rebinds like the in-place result
_INPLACE = {'__iadd__': torch.add, '__isub__': torch.sub, 'add_': torch.add,
            'sub_': torch.sub}


class _Guard(TorchFunctionMode):
    """Allow only share-compatible torch ops in the model's own forward.

    Structural ops (views, indexing, shape queries) and share + share,
    share - share and concatenation are local on additive shares. Resizes
    (``F.interpolate``, any mode and size) and adaptive average pooling run
    as local secure ops (:class:`SecureResize`, :class:`SecureAdaptiveAvgPool`).
    Everything else raises :class:`UnsupportedLayerError` naming the innermost
    module running, the operation and what would make it compile.
    """

    _stack: List['_Guard'] = []

    def __init__(self, paths: Dict[nn.Module, str]):
        super().__init__()
        self.inside = False
        self.paths = paths
        self.where: List[str] = []

    @classmethod
    def active(cls) -> Optional['_Guard']:
        return cls._stack[-1] if cls._stack else None

    def _module(self) -> str:
        """Path of the innermost module whose code is running.

        Forward hooks miss modules whose ``forward`` is called directly (an
        mmseg segmentor calls ``decode_head.forward``), so the Python stack
        is searched first; the root gets a readable name, never ''.
        """
        frame = sys._getframe(1)
        while frame is not None:
            obj = frame.f_locals.get('self')
            if isinstance(obj, nn.Module) and obj in self.paths:
                return self._name(obj)
            frame = frame.f_back
        return self.where[-1] if self.where and self.where[-1] else self._root()

    def _name(self, module: nn.Module) -> str:
        return self.paths[module] or self._root()

    def _root(self) -> str:
        root = next((m for m, p in self.paths.items() if p == ''), None)
        return f'<top level of {type(root).__name__}>' if root is not None else '<model>'

    def _local(self, op: 'SecureModule', x: Tensor) -> Tensor:
        """Run a local secure op met in the forward (protocol internals unguarded)."""
        inside, self.inside = self.inside, True
        try:
            return _RUNTIME.get().call(op, x)
        finally:
            self.inside = inside

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.inside or not _has_tensor(args, kwargs):
            return func(*args, **kwargs)
        name = getattr(func, '__name__', repr(func))
        if name in _STRUCTURAL:
            return func(*args, **kwargs)
        if name in _ADDITIVE:
            operands = args[0] if name in ('cat', 'concat', 'concatenate', 'stack') else args
            if all(isinstance(a, Tensor) for a in operands) and 'alpha' not in kwargs:
                if name in _INPLACE and 0 in args[0].stride():
                    return _INPLACE[name](*args)
                return func(*args, **kwargs)
            raise UnsupportedLayerError(
                f'{self._module()}: {name} with a public (non-share) operand is not supported '
                'on fixed-point shares; to compile, fold the constant into a layer (a conv '
                'bias) or remove it')
        where = self._module()
        if name == 'interpolate':
            x, kw = _interpolate_args(*args, **kwargs)
            return self._local(SecureResize(where, **kw), x)
        if name == 'adaptive_avg_pool2d':
            x, size = _adaptive_pool_args(*args, **kwargs)
            return self._local(SecureAdaptiveAvgPool(where, size), x)
        layer = f'{self._type(where)}, torch.{name}'
        if name in _NOT_RELU_OPS:
            raise UnsupportedLayerError(_not_relu_message(where, layer, *_NOT_RELU_OPS[name]))
        fix = _FUNCTIONAL_FIX.get(name, 'express it with the supported layers (see '
                                  'block_relu_plugin.mpc.compiler)')
        raise UnsupportedLayerError(
            f'{where} ({layer}): torch operation {name!r} in the forward is not supported on '
            f'secret shares; {fix}')

    def _type(self, where: str) -> str:
        mods = {p: m for m, p in self.paths.items()}
        m = mods.get(where, mods.get(''))
        return type(m).__name__ if m is not None else '?'

    def __enter__(self):
        _Guard._stack.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _Guard._stack.pop()
        return super().__exit__(*exc)


def _has_tensor(args, kwargs) -> bool:
    items = list(args) + list(kwargs.values())
    for a in items:
        if isinstance(a, Tensor):
            return True
        if isinstance(a, (list, tuple)) and any(isinstance(b, Tensor) for b in a):
            return True
    return False


@contextlib.contextmanager
def _module_tracking(model: nn.Module, guard: _Guard):
    """Keep ``guard.where`` = the path of the innermost running module."""
    def pre(module, args):
        guard.where.append(guard.paths.get(module, '?'))

    def post(module, args, out):
        guard.where.pop()
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------- the program
class SecureProgram:
    """A compiled network: call it in each pass of a session (see module doc).

    Attributes:
        model: The rewritten model (upstream forward, secure leaves).
        task: ``'classification'`` or ``'segmentation'``.
        align_corners: The decode head's resize setting (segmentation).
        options: The compile options (bits, relu_bits, pool_bits, shift, frac_bits,
            ...), ``site_shifts`` (the pre-shift of every comparison site),
            ``margin`` and, in the server's program only, ``site_ranges``
            (the calibrated max |compared value| per site).
        uid: Names this program's weights in a session (so two programs
            run in one session never share a cached masked weight).
        has_weights: True for the server's program.
    """

    def __init__(self, model: nn.Module, task: str, align_corners: bool,
                 options: Dict[str, Any], uid: str, has_weights: bool):
        self.model = model
        self.task = task
        self.align_corners = align_corners
        self.options = dict(options)
        self.uid = uid
        self.has_weights = has_weights

    # -------------------------------------------------------------- running
    def __call__(self, sess, image) -> Optional[Tensor]:
        """Run one pass: share the input, run the network, reveal the logits.

        Args:
            sess: The party's session (inside ``sess.offline()`` or ``sess.online()``).
            image: The client's float input batch ``(N, C, H, W)`` (after the
                data preprocessor) in the online pass; a shape (or meta tensor)
                otherwise and at the other parties.

        Returns:
            Float64 logits at the client online, else None.
        """
        if sess.frac_bits != self.options['frac_bits']:
            raise ValueError(f'program compiled for frac_bits={self.options["frac_bits"]}, '
                             f'session uses {sess.frac_bits}')
        if sess.role == 'server' and not self.has_weights:
            raise ValueError('the server needs the program compiled with weights')
        data = sess.role == 'client' and not sess.is_offline
        with sess.label('input'):
            x = P.share_input(sess, image if data else _shape_of(image))
        y = self.forward(SessionRuntime(sess), x)
        with sess.label('output'):
            v = P.reveal_to_client(sess, y)
        return None if v is None else decode(v, sess.frac_bits)

    def forward(self, runtime: Runtime, x: Tensor) -> Tensor:
        """The model's own forward on shares (or meta tensors) under ``runtime``."""
        token = _RUNTIME.set(runtime)
        guard = _Guard({m: n for n, m in self.model.named_modules()})
        try:
            with torch.no_grad(), _module_tracking(self.model, guard), guard:
                out = run_tensor_forward(self.model, x)
        finally:
            _RUNTIME.reset(token)
        if not isinstance(out, Tensor):
            raise UnsupportedLayerError(
                f'the model returns {type(out).__name__}, expected one logits tensor')
        return out

    def postprocess(self, logits: Tensor, image_size: Optional[Sequence[int]] = None) -> Tensor:
        """Client-side predictions from revealed logits (in the clear).

        Classification: argmax over classes, ``(N,)``. Segmentation: the
        logits are resized to ``image_size`` (bilinear, as mmseg does) and
        argmaxed, ``(N, H, W)``.
        """
        logits = logits.to(torch.float32)
        if self.task == 'segmentation':
            if image_size is not None and tuple(logits.shape[2:]) != tuple(image_size):
                logits = F.interpolate(logits, size=tuple(image_size), mode='bilinear',
                                       align_corners=self.align_corners)
            return logits.argmax(1)
        return logits.argmax(-1)

    # ------------------------------------------------------------- helpers
    def public(self) -> 'SecureProgram':
        """The same program for client and helper: no tensor values at all.

        Every tensor of the model (parameters, buffers, any tensor held in a
        module's attributes, used by the forward or not) becomes a
        shape-only ``meta`` tensor; the secure convolutions and linear
        layers get no weight (they run from ``weight_shape``). The measured
        calibration ranges stay with the server; the per-site shifts, which
        client and server must share, are kept.
        """
        memo = {}
        for m in self.model.modules():
            if isinstance(m, (SecureConv2d, SecureLinear)):
                for t in (m.weight, m.bias):
                    if t is not None:
                        memo[id(t)] = None
            for t in _tensors(vars(m)):
                if id(t) not in memo:
                    memo[id(t)] = _shape_only(t)
        model = copy.deepcopy(self.model, memo)
        left = [t for m in model.modules() for t in _tensors(vars(m)) if not t.is_meta]
        if left:  # a tensor reached only through an object deepcopy could not see
            raise RuntimeError(f'public(): {len(left)} tensor value(s) left in the model')
        options = {k: v for k, v in self.options.items() if k != 'site_ranges'}
        return SecureProgram(model, self.task, self.align_corners, options, self.uid,
                             has_weights=False)

    def calibration_report(self) -> List[Dict[str, Any]]:
        """Per comparison site: ``site``, ``kind``, ``bits``, ``shift``,
        ``max_abs`` (calibrated max |compared value|, None if unknown),
        ``range`` (|values| below it get the right sign, real units) and
        ``margin`` (range / max_abs; None if unknown or the site saw only zeros,
        so the rows stay valid JSON). Print with
        :func:`.calibrate.format_report`.
        """
        ranges = self.options.get('site_ranges', {})
        rows, seen = [], set()
        for label, mod in self.sites():
            if not isinstance(mod, (SecureReLU, SecureMaxPool2d)) or label in seen:
                continue
            seen.add(label)
            kind = ('max_pool' if isinstance(mod, SecureMaxPool2d)
                    else 'relu' if mod.block_sizes is None else 'block_relu')
            r = compared_range(mod.bits, mod.shift, self.options['frac_bits'])
            mx = ranges.get(label)
            rows.append(dict(site=label, kind=kind, bits=mod.bits, shift=mod.shift,
                             max_abs=mx, range=r,
                             margin=r / mx if mx else None))  # None: unknown, or only zeros
        return rows

    def sites(self) -> List[Tuple[str, SecureModule]]:
        """The secure modules in model order, ``(label, module)``."""
        return [(m.label, m) for m in self.model.modules() if isinstance(m, SecureModule)]


def _tensors(obj, seen=None):
    """Tensors reachable from ``obj`` through containers and object attributes
    (not through submodules: each module is walked on its own)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _tensors(v, seen)
    elif hasattr(obj, '__dict__') and not isinstance(obj, (nn.Module, type)) \
            and type(obj).__module__.split('.')[0] not in ('builtins', 'torch', 'numpy'):
        yield from _tensors(vars(obj), seen)


def _shape_only(t: Tensor) -> Tensor:
    """A ``meta`` tensor (no values) of ``t``'s shape and dtype; a Parameter stays one."""
    m = torch.empty(t.shape, dtype=t.dtype, device='meta')
    return nn.Parameter(m, requires_grad=False) if isinstance(t, nn.Parameter) else m


def _shape_of(x) -> Tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, Tensor) else tuple(int(v) for v in x)


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


# ----------------------------------------------------------------- compiling
_IDENTITY_TYPES: Tuple[type, ...] = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                                     nn.Dropout3d, nn.AlphaDropout)


def _identity_types() -> Tuple[type, ...]:
    types = list(_IDENTITY_TYPES)
    try:
        from mmcv.cnn.bricks.drop import DropPath
        types.append(DropPath)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


class _Trace(TorchFunctionMode):
    """One float forward with hooks: the leaf calls and the tensors they pass on.

    Consumers of a leaf's output are the leaves it is passed to and the torch
    operations applied to it outside any leaf (e.g. a residual add), named
    ``<op>``: a conv output with any consumer besides its BN cannot be folded.
    """

    _SHAPE_ONLY = {'__get__', 'size', 'dim', 'numel', '__len__', 'ndimension'}

    def __init__(self, model: nn.Module, input_size: Tuple[int, int], in_channels: int):
        super().__init__()
        self.depth = 0  # leaves running
        self.paths = {m: n for n, m in model.named_modules()}
        self.calls: List[str] = []           # called modules, in order (with repeats)
        self.produced: Dict[int, Tuple[str, Tensor]] = {}  # id(output) -> (leaf, tensor)
        self.inputs_of: Dict[str, List[str]] = {}  # leaf -> producers of its input
        self.consumers: Dict[str, List[str]] = {}  # leaf -> leaves consuming its output
        handles = []
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(self._pre))
            if not list(m.children()):
                handles.append(m.register_forward_hook(self._post))
        modes = {m: m.training for m in model.modules()}
        try:
            model.eval()
            with torch.no_grad(), self:
                run_tensor_forward(model, torch.zeros(1, in_channels, *input_size))
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        self.produced.clear()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', repr(func))
        if self.depth == 0 and name not in self._SHAPE_ONLY:
            for a in list(args) + list(kwargs.values()):
                for t in (a if isinstance(a, (list, tuple)) else (a,)):
                    if isinstance(t, Tensor) and id(t) in self.produced:
                        self.consumers.setdefault(self.produced[id(t)][0], []).append(
                            f'<{name}>')
        return func(*args, **kwargs)

    def _pre(self, module, args):
        path = self.paths[module]
        self.calls.append(path)
        if list(module.children()):
            return
        self.depth += 1
        srcs = []
        for a in args:
            if isinstance(a, Tensor) and id(a) in self.produced:
                src = self.produced[id(a)][0]
                srcs.append(src)
                self.consumers.setdefault(src, []).append(path)
        self.inputs_of[path] = srcs

    def _post(self, module, args, out):
        self.depth -= 1
        if isinstance(out, Tensor):
            self.produced[id(out)] = (self.paths[module], out)  # keeps the id alive


def _fold_bn(conv: nn.Conv2d, bn: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """Float64 weight and bias of ``bn(conv(x))`` (inference statistics)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0],
                                                                               dtype=torch.float64)
    scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bn.affine:
        shift = shift + bn.bias.detach().double()
    return w * scale.reshape(-1, 1, 1, 1), b * scale + shift


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition('.')
    setattr(model.get_submodule(parent) if parent else model, name, new)


def compile_model(model: nn.Module,
                  bits: int = 64,
                  shift: Optional[int] = None,
                  relu_bits: int = 64,
                  relu_shift: Optional[int] = None,
                  pool_bits: int = 64,
                  pool_shift: Optional[int] = None,
                  frac_bits: int = FRAC_BITS,
                  with_weights: bool = True,
                  pool_before_relu: bool = False,
                  trace_size: Sequence[int] = (32, 32),
                  in_channels: int = 3,
                  uid: Optional[str] = None,
                  calibration: Optional[Dict[str, float]] = None,
                  margin: float = 4.0,
                  site_shifts: Optional[Dict[str, int]] = None) -> SecureProgram:
    """Compile a converted mmpretrain classifier or mmseg segmentor (or a plain module).

    Args:
        model: The float network (not modified). An mmseg ``EncoderDecoder``'s
            auxiliary head is dropped (it only serves training).
        bits: Compared bits of the DReLUs of Block-ReLU sites (64: exact).
        shift: Pre-shift (LSBs dropped) of those DReLUs, the same at every
            site; overrides the calibration (for tests and benchmarks).
            Default: 0 at 64 bits, else per site from ``calibration``.
        relu_bits, relu_shift: Same for plain ``nn.ReLU`` sites (default exact).
        pool_bits, pool_shift: Same for the comparisons of MaxPool sites
            (default exact).
        calibration: ``{site: max |compared value|}`` from
            :func:`.calibrate.measure_ranges` on training data. Required for
            every kind of site compiled with fewer than 64 bits and no
            explicit shift: each site then gets the smallest shift that
            keeps ``margin`` times its range inside the compared range.
        margin: See :func:`.calibrate.choose_shift`.
        site_shifts: ``{site: shift}`` chosen elsewhere, e.g. the server's
            ``program.options['site_shifts']`` published to the client and
            the helper, who compile without the (private) calibration ranges.
            Used for the sites it names; an explicit ``shift`` still wins.
        frac_bits: Fixed-point fractional bits of weights and activations
            (must equal the session's).
        with_weights: Fold and quantise the weights (the server). Without
            them the program carries shapes only (client and helper).
        pool_before_relu: Run a MaxPool before the plain ReLU that feeds it
            (the authors' ResNet50 baseline: max and ReLU commute, and the
            ReLU then runs on the 4x smaller pooled map).
        trace_size: ``(H, W)`` of the float trace that splits reused ReLUs,
            finds conv->BN pairs and validates the network (refusals are
            found at this size): pass the size you will run, which a
            network with a fixed-size classifier (VGG's 7x7x512 FC) needs.
            Fully convolutional programs then run at any size.
        in_channels: Input channels.
        uid: Names the program's weights in a session (default: random).
            Parties that compile separately may pass the same string.

    Returns:
        SecureProgram: runnable by all three parties.

    Raises:
        UnsupportedLayerError: for a layer or tensor operation the secure
            runtime cannot run, naming the module path and type.
        ValueError: for ``bits < 64`` with neither a calibration nor a
            shift, or a calibration lacking a site (a wrong sign would
            otherwise go unnoticed).
    """
    calibration = check_ranges(calibration)
    if not (np.isfinite(margin) and margin >= 1):
        raise ValueError(f'margin must be a finite number >= 1, got {margin}')
    # kind -> (compared bits, explicit shift or None); the option names for errors
    compare = {'block_relu': (int(bits), shift, 'bits', 'shift'),
               'relu': (int(relu_bits), relu_shift, 'relu_bits', 'relu_shift'),
               'max_pool': (int(pool_bits), pool_shift, 'pool_bits', 'pool_shift')}
    for b, sh, bname, sname in compare.values():
        if not 2 <= b <= 64:
            raise ValueError(f'{bname} must be in 2..64, got {b}')
        if sh is not None and not 0 <= int(sh) <= 64 - b:
            raise ValueError(f'{sname} must be in 0..{64 - b} for {bname}={b}, got {sh}')
        if b < 64 and sh is None and calibration is None and site_shifts is None:
            raise ValueError(
                f'{bname}={b} < 64 makes comparisons approximate, right only for values '
                'inside a range set by the shift: pass calibration=measure_ranges(model, '
                f'training images) (block_relu_plugin.mpc.calibrate) or an explicit {sname}=')
    m = copy.deepcopy(model).cpu().float().eval()
    if getattr(m, 'auxiliary_head', None) is not None:
        m.auxiliary_head = None
    split_reused_relus(m, _pair(trace_size), in_channels)
    trace = _Trace(m, _pair(trace_size), in_channels)
    modules = dict(m.named_modules())
    uid = uid or uuid.uuid4().hex[:12]

    def quant(t: Tensor) -> Optional[Tensor]:
        return encode(t, frac_bits) if with_weights else None

    identity_types = _identity_types()
    called = list(dict.fromkeys(trace.calls))
    replace: Dict[str, nn.Module] = {}
    kinds: Dict[str, str] = {}  # comparison site -> kind (shifts are set below)
    secure: Dict[str, nn.Module] = {}  # comparison site -> its secure module
    folded = set()
    for path in called:
        mod = modules[path]
        refused = _not_relu_layer(mod)
        if refused is not None:
            raise UnsupportedLayerError(
                _not_relu_message(path or '<top level>', type(mod).__name__, *refused))
        if list(mod.children()):
            if any(True for _ in mod.parameters(recurse=False)):
                raise UnsupportedLayerError(
                    f'{path} ({type(mod).__name__}): a module computing with its own '
                    'parameters is not supported')
            continue
        if isinstance(mod, nn.Conv2d):
            bn_path = _folded_bn(path, trace, modules)
            if bn_path is not None:
                w, b = _fold_bn(mod, modules[bn_path])
                folded.add(bn_path)
            else:
                w = mod.weight.detach().double()
                b = mod.bias.detach().double() if mod.bias is not None else None
            replace[path] = SecureConv2d(path, mod, f'{uid}:{path}', quant(w),
                                         None if b is None else quant(b))
        elif isinstance(mod, nn.Linear):
            b = mod.bias.detach().double() if mod.bias is not None else None
            replace[path] = SecureLinear(path, mod, f'{uid}:{path}',
                                         quant(mod.weight.detach().double()),
                                         None if b is None else quant(b))
        elif isinstance(mod, _BatchNorm):
            continue  # checked below: must have been folded
        elif isinstance(mod, BlockReLU):
            sizes = None if mod.block_sizes is None else mod.block_sizes.cpu().numpy()
            secure[path], kinds[path] = SecureReLU(path, bits, 0, sizes), 'block_relu'
        elif type(mod) is nn.ReLU:
            secure[path], kinds[path] = SecureReLU(path, relu_bits, 0), 'relu'
        elif type(mod) is nn.MaxPool2d:
            secure[path], kinds[path] = SecureMaxPool2d(path, mod, pool_bits, 0), 'max_pool'
        elif type(mod) is nn.AvgPool2d:
            replace[path] = SecureAvgPool2d(path, mod)
        elif type(mod) is nn.AdaptiveAvgPool2d:
            replace[path] = (SecureGlobalAvgPool(path) if mod.output_size in (1, (1, 1))
                             else SecureAdaptiveAvgPool(path, mod.output_size))
        elif isinstance(mod, nn.Upsample):  # also UpsamplingBilinear2d / UpsamplingNearest2d
            replace[path] = SecureResize(path, mod.size, mod.scale_factor, mod.mode,
                                         mod.align_corners, mod.recompute_scale_factor)
        elif isinstance(mod, identity_types):
            replace[path] = SecureIdentity(path)
        elif isinstance(mod, (nn.Flatten, nn.Unflatten)):
            pass  # views: their forward runs, the guard lets views of shares pass
        elif (type(mod).__module__.startswith('torch.nn.')
              or any(True for _ in mod.parameters()) or any(True for _ in mod.buffers())):
            raise UnsupportedLayerError(
                f'{path or "<top level>"} ({type(mod).__name__}): layer not supported by the '
                'secure runtime; to compile, express it with the supported layers (conv, '
                'linear, BN after a conv, ReLU, Block-ReLU, max/avg/adaptive-avg pooling, '
                'resize, dropout, identity)')
        # else: a stateless custom leaf keeps its forward, whose tensor ops the
        # guard checks (views and share additions pass, anything else is refused)
    for path in called:
        if isinstance(modules[path], _BatchNorm):
            if path not in folded:
                raise UnsupportedLayerError(
                    f'{path} ({type(modules[path]).__name__}): a BatchNorm must directly follow '
                    'the convolution it is folded into (its output used only by the BN)')
            replace[path] = SecureIdentity(path)
    replace.update(secure)
    ranges = dict(calibration or {})
    if pool_before_relu:
        for pool, relu in _swap_pool_relu(trace, modules, replace):
            if relu in ranges:  # the pool now sees the ReLU's input: window range <= 2 max|x|
                ranges[pool] = max(ranges.get(pool, 0.0), 2 * ranges[relu])
    chosen = {}
    for path, kind in kinds.items():
        b, sh, _, sname = compare[kind]
        site = secure[path]
        if sh is not None:
            site.shift = int(sh)
            if path in ranges and ranges[path] >= compared_range(b, site.shift, frac_bits):
                warnings.warn(f'{sname}={sh} at {path!r}: calibrated values up to '
                              f'{ranges[path]:g} exceed the compared range '
                              f'{compared_range(b, site.shift, frac_bits):g}: wrong signs')
        elif site_shifts is not None and path in site_shifts:
            site.shift = int(site_shifts[path])
            if not 0 <= site.shift <= 64 - b:
                raise ValueError(f'site_shifts[{path!r}] must be in 0..{64 - b} for {b} '
                                 f'compared bits, got {site.shift}')
        elif b < 64:
            if path not in ranges:
                raise ValueError(f'calibration has no range for site {path!r} ({kind}): '
                                 'measure it with measure_ranges on this model, or pass '
                                 f'{sname}=')
            try:
                site.shift = choose_shift(ranges[path], b, frac_bits, margin)
            except ValueError as e:
                raise ValueError(f'site {path!r}: {e}') from None
        chosen[path] = site.shift
    for path, new in replace.items():
        _set(m, path, new)
    options = dict(bits=bits, shift=shift, relu_bits=relu_bits, relu_shift=relu_shift,
                   pool_bits=pool_bits, pool_shift=pool_shift, frac_bits=frac_bits,
                   pool_before_relu=pool_before_relu, in_channels=in_channels,
                   site_shifts=chosen, margin=float(margin),
                   site_ranges={k: ranges[k] for k in kinds if k in ranges})
    task = 'segmentation' if hasattr(m, 'decode_head') else 'classification'
    align = bool(getattr(getattr(m, 'decode_head', None), 'align_corners', False))
    program = SecureProgram(m, task, align, options, uid, has_weights=with_weights)
    # validate the tensor ops of the forward at compile time (meta tensors only)
    from .costmodel import program_costs
    program_costs(program, (1, in_channels) + _pair(trace_size))
    return program


def _folded_bn(conv_path: str, trace: _Trace, modules) -> Optional[str]:
    """The BatchNorm that consumes (only) this conv's output, if any."""
    users = trace.consumers.get(conv_path, [])
    bns = [u for u in users if u in modules and isinstance(modules[u], _BatchNorm)]
    if not bns:
        return None
    bn = modules[bns[0]]
    if len(set(users)) != 1 or not bn.track_running_stats or bn.running_mean is None:
        raise UnsupportedLayerError(
            f'{bns[0]} ({type(bn).__name__}): cannot fold: the conv output {conv_path} is also '
            'used elsewhere, or the BN has no running statistics')
    return bns[0]


def _swap_pool_relu(trace: _Trace, modules,
                    replace: Dict[str, nn.Module]) -> List[Tuple[str, str]]:
    """MaxPool(ReLU(x)) -> ReLU(MaxPool(x)) where a plain ReLU feeds only a MaxPool.

    Returns the swapped ``(pool, relu)`` paths.
    """
    swapped = []
    for path, srcs in trace.inputs_of.items():
        if not isinstance(replace.get(path), SecureMaxPool2d) or len(srcs) != 1:
            continue
        relu = replace.get(srcs[0])
        if (isinstance(relu, SecureReLU) and relu.block_sizes is None
                and set(trace.consumers.get(srcs[0], [])) == {path}):
            replace[path] = nn.Sequential(replace[path], relu)
            replace[srcs[0]] = SecureIdentity(srcs[0])
            swapped.append((path, srcs[0]))
    return swapped
