"""Protocol cost formulas: the one home of per-operation bytes and rounds.

Two protocols:

* :class:`Ours` - this package's runtime. Bytes are payload bytes per
  ``(phase, sender, receiver)`` with phase ``'session'`` (once per session:
  key agreement and masked weights), ``'offline'`` (data-independent, per
  run, before the input exists) and ``'online'``. They equal what the
  transport meter records, exactly (tested). ``rounds`` counts the online
  message hops on the critical path of one call.
* :class:`Reference` - the authors' runtime as read in REFERENCE-RUNTIME.md
  (sections 4.10, 7, 8): everything is online, ``(phase='online', src, dst)``.

Every function takes public sizes (element counts, shapes, block sizes) and
returns a :class:`Cost`; a compiler sums them over a network
(``sum(costs, Cost())``). Block-ReLU counts come from
:func:`block_relu_plugin.layers.block_relu.num_drelus`.
"""
from collections import defaultdict
from typing import Dict, Optional, Tuple

import numpy as np

from ..layers.block_relu import check_block_sizes, num_drelus
from .bits import ComparePlan, message_bytes, uniform_groups, word_bytes
from .ring import zp_packed_bytes

C, S, H = 'client', 'server', 'helper'
RING = 8  # bytes per ring element


class Cost:
    """Bytes per ``(phase, src, dst)`` plus online rounds; supports ``+`` and ``*``."""

    def __init__(self, parts: Optional[Dict[Tuple[str, str, str], int]] = None,
                 rounds: int = 0, step: str = ''):
        self.parts = defaultdict(int)
        self.steps = defaultdict(int)  # {(step, phase, src, dst): bytes}: the profile
        for k, v in (parts or {}).items():
            if v:
                self.parts[k] += int(v)
                self.steps[(step,) + tuple(k)] += int(v)
        self.rounds = rounds

    def __add__(self, other: 'Cost') -> 'Cost':
        out = Cost(None, self.rounds + other.rounds)
        for mine, theirs in ((out.parts, self.parts), (out.parts, other.parts),
                             (out.steps, self.steps), (out.steps, other.steps)):
            for k, v in theirs.items():
                mine[k] += v
        return out

    __radd__ = lambda self, other: self if other == 0 else self.__add__(other)  # noqa: E731

    def __mul__(self, k: int) -> 'Cost':
        out = Cost({key: v * k for key, v in self.parts.items()}, self.rounds)
        out.steps = defaultdict(int, {key: v * k for key, v in self.steps.items()})
        return out

    def total(self, phase: Optional[str] = None) -> int:
        return sum(v for (p, _, _), v in self.parts.items() if phase is None or p == phase)

    @property
    def online(self) -> int:
        return self.total('online')

    @property
    def offline(self) -> int:
        return self.total('offline')

    @property
    def session(self) -> int:
        return self.total('session')

    def sent_by(self, role: str, phase: Optional[str] = None) -> Dict[Tuple[str, str], int]:
        """``{(phase, receiver): bytes}`` sent by ``role`` (the meter's view)."""
        return {(p, d): v for (p, s, d), v in self.parts.items()
                if s == role and v and (phase is None or p == phase)}

    def __eq__(self, other):
        return isinstance(other, Cost) and dict(self.parts) == dict(other.parts)

    def __repr__(self):
        return (f'Cost(session={self.session}, offline={self.offline}, online={self.online}, '
                f'rounds={self.rounds})')


def _n(x) -> int:
    return int(np.prod(x, dtype=np.int64)) if isinstance(x, (tuple, list)) else int(x)


def block_counts(block_sizes, n: int, height: int, width: int) -> Tuple[int, int]:
    """``(N_blk, M_act)`` of a Block-ReLU layer for a batch of ``n``."""
    sizes = check_block_sizes(block_sizes)
    n_blk = int(num_drelus(sizes, height, width).sum()) * n
    active = int(((sizes[:, 0] > 0) & (sizes[:, 1] > 0)).sum())
    return n_blk, active * height * width * n


