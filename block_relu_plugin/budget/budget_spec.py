"""Budgets: what a Block-ReLU spec may spend per image, in one unambiguous syntax.

Forms accepted by :func:`parse_budget` (every tool's ``--budget`` and
``block_relu_cfg=dict(budget=...)``):

=============================  =================================================
``0.06`` or ``'0.06'``         a fraction of the network's ReLUs, in (0, 1]: at
                               most ``floor(0.06 * ReLUs)`` DReLUs per image
``'6%'``                       the same in percent, in (0, 100]
``'drelus=33423'``             at most 33,423 DReLUs per image
``'bytes=20MB'``               at most 20,000,000 bytes per image, online +
                               offline, of the ReLU sites (DReLUs and the gate
                               products of their gated pixels)
``'online_bytes=20MB'``        the same, online bytes only
``...,bits=16``                the compared bits the byte costs assume (default
                               64); compile / run with the same ``bits``
=============================  =================================================

Byte sizes: a number (``20e6``, ``20000000``) with an optional unit ``B``,
``kB`` / ``MB`` / ``GB`` (powers of 1000) or ``KiB`` / ``MiB`` / ``GiB``
(powers of 1024), rounded down to whole bytes. In a Python config the keyword
forms also read as a dict: ``dict(drelus=33423)``,
``dict(bytes='20MB', bits=16)``, ``dict(online_bytes=2e7)``.

A bare number above 1 is refused: ``6`` could mean 6 % or 6 DReLUs.

Byte budgets count what the cost model (:class:`..mpc.cost.Ours`, equal to the
transport meter) charges the Block-ReLU sites per image in the chosen phase;
the linear layers (their offline masks, the input share, the output reveal),
MaxPool comparisons and the once-per-session key agreement and masked weights
do not depend on the spec and are not counted.
"""
import math
import numbers
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import numpy as np

from ..layers.block_relu import num_drelus
from .knapsack import BudgetError

#: the accepted forms, shown by every budget error
FORMS = ("0.06 (fraction of the ReLUs, in (0, 1]), '6%', 'drelus=33423', "
         "'bytes=20MB' (online + offline per image), 'online_bytes=20MB', "
         "with ',bits=16' for the compared bits of byte budgets (default 64)")

#: phase name of each byte key, and the cost phases it sums
BYTE_KEYS = {'bytes': ('online+offline', ('online', 'offline')),
             'online_bytes': ('online', ('online', ))}
DEFAULT_BITS = 64

_UNITS = {'': 1, 'b': 1, 'kb': 10**3, 'mb': 10**6, 'gb': 10**9,
          'kib': 2**10, 'mib': 2**20, 'gib': 2**30}
_NUMBER = r'(?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.)'


def _error(problem: str) -> BudgetError:
    return BudgetError(f'{problem}; budget forms: {FORMS}')


