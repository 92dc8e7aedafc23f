"""Predicted communication of a secure network, per layer, without running it.

The cost model walks a compiled :class:`~.compiler.SecureProgram` with meta
tensors (the network's own forward, so residual adds, concatenations and
resizes are followed exactly as the runtime follows them) and sums the
per-operation formulas of :mod:`.cost`:

* ``protocol='ours'``: this package's runtime. The prediction equals what the
  transport meter records, per ``(phase, sender, receiver)`` and per layer
  label (tested). Masked weights are ``session`` bytes the first time a
  weight is used in a session; the key agreement is the session handshake.
* ``protocol='reference'``: the authors' runtime (REFERENCE-RUNTIME.md 4.10):
  everything online, every conv/FC resends its masked weights per image,
  128 B handshake per image, batch 1 (a batch of N costs N images).

Example:
    >>> report = predict_costs('configs/.../resnet18_cifar.py', (32, 32),
    ...                        protocol='reference')
    >>> report.total.online   # 493,540,032 B for the all-ReLU CIFAR ResNet18
"""
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from torch import Tensor, nn

from . import cost as _cost
from .compiler import Runtime, SecureProgram, compile_model
from .protocols import meta

__all__ = ['CostReport', 'CostRuntime', 'program_costs', 'session_costs', 'predict_costs']


class CostRuntime(Runtime):
    """Sum the cost formulas of every secure module call, per layer label.

    Args:
        protocol: ``'ours'`` or ``'reference'`` (or a protocol object of :mod:`.cost`).
        seen: Weight keys already sent in this session (shared across runs);
            a weight not in it is charged its one-time masked-weight bytes.
    """

    def __init__(self, protocol: Union[str, object] = 'ours', seen: Optional[Set[str]] = None):
        self.protocol = _cost.PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
        self.seen = set() if seen is None else seen
        self.layers: Dict[str, _cost.Cost] = OrderedDict()

    def call(self, module, x: Tensor) -> Tensor:
        key = getattr(module, 'key', None)
        first = key is not None and key not in self.seen
        if key is not None:
            self.seen.add(key)
        c, y = module.cost(self.protocol, x, first)
        if not module.free:
            self.layers[module.label] = self.layers.get(module.label, _cost.Cost()) + c
        return y


class CostReport:
    """Predicted bytes of one or more runs, per layer label and in total.

    Attributes:
        protocol: ``'ours'`` or ``'reference'``.
        input_shapes: The ``(N, C, H, W)`` of each run.
        layers: ``{label: Cost}`` in execution order (labels are the module
            paths the meter uses, plus ``'output'`` and ``'handshake'``).
        total: The sum (a :class:`.cost.Cost`: ``.online``, ``.offline``,
            ``.session``, ``.parts`` per ``(phase, src, dst)``, ``.rounds``).
    """

    def __init__(self, protocol: str, input_shapes: List[Tuple[int, ...]],
                 layers: Dict[str, _cost.Cost]):
        self.protocol = protocol
        self.input_shapes = input_shapes
        self.layers = layers
        self.total = sum(layers.values(), _cost.Cost())

    @property
    def num_images(self) -> int:
        return sum(int(s[0]) for s in self.input_shapes)

    def per_image(self, phase: Optional[str] = None) -> float:
        """Bytes per image (all parties), of one phase or of all."""
        return self.total.total(phase) / max(1, self.num_images)

    def to_dict(self) -> dict:
        """JSON-ready: totals per phase and per (phase, src, dst), and per layer."""
        def parts(c):
            return {f'{p}:{s}->{d}': v for (p, s, d), v in sorted(c.parts.items())}
        return {
            'protocol': self.protocol,
            'input_shapes': [list(s) for s in self.input_shapes],
            'total': {'session': self.total.session, 'offline': self.total.offline,
                      'online': self.total.online, 'all': self.total.total(),
                      'rounds': self.total.rounds, 'parts': parts(self.total),
                      'steps': [dict(zip(('step', 'phase', 'src', 'dst', 'bytes'), r))
                                for r in self.steps()]},
            'layers': {k: {'session': c.session, 'offline': c.offline, 'online': c.online,
                           'rounds': c.rounds} for k, c in self.layers.items()},
        }

    def format(self, top: Optional[int] = None) -> str:
        """A text table: one row per layer, then the totals."""
        rows = list(self.layers.items())
        if top:
            rows = sorted(rows, key=lambda kv: -kv[1].total())[:top]
        width = max([len(k) for k, _ in rows] + [10])
        out = [f'{"layer":<{width}} {"session":>14} {"offline":>14} {"online":>14} {"rounds":>6}']
        for k, c in rows:
            out.append(f'{k:<{width}} {c.session:>14,} {c.offline:>14,} {c.online:>14,} '
                       f'{c.rounds:>6}')
        t = self.total
        out.append(f'{"total":<{width}} {t.session:>14,} {t.offline:>14,} {t.online:>14,} '
                   f'{t.rounds:>6}')
        out.append(f'all phases: {t.total():,} B for {self.num_images} image(s) '
                   f'({self.per_image():,.0f} B per image), protocol {self.protocol}')
        return '\n'.join(out)

    def steps(self) -> List[Tuple[str, str, str, str, int]]:
        """The per-protocol profile: ``(step, phase, src, dst, bytes)`` rows, largest
        first (steps are the protocol messages named in :mod:`.cost`; untagged
        parts, e.g. of the reference protocol, are step ``''``)."""
        rows = [k + (v,) for k, v in self.total.steps.items() if v]
        return sorted(rows, key=lambda r: (-r[4], r[:4]))

    def format_steps(self) -> str:
        """A text table of :meth:`steps`: bytes per image and share of the per-image
        (offline + online) total; session bytes are shown without a share."""
        rows = self.steps()
        images = max(1, self.num_images)
        total = max(1, self.total.offline + self.total.online)
        width = max([len(r[0]) for r in rows] + [10])
        out = [f'{"protocol step":<{width}} {"phase":<8} {"link":<16} {"bytes/image":>14} '
               f'{"share":>6}']
        for step, phase, src, dst, v in rows:
            out.append(f'{step or "(untagged)":<{width}} {phase:<8} {src + "->" + dst:<16} '
                       f'{v / images:>14,.0f} ' + ('     -' if phase == 'session' else
                                            f'{100 * v / total:>5.1f}%'))
        by_phase = ', '.join(f'{p} {self.total.total(p) / images:,.0f}'
                             for p in ('session', 'offline', 'online'))
        out.append(f'per image: {by_phase} B (protocol {self.protocol})')
        return '\n'.join(out)

    def __repr__(self):
        return f'CostReport({self.protocol}, {self.total})'


