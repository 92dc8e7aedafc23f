"""Pseudorandom streams: AES-256-CTR keystreams turned into ring elements, bits,
Z_p elements and permutations.

A :class:`PRF` holds one 32-byte key (a pairwise key agreed over TLS at session
start, or a party's own key from ``os.urandom``). ``prf.stream(run, op, tag)``
opens an independent keystream whose 128-bit initial counter block encodes
``(run, op, tag)``: two parties holding the same key derive the same values
for the same protocol step without any shared state or call-order coupling,
and a step's offline and online passes see the same values. There are no
seeds: keys come only from ``os.urandom``.

The low 32 bits of the counter block count AES blocks within a stream, so a
stream yields at most 2^32 blocks (64 GiB) and refuses to go further (the
counter would carry into ``tag`` and repeat the keystream of another step);
``run``, ``op`` and ``tag`` must each fit in 32 bits (masking them would map
distinct steps to one stream), and ``run`` 2^32 - 1 is reserved for
per-session streams.
"""
import os
import struct

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from torch import Tensor

KEY_BYTES = 32
P = 67  # the small prime field of PrivateCompare
_SESSION_RUN = 0xFFFFFFFF  # run id reserved for per-session material (weight masks)
_U32 = 1 << 32
BLOCK = 16  # AES block bytes


def new_key() -> bytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


class Stream:
    """One AES-256-CTR keystream; every draw consumes fresh keystream bytes."""

    def __init__(self, key: bytes, nonce: bytes):
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        # bytes left before the 32-bit block counter (the nonce's last word) wraps
        self.left = (_U32 - int.from_bytes(nonce[-4:], 'big')) * BLOCK

    def bytes(self, n: int) -> np.ndarray:
        """``n`` keystream bytes as a uint8 array."""
        if n < 0 or n > self.left:
            raise OverflowError(f'a PRF stream gives at most 2^32 blocks: {n} more bytes '
                                f'requested, {self.left} left; split the step into more ops')
        self.left -= n
        return np.frombuffer(self._enc.update(bytes(n)), dtype=np.uint8)

    def ring(self, shape) -> Tensor:
        """Uniform elements of Z_{2^64} (int64) of the given shape."""
        n = int(np.prod(shape, dtype=np.int64))
        return torch.from_numpy(self.bytes(8 * n).view(np.int64).copy()).reshape(tuple(shape))

    def bits(self, shape, dtype=torch.int64) -> Tensor:
        """Uniform bits as 0/1 of ``dtype`` (int64 or uint8)."""
        n = int(np.prod(shape, dtype=np.int64))
        b = np.unpackbits(self.bytes((n + 7) // 8))[:n]
        return torch.from_numpy(b if dtype == torch.uint8 else b.astype(np.int64)
                                ).to(dtype).reshape(tuple(shape))

    def _mod(self, n: int, m: int) -> np.ndarray:
        """``n`` uniform values in [0, m) for m <= 256, by rejection of bytes."""
        limit = 256 - 256 % m
        out = np.empty(n, dtype=np.uint8)
        filled = 0
        while filled < n:
            need = n - filled
            cand = self.bytes(need + need // 4 + 64)
            cand = cand[cand < limit][:need]
            out[filled:filled + cand.size] = cand % m
            filled += cand.size
        return out

    def zp(self, shape, p: int = P) -> Tensor:
        """Uniform elements of Z_p (uint8), unbiased (rejection sampling)."""
        n = int(np.prod(shape, dtype=np.int64))
        return torch.from_numpy(self._mod(n, p)).reshape(tuple(shape))

    def zp_nonzero(self, shape, p: int = P) -> Tensor:
        """Uniform elements of Z_p \\ {0} (uint8), unbiased."""
        n = int(np.prod(shape, dtype=np.int64))
        return torch.from_numpy(self._mod(n, p - 1) + 1).reshape(tuple(shape))

    def permutations(self, rows: int, width: int) -> Tensor:
        """An independent uniformly random permutation of ``width`` items per row.

        Argsort of 64-bit random keys per row (ties have probability about
        ``width^2 / 2^65`` and are harmless). Returns int64 ``(rows, width)``.
        """
        keys = self.ring((rows, width))
        return torch.argsort(keys, dim=1)


class PRF:
    """A keyed family of :class:`Stream` s indexed by ``(run, op, tag)``."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f'PRF keys are {KEY_BYTES} bytes, got {len(key)}')
        self.key = bytes(key)

    def stream(self, run: int, op: int, tag: int) -> Stream:
        """The stream of protocol step ``(run, op, tag)``; each in [0, 2^32), run < 2^32 - 1."""
        if not 0 <= run < _SESSION_RUN:
            raise ValueError(f'PRF run {run} is outside [0, 2^32 - 1) (2^32 - 1 is the '
                             'session streams\' run)')
        return self._stream(run, op, tag)

    def session_stream(self, key_id: int, tag: int) -> Stream:
        """A stream fixed for the whole session (e.g. the server's weight masks)."""
        return self._stream(_SESSION_RUN, key_id, tag)

    def _stream(self, run: int, op: int, tag: int) -> Stream:
        for name, v in (('op', op), ('tag', tag)):
            if not 0 <= v < _U32:
                raise ValueError(f'PRF {name} {v} does not fit in 32 bits')
        # counter block: run | op | tag | 32-bit block counter (2^32 blocks = 64 GiB)
        return Stream(self.key, struct.pack('>IIII', run, op, tag, 0))
