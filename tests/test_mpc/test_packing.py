"""Packed messages on the wire: dense packing, exact round trip, strict decoding.

SecureNN's PrivateCompare vectors and bit shares cross as one fixed-size
Z_67 record per element, 10 digits per 61-bit word
(:func:`block_relu_plugin.mpc.ring.pack_zp`); DReLU's bits eight to a byte
and its openings of y as ``bits``-bit words (:mod:`block_relu_plugin.mpc.bits`).
A receiver accepts only the canonical encoding of exactly what it expects,
and a peer's malformed message is an error that names the message and the peer.
"""
import numpy as np
import pytest
import torch

import views as V
from block_relu_plugin.mpc import protocols as P
from block_relu_plugin.mpc.bits import (ComparePlan, message_bytes, pack_rows, pack_words,
                                        unpack_rows, unpack_words)
from block_relu_plugin.mpc.ring import pack_zp, unpack_zp, zp_packed_bytes, zp_row_bytes


@pytest.mark.parametrize('cols', [1, 9, 10, 11, 15, 16, 63, 64, 65])
@pytest.mark.parametrize('rows', [0, 1, 7, 1000])
def test_round_trip_and_size(rows, cols):
    g = torch.Generator().manual_seed(rows * 100 + cols)
    d = torch.randint(0, 67, (rows, cols), dtype=torch.uint8, generator=g)
    if rows:
        d[0] = 66  # the largest value in every word
    packed = pack_zp(d)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == zp_packed_bytes(rows, cols) == rows * zp_row_bytes(cols)
    assert torch.equal(unpack_zp(packed, rows, cols, 'm'), d)


def test_record_sizes():
    """Whole 61-bit words of 10 digits, the rest in the fewest bits that hold them,
    rounded up to bytes once per record: 6.1 bits per digit against 8 for a byte
    each (log2 67 = 6.07 is the floor)."""
    assert (61 * 6 + 25 + 7) // 8 == zp_row_bytes(64) == 49    # 67^4 < 2^25
    assert (61 * 6 + 19 + 7) // 8 == zp_row_bytes(63) == 49    # 67^3 < 2^19
    assert (61 + 37 + 7) // 8 == zp_row_bytes(16) == 13        # 67^6 < 2^37
    assert (61 + 31 + 7) // 8 == zp_row_bytes(15) == 12        # 67^5 < 2^31
    assert zp_row_bytes(10) == 8 and zp_row_bytes(65) == 50 and zp_row_bytes(1) == 1