def _walk(program: SecureProgram, shape, runtime: CostRuntime) -> Dict[str, _cost.Cost]:
    inp = runtime.protocol.share_input(shape)
    if inp.total():
        runtime.layers['input'] = runtime.layers.get('input', _cost.Cost()) + inp
    out = program.forward(runtime, meta(shape))
    layers = runtime.layers
    layers['output'] = layers.get('output', _cost.Cost()) + \
        runtime.protocol.reveal_to_client(out.numel())
    return layers


def program_costs(program: SecureProgram, input_shape: Sequence[int],
                  protocol: str = 'ours', first_use: bool = True,
                  handshake: bool = False) -> CostReport:
    """Predicted bytes of one run of ``program`` on a batch of ``input_shape``.

    Args:
        program: A compiled program (with or without weights).
        input_shape: ``(N, C, H, W)``.
        protocol: ``'ours'`` or ``'reference'``.
        first_use: ``ours``: charge the one-time masked weights (the first
            run of the program in a session).
        handshake: Include the handshake (``ours``: session key agreement;
            ``reference``: 128 B per image).
    """
    input_shape = tuple(int(v) for v in input_shape)
    if protocol == 'reference':
        return session_costs(program, [input_shape], protocol) if handshake else \
            CostReport(protocol, [input_shape], _walk(program, input_shape,
                                                      CostRuntime(protocol)))
    seen = None if first_use else {m.key for _, m in program.sites() if hasattr(m, 'key')}
    layers = _walk(program, input_shape, CostRuntime(protocol, seen))
    if handshake:
        layers = OrderedDict([('handshake', _cost.ours.handshake())] + list(layers.items()))
    return CostReport(protocol, [input_shape], layers)


def session_costs(program: SecureProgram, input_shapes: Iterable[Sequence[int]],
                  protocol: str = 'ours') -> CostReport:
    """Predicted bytes of a whole session: the handshake and one run per batch shape."""
    shapes = [tuple(int(v) for v in s) for s in input_shapes]
    proto = _cost.PROTOCOLS[protocol]
    if protocol == 'reference':
        layers = OrderedDict([('handshake', proto.handshake() * sum(s[0] for s in shapes))])
    else:
        layers = OrderedDict([('handshake', proto.handshake())])
    seen: Set[str] = set()
    for shape in shapes:
        for k, c in _walk(program, shape, CostRuntime(protocol, seen)).items():
            layers[k] = layers.get(k, _cost.Cost()) + c
    return CostReport(protocol, shapes, layers)


def _size2(input_size) -> Tuple[int, int]:
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    return int(h), int(w)


def predict_costs(config_or_model: Union[str, nn.Module, SecureProgram],
                  input_size: Sequence[int],
                  spec: Optional[str] = None,
                  protocol: str = 'ours',
                  batch_size: int = 1,
                  handshake: bool = True,
                  **compile_kwargs) -> CostReport:
    """Predict the bytes of one batch from a config (or model, or program).

    Args:
        config_or_model: Config path / Config, built model, or compiled program.
        input_size: ``(H, W)``; a model or config is also compiled (traced
            and validated) at this size unless ``trace_size`` is given.
        spec: Spec file replacing the config's (configs only).
        protocol: ``'ours'`` or ``'reference'``.
        batch_size: Images per run.
        handshake: Include the handshake (see :func:`program_costs`).
        **compile_kwargs: :func:`.compiler.compile_model` options (``bits``,
            ``relu_bits``, ``pool_bits``, ``pool_before_relu``, ...).

    Returns:
        CostReport: per-layer and total bytes, including the one-time masked
        weights (``session``) for ``ours``.
    """
    if isinstance(config_or_model, SecureProgram):
        program = config_or_model
    else:
        model = config_or_model
        if not isinstance(model, nn.Module):
            from ..utils.config import build_model
            model = build_model(config_or_model, spec=spec)
        compile_kwargs.setdefault('with_weights', False)
        # trace (and validate) at the size asked for, not the compiler's default
        compile_kwargs.setdefault('trace_size', _size2(input_size))
        if compile_kwargs.get('calibration') is None:
            # bytes do not depend on the DReLU pre-shift: no calibration needed
            for key in ('shift', 'relu_shift', 'pool_shift'):
                compile_kwargs.setdefault(key, 0)
        program = compile_model(model, **compile_kwargs)
    h, w = _size2(input_size)
    channels = program.options.get('in_channels', 3)
    return program_costs(program, (batch_size, channels, int(h), int(w)), protocol,
                         handshake=handshake)
