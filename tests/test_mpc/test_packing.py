"""Z_67 digits on the wire: dense packing, exact round trip, strict decoding.

PrivateCompare's vectors and the helper's bit shares cross as one fixed-size
record per element, 10 digits per 61-bit word
(:func:`block_relu_plugin.mpc.ring.pack_zp`); a receiver accepts only the
canonical encoding of exactly the digits it expects, and a peer's malformed
message is an error that names the message and the peer.
"""
import numpy as np
import pytest
import torch

import views as V
from block_relu_plugin.mpc import protocols as P
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


def test_a_peer_sending_garbage_is_named(monkeypatch):
    """A client whose PrivateCompare vectors are not Z_67 digits makes the helper
    fail, naming the message and the peer (never silent garbage)."""
    trio = V.Trio()
    for s in trio.sessions.values():
        for c in s.conns.values():
            c.timeout = 3  # the other parties wait for the helper's answer
    real = P.pack_zp

    def garbage(digits):
        out = real(digits)
        return torch.full_like(out, 0xFF) if digits.shape[1] == 64 else out
    monkeypatch.setattr(P, 'pack_zp', garbage)
    x = torch.arange(-8, 8).reshape(1, 1, 4, 4)
    try:
        with pytest.raises(RuntimeError, match='helper: .*PrivateCompare vector from '
                           '(client|server)'):
            trio.run(lambda s, x: V.passes(s, lambda s, x: P.drelu(s, V.share(s, x)), x),
                     V.fresh_keys(), {r: (x,) for r in V.ROLES})
    finally:
        trio.close()