def test_malformed_messages_raise_naming_the_message():
    d = torch.randint(0, 67, (3, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    good = pack_zp(d)
    assert good.numel() == 3 * 13  # per record: a 61-bit word, a 37-bit word, 6 padding bits
    words = good.numpy().reshape(3, 13)
    big = words.copy()
    big[1, :8] = np.frombuffer((67 ** 10).to_bytes(8, 'little'), np.uint8)  # word >= 67^10
    big6 = words.copy()
    big6[2, 7] |= 0xE0    # bits 61..63 of the first word: the second word's low bits ...
    big6[2, 8:12] = 0xFF  # ... and up to its top bits: the 6-digit word reads 2^37 - 1,
    big6[2, 12] |= 0x03   # >= 67^6
    padding = words.copy()
    padding[0, 12] |= 0x80  # bit 103 of 104: after the 98 bits of the record
    bad = {
        'short': good[:-1],
        'long': torch.cat([good, torch.zeros(1, dtype=torch.uint8)]),
        'wrong dtype': good.to(torch.int64),
        'word >= 67^10': torch.from_numpy(big.reshape(-1)),
        'word >= 67^6': torch.from_numpy(big6.reshape(-1)),
        'padding bit': torch.from_numpy(padding.reshape(-1)),
    }
    for name, msg in bad.items():
        with pytest.raises(ValueError, match='PrivateCompare vector from client'):
            unpack_zp(msg, 3, 16, 'PrivateCompare vector from client')
    with pytest.raises(ValueError, match='expected 48 bytes'):
        unpack_zp(good, 3, 20, 'm')  # the receiver's own shape, not the sender's, counts


def _garbage_run(monkeypatch, name, bad, program):
    trio = V.Trio()
    for s in trio.sessions.values():
        for c in s.conns.values():
            c.timeout = 3  # the other parties wait for an answer
    monkeypatch.setattr(P, name, bad)
    x = torch.arange(-8, 8).reshape(1, 1, 4, 4)
    try:
        trio.run(lambda s, x: V.passes(s, lambda s, x: program(s, V.share(s, x)), x),
                 V.fresh_keys(), {r: (x,) for r in V.ROLES})
    finally:
        trio.close()


def test_a_peer_sending_garbage_is_named(monkeypatch):
    """A client whose PrivateCompare vectors are not Z_67 digits makes the helper
    fail, naming the message and the peer (never silent garbage)."""
    real = P.pack_zp

    def garbage(digits):
        out = real(digits)
        return torch.full_like(out, 0xFF) if digits.shape[1] == 65 else out
    with pytest.raises(RuntimeError, match='helper: .*PrivateCompare vector from '
                       '(client|server)'):
        _garbage_run(monkeypatch, 'pack_zp', garbage, P.drelu_securenn)


@pytest.mark.parametrize('bits', [64, 16])
def test_a_peer_sending_malformed_bits_is_named(monkeypatch, bits):
    """A tree opening of the wrong length makes the receiving party fail,
    naming the message and the peer."""
    real = P.pack_rows

    def garbage(b, groups=None):
        out = real(b, groups)
        return torch.cat([out, out[:1]]) if b.shape[1] > 1 else out
    with pytest.raises(RuntimeError, match='(client|server): .*DReLU (comparison opening|dealt '
                       'bits) from (client|server|helper)'):
        _garbage_run(monkeypatch, 'pack_rows', garbage, lambda s, x: P.drelu(s, x, bits))


@pytest.mark.parametrize('groups', [None, [0, 1, 7, 8, 9, 1001], [3] * 10, [16, 5]])
@pytest.mark.parametrize('k', [1, 3, 8, 30, 207])
def test_bits_round_trip_and_size(groups, k):
    n = 30 if groups == [3] * 10 else sum(groups or [1001])
    g = torch.Generator().manual_seed(n * k)
    b = torch.randint(0, 2, (n, k), dtype=torch.uint8, generator=g)
    packed = pack_rows(b, groups)
    expect = sum(-(-c * k // 8) for c in (groups or [n]))   # each group rounded up to bytes
    assert packed.dtype == torch.uint8
    assert packed.numel() == message_bytes(groups or [n], k) == expect
    assert torch.equal(unpack_rows(packed, groups, n, k, 'm'), b)


def test_malformed_bits_raise_naming_the_message():
    # 13 rows of 3 bits: 39 bits in 5 bytes, one padding bit at the end; in groups
    # of 5 and 8 rows, 15 bits in 2 bytes (one padding bit) and 24 bits in 3
    for groups, at in ((None, 4), ([5, 8], 1)):
        good = pack_rows(torch.ones(13, 3, dtype=torch.uint8), groups)
        padding = good.clone()
        padding[at] |= 1
        for msg in (good[:1], torch.cat([good, good[:1]]), good.to(torch.int64), padding):
            with pytest.raises(ValueError, match='tree opening from server'):
                unpack_rows(msg, groups, 13, 3, 'tree opening from server')
    with pytest.raises(ValueError, match='do not partition'):
        pack_rows(torch.ones(13, 3, dtype=torch.uint8), [5, 7])


@pytest.mark.parametrize('bits', [2, 15, 16, 17, 32, 63, 64])
def test_words_round_trip_and_size(bits):
    lo = 64 - bits
    g = torch.Generator().manual_seed(bits)
    x = (torch.randint(-2**62, 2**62, (50,), generator=g) >> lo) << lo
    x[:3] = torch.tensor([0, -1 << lo, (1 << 63) - (1 << lo) if bits < 64 else 2**63 - 1])
    packed = pack_words(x, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == 50 * -(-bits // 8)
    assert torch.equal(unpack_words(packed, 50, bits, 'm'), x)
    if bits % 8:
        high = packed.clone()
        high[-1] |= 0x80   # a bit above the word's bits
        with pytest.raises(ValueError, match='opening of y from client: .*above'):
            unpack_words(high, 50, bits, 'opening of y from client')
    with pytest.raises(ValueError, match='opening of y from client: expected'):
        unpack_words(packed[:-1], 50, bits, 'opening of y from client')


@pytest.mark.parametrize('bits', [2, 3, 4, 5, 16, 32, 64])
def test_compare_plan_leaves_against_direct_comparison(bits):
    """Every digit's (gt, eq) from XOR shares of the one-hot leaves equals the
    direct comparison of the digits of X and y; the tree plan merges the
    digits down to one node, EQ only where a later merge reads it."""
    plan = ComparePlan(bits)
    assert sum(plan.widths) == bits - 1 and max(plan.widths) <= 3
    g = torch.Generator().manual_seed(bits)
    x, y = (torch.randint(-2**62, 2**62, (400,), generator=g) for _ in range(2))
    y[:50] = x[:50]  # equal digits
    lo = 64 - bits
    x, y = (x >> lo) << lo, (y >> lo) << lo
    onehot = plan.one_hot(x)
    assert onehot.shape == (400, plan.leaf_bits) and (onehot.sum(1) == len(plan.widths)).all()
    s0 = torch.randint(0, 2, onehot.shape, dtype=torch.uint8, generator=g)
    gt0, eq0 = plan.leaves(s0, y)
    gt1, eq1 = plan.leaves(onehot ^ s0, y)
    for k, (dx, dy) in enumerate(zip(plan.digits(x), plan.digits(y))):
        assert torch.equal((gt0 ^ gt1)[:, k].long(), (dx > dy).long())
        assert torch.equal((eq0 ^ eq1)[:, k].long(), (dx == dy).long())
    nodes = len(plan.widths)
    for pairs, with_eq in plan.levels:
        assert pairs == nodes // 2 and with_eq == pairs - (nodes % 2 == 0)
        nodes = pairs + nodes % 2
    assert nodes == 1