@dataclass(frozen=True)
class Budget:
    """A parsed budget.

    Attributes:
        kind: ``'fraction'``, ``'drelus'`` or ``'bytes'``.
        value: The fraction (float in (0, 1]), DReLU count or byte count (int).
        phase: Byte budgets: ``'online+offline'`` or ``'online'``; else None.
        bits: Byte budgets: compared bits of the DReLUs; else None.
    """
    kind: str
    value: Union[float, int]
    phase: Optional[str] = None
    bits: Optional[int] = None

    @property
    def unit(self) -> str:
        """What the knapsack's integer costs count: ``'drelus'`` or ``'bytes'``."""
        return 'bytes' if self.kind == 'bytes' else 'drelus'

    def limit(self, relus: int) -> int:
        """The knapsack's integer capacity for a network of ``relus`` ReLUs."""
        if self.kind == 'fraction':
            return int(math.floor(self.value * relus + 1e-9))  # 0.06 * relus is rarely exact
        return int(self.value)

    def channel_costs(self, sizes, height: int, width: int) -> np.ndarray:
        """Integer cost of one channel of an ``height x width`` map per candidate size.

        DReLU budgets: :func:`..layers.block_relu.num_drelus`. Byte budgets:
        the bytes of one image's channel in this budget's phase, from
        :meth:`..mpc.cost.Ours.block_relu` (its DReLUs at ``bits`` plus the
        gate product of its gated pixels; identity and zero channels cost 0).
        Ring messages are linear in the DReLU and gated-pixel counts and bit
        messages are padded to whole bytes per channel, so the channels' sum
        is the site's cost, and an all-``(1, 1)`` site (which the compiler
        runs as a plain ReLU) costs the same (tested against the meter).

        Args:
            sizes: ``(K, 2)`` candidate patch sizes.

        Returns:
            np.ndarray: ``(K,)`` int64 costs.
        """
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        if self.unit == 'drelus':
            return num_drelus(sizes, height, width)
        from ..mpc.cost import ours  # the one home of byte formulas
        phases = BYTE_KEYS['online_bytes' if self.phase == 'online' else 'bytes'][1]
        out = np.empty(len(sizes), dtype=np.int64)
        for k, size in enumerate(sizes):
            c = ours.block_relu(size[None], 1, height, width, self.bits)
            out[k] = sum(c.total(p) for p in phases)
        return out

    def to_json(self) -> Union[float, str]:
        """The spec metadata value: a fraction as a number, else the canonical text."""
        return float(self.value) if self.kind == 'fraction' else str(self)

    def tag(self) -> str:
        """A file-name-safe form (cached spec names)."""
        if self.kind == 'fraction':
            return format(self.value, 'g')
        if self.kind == 'drelus':
            return f'drelus{self.value}'
        key = 'bytes' if self.phase == 'online+offline' else 'online-bytes'
        return f'{key}{self.value}-bits{self.bits}'

    def __str__(self) -> str:
        if self.kind == 'fraction':
            return format(self.value, 'g')
        if self.kind == 'drelus':
            return f'drelus={self.value}'
        key = 'bytes' if self.phase == 'online+offline' else 'online_bytes'
        return f'{key}={self.value},bits={self.bits}'


def _fraction(x: float) -> Budget:
    if not math.isfinite(x) or x <= 0:
        raise _error(f'budget {x:g} must be positive')
    if x > 1:
        raise _error(f'budget {x:g} is ambiguous: a bare number must be a fraction in (0, 1]; '
                     f"write '{x:g}%' for a percentage or 'drelus={x:g}' for a DReLU count")
    return Budget('fraction', float(x))


def _count(text, key: str) -> int:
    if isinstance(text, bool):
        raise _error(f'{key}={text!r} is not a count')
    if isinstance(text, numbers.Real):
        value = float(text)
    else:
        s = str(text).strip().replace('_', '')
        if not re.fullmatch(_NUMBER, s):
            raise _error(f'{key}={text!r} is not a whole number')
        value = float(s)
    if not math.isfinite(value) or not value.is_integer() or value < 1:
        raise _error(f'{key}={text!r} must be a whole number >= 1')
    return int(value)


def parse_bytes(text) -> int:
    """``'20MB'``, ``'20e6'``, ``'1.5 GiB'``, ``20e6`` -> whole bytes (>= 1).

    Raises:
        BudgetError: for anything else, naming the units.
    """
    if isinstance(text, bool):
        raise _error(f'byte size {text!r} is not a number')
    if isinstance(text, numbers.Real):
        value = float(text)
    else:
        m = re.fullmatch(rf'\s*({_NUMBER})\s*([a-zA-Z]*)\s*', str(text))
        unit = m and m.group(2).lower()
        if not m or unit not in _UNITS:
            raise _error(f'byte size {text!r} is not a number with an optional unit '
                         '(B, kB, MB, GB, KiB, MiB, GiB)')
        value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise _error(f'byte size {text!r} must be at least 1 byte')
    return int(math.floor(value))


