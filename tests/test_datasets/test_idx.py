"""IDX parsing on small generated files."""
import gzip
import os

import numpy as np
import pytest

from block_relu_plugin.datasets.idx import (IDXError, load_fashion_mnist, parse_idx, read_idx)


def idx_bytes(arr, code=0x08, dtype='u1'):
    arr = np.asarray(arr)
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, '>u4').tobytes()
    return header + arr.astype(dtype).tobytes()


def write(path, data, gz=True):
    if gz:
        with gzip.open(path, 'wb') as f:
            f.write(data)
    else:
        with open(path, 'wb') as f:
            f.write(data)
    return str(path)


def test_parse_uint8_and_big_endian():
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(imgs))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, imgs)
    # big-endian int32: 258 must not come out as 0x02010000
    vals = np.array([1, 258, -5], dtype=np.int32)
    out = parse_idx(idx_bytes(vals, 0x0C, '>i4'))
    np.testing.assert_array_equal(out, vals)
    assert out.dtype.isnative


@pytest.mark.parametrize('gz', [True, False])
def test_read_file_gz_and_raw(tmp_path, gz):
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    path = write(tmp_path / 'l.idx', idx_bytes(labels), gz)
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize('data, match', [
    (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], 'truncated'),
    (idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b'\x00', 'unexpected bytes'),
    (b'\x08\x03' + idx_bytes(np.zeros((2, 3, 3), np.uint8))[2:], 'bad magic'),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), 'unknown IDX type'),
    (bytes([0, 0, 8, 3, 0, 0, 0, 2]), 'truncated header'),
    (b'\x00\x00', 'too short'),
])
def test_malformed_name_the_file(tmp_path, data, match):
    path = write(tmp_path / 'bad-idx3-ubyte.gz', data)
    with pytest.raises(IDXError, match=match) as info:
        read_idx(path)
    assert 'bad-idx3-ubyte.gz' in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    good = gzip.compress(idx_bytes(np.ones((50, 28, 28), np.uint8) * 7))
    path = tmp_path / 'cut.gz'
    path.write_bytes(good[:len(good) // 2])
    with pytest.raises(IDXError, match='cut.gz'):
        read_idx(str(path))


def test_missing_folder_and_file_give_install_hint(tmp_path):
    with pytest.raises(IDXError, match='apt-get install -y dataset-fashion-mnist'):
        load_fashion_mnist(str(tmp_path / 'nowhere'), 'train')
    with pytest.raises(IDXError, match='apt-get install -y dataset-fashion-mnist'):
        load_fashion_mnist(str(tmp_path), 'test')


def make_split(root, images, labels, prefix='t10k'):
    write(os.path.join(root, f'{prefix}-images-idx3-ubyte.gz'), idx_bytes(images))
    write(os.path.join(root, f'{prefix}-labels-idx1-ubyte.gz'), idx_bytes(labels))


def test_load_split_and_consistency_checks(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1, 2], np.uint8)
    make_split(str(tmp_path), images, labels)
    got_i, got_l = load_fashion_mnist(str(tmp_path), 'test')
    np.testing.assert_array_equal(got_i, images)
    assert got_l.dtype == np.int64 and got_l.tolist() == labels.tolist()
    assert not got_i.flags.writeable  # shared cache must not be modified

    bad = tmp_path / 'count'
    bad.mkdir()
    make_split(str(bad), images, labels[:5])
    with pytest.raises(IDXError, match='6 images but .* 5 labels'):
        load_fashion_mnist(str(bad), 'test')

    bad = tmp_path / 'range'
    bad.mkdir()
    make_split(str(bad), images, np.array([0, 1, 2, 3, 4, 10], np.uint8))
    with pytest.raises(IDXError, match='labels outside'):
        load_fashion_mnist(str(bad), 'test')