class Ours:
    """Costs of this package's protocols (exactly what the runtime sends).

    Every part is tagged with the protocol step that sends it (``Cost.steps``),
    which is the per-protocol profile of :meth:`.costmodel.CostReport.format_steps`.
    Bit messages are packed with each channel's run padded to whole bytes
    (:func:`.bits.message_bytes`), so costs stay additive over channels;
    SecureNN's Z_67 messages take a fixed-size record per element
    (:func:`.ring.zp_packed_bytes`, 49 B for 64 columns).
    """

    @staticmethod
    def handshake() -> Cost:
        """Per-session key agreement: one 32-byte key per pair."""
        return Cost({('session', C, S): 32, ('session', C, H): 32, ('session', S, H): 32},
                    step='handshake')

    @staticmethod
    def share_input(numel) -> Cost:
        """The client sends the server ``x - R``."""
        return Cost({('online', C, S): RING * _n(numel)}, rounds=1, step='input')

    @staticmethod
    def conv2d(x_numel, w_numel, y_numel, first_use: bool = True) -> Cost:
        """Also :func:`linear`. ``first_use``: the weight's first call in the session.
        Nothing online: the client's masked input is sent offline."""
        x, w, y = _n(x_numel), _n(w_numel), _n(y_numel)
        c = Cost({('offline', H, C): RING * y}, step='linear: triple C_0') + \
            Cost({('offline', C, S): RING * x}, step='linear: masked input E')
        if first_use:
            c = c + Cost({('session', S, C): RING * w}, step='linear: masked weights F')
        return c

    linear = conv2d

    @staticmethod
    def mult(n) -> Cost:
        """Beaver product of two n-element tensors: E_0 offline; F_0, [E_1 | F_1]
        and the client's re-randomised share online."""
        n = _n(n)
        return (Cost({('offline', H, C): RING * n}, step='product: triple C_0')
                + Cost({('offline', C, S): RING * n}, step='product: E_0')
                + Cost({('online', C, S): RING * n, ('online', S, C): 2 * RING * n},
                       rounds=2, step='product: openings F_0, [E_1 | F_1]')
                + Cost({('online', C, S): RING * n}, step='product: re-randomisation'))

    @staticmethod
    def private_compare(n, cols: int = 64) -> Cost:
        """``cols`` Z_67 columns per element from each of client and server, packed
        (SecureNN's comparison, used by :meth:`share_convert` and :meth:`compute_msb`)."""
        b = zp_packed_bytes(_n(n), cols)
        return Cost({('online', C, H): b, ('online', S, H): b}, rounds=1,
                    step='PrivateCompare: vectors')

    @staticmethod
    def compare(n, bits: int = 64, fused: int = 0, selected: int = 0, groups=None,
                arith: bool = False) -> Cost:
        """One DReLU call (:func:`.protocols._drelu`) over n elements, with
        ``fused`` ReLU products and ``selected`` gated multiplicands (and with
        ``arith`` the n arithmetic DReLU shares, re-randomised too); its bit
        messages pad each of ``groups`` (element counts; default one group)
        to whole bytes, so the bytes are additive over groups (channels).

        Offline: the helper's dealt bits (one-hot leaves, MSB(X), AND
        corrections: one packed message) and ring shares ([r] per element,
        [X r] per fused product, [A r] per multiplicand); the client's half of
        y (``bits``-bit words) and of v - A. Online: the server's halves, one
        exchange of packed bits per tree level, the masked bit e, and the
        client's re-randomisation of the products.
        """
        n, nf, ms = _n(n), _n(fused), _n(selected)
        g = [n] if groups is None else groups
        plan = ComparePlan(bits)
        w = word_bytes(bits) * n
        c = (Cost({('offline', H, S): message_bytes(g, plan.leaf_bits + 1 + plan.triple_bits)},
                  step='DReLU: dealt bits (leaves, MSB(X), AND triples)')
             + Cost({('offline', H, S): RING * n}, step='DReLU: dealt [r]')
             + Cost({('offline', C, S): w, ('online', S, C): w}, rounds=1,
                    step='DReLU: opening y = a + X'))
        for p, e in plan.levels:
            b = message_bytes(g, 2 * p + e)
            c = c + Cost({('online', C, S): b, ('online', S, C): b}, rounds=1,
                         step='DReLU: comparison tree openings')
        b = message_bytes(g, 1)
        c = c + Cost({('online', C, S): b, ('online', S, C): b}, rounds=1,
                     step='DReLU: masked bit e')
        if nf:
            c = c + Cost({('offline', H, S): RING * nf}, step='ReLU (fused): dealt [X r]')
        if ms:
            c = c + Cost({('offline', H, S): RING * ms}, step='product: dealt [A r]') + \
                Cost({('offline', C, S): RING * ms, ('online', S, C): RING * ms},
                     step='product: opening v - A')
        nr = nf + ms + (n if arith else 0)
        if nr:
            c = c + Cost({('online', C, S): RING * nr}, rounds=1, step='product: re-randomisation')
        return c

    @classmethod
    def drelu(cls, n, bits: int = 64, group=None) -> Cost:
        """Arithmetic shares of DReLU: the comparison, the opening of e and the
        re-randomisation. ``group``: elements per padding group (a channel's map;
        None: one)."""
        return cls.compare(n, bits, groups=uniform_groups(_n(n), group), arith=True)

    @classmethod
    def relu(cls, n, bits: int = 64, group=None) -> Cost:
        """At 64 bits (shift 0) the product is fused into the DReLU; below, x is
        a selected multiplicand of its own DReLU bit. ``group`` as in :meth:`drelu`."""
        groups = uniform_groups(_n(n), group)
        if bits < 64:
            return cls.compare(n, bits, selected=n, groups=groups)
        return cls.compare(n, bits, fused=n, groups=groups)

    @classmethod
    def share_convert(cls, n) -> Cost:
        """Masked shares to the helper; it returns x's 64 bit shares, delta and eta'."""
        n = _n(n)
        return (Cost({('online', C, H): RING * n, ('online', S, H): RING * n}, rounds=1,
                     step='ShareConvert: masked shares')
                + Cost({('online', H, S): zp_packed_bytes(n, 64)}, rounds=1,
                       step='ShareConvert: bit shares')
                + Cost({('online', H, S): 2 * RING * n}, rounds=1,
                       step='ShareConvert: delta, eta\'')
                + cls.private_compare(n, 65))

    @classmethod
    def compute_msb(cls, n) -> Cost:
        n = _n(n)
        return (Cost({('offline', H, S): zp_packed_bytes(n, 64)}, step='MSB: bit shares')
                + Cost({('online', C, S): RING * n, ('online', S, C): RING * n}, rounds=1,
                       step='MSB: opening r = 2a + X')
                + Cost({('online', H, S): RING * n}, rounds=1, step='MSB: share of g')
                + cls.private_compare(n, 65))

    @classmethod
    def drelu_securenn(cls, n) -> Cost:
        return cls.share_convert(n) + cls.compute_msb(n)

    @classmethod
    def block_relu(cls, block_sizes, n: int, height: int, width: int, bits: int = 64) -> Cost:
        """One DReLU per patch that also gates the active pixels; at 64 bits the
        (1, 1) channels' products are fused into it."""
        n_blk, m_act = block_counts(block_sizes, n, height, width)
        if n_blk == 0:
            return Cost()
        sizes = check_block_sizes(block_sizes)
        single = int(((sizes[:, 0] == 1) & (sizes[:, 1] == 1)).sum()) * height * width * n \
            if bits == 64 else 0
        counts = num_drelus(sizes, height, width)
        return cls.compare(n_blk, bits, fused=single, selected=m_act - single,
                           groups=np.tile(counts[counts > 0], n))

    @classmethod
    def max_pool2d(cls, out_numel, kernel_numel: int, bits: int = 64, group=None) -> Cost:
        """Tree of pairwise maxima: one batched ReLU per level (``group``: the
        output map's elements per channel)."""
        n, k = _n(out_numel), int(kernel_numel)
        total = Cost()
        while k > 1:
            total = total + cls.relu(n * (k // 2), bits, group)
            k = k // 2 + k % 2
        return total

    @staticmethod
    def reveal_to_client(n) -> Cost:
        return Cost({('online', S, C): RING * _n(n)}, rounds=1, step='output')

    @staticmethod
    def local() -> Cost:
        """add, concat, truncate, avg_pool2d, global_avg_pool: free."""
        return Cost()


class Reference:
    """The authors' accounting (REFERENCE-RUNTIME.md 4.10 / 7 / 8), all online."""

    @staticmethod
    def share_input(numel) -> Cost:
        """Free: the first convolution's E carries the input."""
        return Cost()

    @staticmethod
    def handshake() -> Cost:
        return Cost({('online', C, S): 32, ('online', S, C): 32, ('online', C, H): 32,
                     ('online', H, C): 32}, rounds=2)

    @staticmethod
    def conv2d(x_numel, w_numel, y_numel) -> Cost:
        x, w, y = _n(x_numel), _n(w_numel), _n(y_numel)
        return Cost({('online', C, S): RING * (x + w), ('online', S, C): RING * (x + w),
                     ('online', H, C): RING * y}, rounds=1)

    linear = conv2d

    @staticmethod
    def mult(n) -> Cost:
        n = _n(n)
        return Cost({('online', C, S): 16 * n, ('online', S, C): 16 * n,
                     ('online', H, C): 8 * n}, rounds=2)

    @staticmethod
    def private_compare(n, bits: int = 64) -> Cost:
        n = _n(n)
        return Cost({('online', C, H): bits * n, ('online', S, H): bits * n}, rounds=1)

    @classmethod
    def share_convert(cls, n, bits: int = 64) -> Cost:
        n = _n(n)
        return Cost({('online', C, H): 8 * n, ('online', S, H): 8 * n,
                     ('online', H, S): (bits + 8) * n, ('online', H, C): 8 * n},
                    rounds=3) + cls.private_compare(n, bits)

    @classmethod
    def msb(cls, n, bits: int = 64) -> Cost:
        n = _n(n)
        return Cost({('online', H, C): 8 * n, ('online', H, S): (bits + 16) * n,
                     ('online', C, S): 8 * n, ('online', S, C): 8 * n},
                    rounds=2) + cls.private_compare(n, bits) + cls.mult(n)

    @classmethod
    def drelu(cls, n, bits: int = 64, group=None) -> Cost:
        """6b + 112 bytes per element (496 at b = 64); ``group`` is unused (the
        authors' messages are per element)."""
        return cls.share_convert(n, bits) + cls.msb(n, bits)

    @classmethod
    def relu(cls, n, bits: int = 64, group=None) -> Cost:
        """6b + 152 bytes per element (536 at b = 64)."""
        return cls.drelu(n, bits) + cls.mult(n)

    @classmethod
    def block_relu(cls, block_sizes, n: int, height: int, width: int, bits: int = 64) -> Cost:
        """(6b + 128) N_blk + 24 M_act; identity channels cost nothing."""
        n_blk, m_act = block_counts(block_sizes, n, height, width)
        if n_blk == 0:
            return Cost()
        return cls.drelu(n_blk, bits) + Cost(
            {('online', C, S): 8 * (m_act + n_blk), ('online', S, C): 8 * (m_act + n_blk),
             ('online', H, C): 8 * m_act}, rounds=2)

    @classmethod
    def max_pool2d(cls, out_numel, kernel_numel: int = 9, bits: int = 64, group=None) -> Cost:
        """(K - 1) sequential DReLU + multiply steps per output: 8 (6b + 152) for 3x3."""
        k = int(kernel_numel) - 1
        c = cls.relu(_n(out_numel), bits) * k
        c.rounds *= k
        return c

    @staticmethod
    def reveal_to_client(n) -> Cost:
        return Cost({('online', S, C): 8 * _n(n)}, rounds=1)

    @staticmethod
    def local() -> Cost:
        return Cost()


ours = Ours()
reference = Reference()
PROTOCOLS = {'ours': ours, 'reference': reference}
