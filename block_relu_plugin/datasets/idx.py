"""Read IDX files (the MNIST / Fashion-MNIST format) with numpy, no downloads.

IDX layout: two zero bytes, a type byte (0x08 = uint8, ...), a byte with the
number of dimensions ``ndim``, then ``ndim`` big-endian 4-byte sizes, then the
data in C order (big-endian for multi-byte types). Files may be gzipped.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``, which
installs the four gzipped files under :data:`FASHION_MNIST_ROOT`.
"""
import gzip
import os
import zlib
from typing import Dict, Tuple

import numpy as np

FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist/'
INSTALL_HINT = ('install the Debian package: `apt-get update && apt-get install -y '
                'dataset-fashion-mnist` (as root; tools/setup_env.sh does it), which '
                f'puts the gzipped IDX files in {FASHION_MNIST_ROOT}')

FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot')

SPLIT_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}

# IDX type byte -> numpy dtype (big-endian where it matters).
IDX_DTYPES = {
    0x08: np.dtype('u1'),
    0x09: np.dtype('i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


class IDXError(ValueError):
    """A malformed, truncated or missing IDX file (the message names the file)."""


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise IDXError(f'IDX file not found: {path}')
    try:
        with open(path, 'rb') as f:
            head = f.read(2)
        if head == b'\x1f\x8b':  # gzip magic
            with gzip.open(path, 'rb') as f:
                return f.read()
        with open(path, 'rb') as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as e:
        raise IDXError(f'{path}: cannot decompress ({type(e).__name__}: {e}); the file is '
                       'truncated or corrupt') from e


def parse_idx(data: bytes, name: str = '<bytes>') -> np.ndarray:
    """Parse the bytes of an IDX file into an array (native byte order).

    Raises:
        IDXError: naming ``name`` when the header is wrong or the data is
            shorter or longer than the header says.
    """
    if len(data) < 4:
        raise IDXError(f'{name}: {len(data)} bytes, too short for an IDX header')
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f'{name}: bad magic {data[:4].hex()} (an IDX file starts with two '
                       'zero bytes, a type byte and the number of dimensions)')
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise IDXError(f'{name}: unknown IDX type byte 0x{code:02x} '
                       f'(known: {", ".join(f"0x{c:02x}" for c in IDX_DTYPES)})')
    if ndim == 0:
        raise IDXError(f'{name}: header says 0 dimensions')
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f'{name}: truncated header ({len(data)} bytes, {ndim} dimensions '
                       f'need {header})')
    shape = tuple(int(s) for s in np.frombuffer(data, dtype='>u4', count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise IDXError(f'{name}: truncated: header says shape {shape} ({expected} data '
                       f'bytes) but only {got} follow')
    if got > expected:
        raise IDXError(f'{name}: {got - expected} unexpected bytes after the data of '
                       f'shape {shape}')
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder('='), copy=True)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file, gzipped or not (detected from its first bytes)."""
    return parse_idx(_read_bytes(path), path)


def _find(root: str, base: str) -> str:
    for name in (base + '.gz', base):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise IDXError(f'Fashion-MNIST file {os.path.join(root, base)}.gz not found; '
                   f'{INSTALL_HINT}')


_CACHE: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = {}


def load_fashion_mnist(root: str = FASHION_MNIST_ROOT,
                       split: str = 'train') -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) int64`` of one split.

    Arrays are cached per (files, modification time) and returned read-only,
    so the train/val/test datasets of one process share one copy.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(root):
        raise IDXError(f'Fashion-MNIST folder {root} does not exist; {INSTALL_HINT}')
    img_path, lbl_path = (_find(root, base) for base in SPLIT_FILES[split])
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in (img_path, lbl_path))
    if key not in _CACHE:
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise IDXError(f'{img_path}: expected uint8 images (N, H, W), got '
                           f'{images.dtype} {images.shape}')
        if labels.ndim != 1:
            raise IDXError(f'{lbl_path}: expected labels (N,), got shape {labels.shape}')
        if len(images) != len(labels):
            raise IDXError(f'{img_path} has {len(images)} images but {lbl_path} has '
                           f'{len(labels)} labels')
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
            raise IDXError(f'{lbl_path}: labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}')
        images.setflags(write=False)
        labels.setflags(write=False)
        _CACHE[key] = (images, labels)
    return _CACHE[key]