def check_bits(text) -> int:
    """Compared bits of a byte budget: a whole number in 2..64 (what the compiler accepts)."""
    b = None
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):
        b = int(text)
    elif isinstance(text, str) and re.fullmatch(r'\s*[0-9]+\s*', text):
        b = int(text)
    if b is None or not 2 <= b <= 64:
        raise _error(f'bits={text!r} must be a whole number in 2..64')
    return b


def _from_items(items: Mapping, shown, bits: Optional[int]) -> Budget:
    items = {str(k).strip().lower(): v for k, v in items.items()}
    kinds = [k for k in items if k in ('drelus', *BYTE_KEYS)]
    unknown = sorted(set(items) - {'drelus', 'bits', *BYTE_KEYS})
    if unknown:
        raise _error(f'budget {shown!r}: unknown key(s) {unknown}')
    if len(kinds) != 1:
        raise _error(f'budget {shown!r} needs exactly one of drelus=, bytes=, online_bytes=')
    key = kinds[0]
    if key == 'drelus':
        if 'bits' in items:
            raise _error(f'budget {shown!r}: bits only apply to byte budgets')
        return Budget('drelus', _count(items[key], key))
    own = check_bits(items['bits']) if 'bits' in items else None
    if own is not None and bits is not None and own != bits:
        raise _error(f'budget {shown!r} says bits={own} but bits={bits} was given as well')
    return Budget('bytes', parse_bytes(items[key]), BYTE_KEYS[key][0],
                  own if own is not None else bits if bits is not None else DEFAULT_BITS)


def parse_budget(budget, bits: Optional[int] = None) -> Budget:
    """Parse any budget form of the module docstring.

    Args:
        budget: A number in (0, 1], a string (``'0.06'``, ``'6%'``,
            ``'drelus=33423'``, ``'bytes=20MB'``, ``'online_bytes=2e7,bits=16'``),
            a mapping (``dict(bytes='20MB', bits=16)``) or a :class:`Budget`.
        bits: Compared bits for a byte budget that names none (e.g. a tool's
            ``--bits``; default 64). Ignored by DReLU budgets; a byte budget
            naming other bits is an error.

    Returns:
        Budget

    Raises:
        BudgetError: a one-line message naming the problem and the forms.
    """
    if bits is not None:
        bits = check_bits(bits)
    if isinstance(budget, Budget):
        if budget.kind == 'bytes' and bits is not None and budget.bits != bits:
            raise _error(f'budget {str(budget)!r} says bits={budget.bits} but bits={bits} '
                         'was given as well')
        return budget
    if isinstance(budget, bool) or budget is None:
        raise _error(f'budget {budget!r} is not a budget')
    if isinstance(budget, numbers.Real):
        return _fraction(float(budget))
    if isinstance(budget, Mapping):
        return _from_items(budget, dict(budget), bits)
    if not isinstance(budget, str):
        raise _error(f'budget {budget!r} ({type(budget).__name__}) is not a budget')
    text = budget.strip()
    if '=' in text:
        items = {}
        for part in text.split(','):
            key, eq, value = part.partition('=')
            key = key.strip().lower()
            if not eq or not key:
                raise _error(f'budget {budget!r}: {part.strip()!r} is not key=value')
            if key in items:
                raise _error(f'budget {budget!r} names {key} twice')
            items[key] = value.strip()
        return _from_items(items, budget, bits)
    m = re.fullmatch(rf'([+-]?(?:{_NUMBER}))\s*%', text)
    if m:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise _error(f'budget {budget!r} must be a percentage in (0, 100]')
        return Budget('fraction', pct / 100)
    if re.fullmatch(rf'[+-]?(?:{_NUMBER})|[+-]?(?:inf|nan)', text, re.IGNORECASE):
        return _fraction(float(text))
    raise _error(f'budget {budget!r} is not a budget')
