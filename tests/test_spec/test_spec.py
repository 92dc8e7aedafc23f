import json

import numpy as np
import pytest

from block_relu_plugin.conversion import ReLUSite
from block_relu_plugin.spec import BlockReLUSpec, SpecError, drelu_report

SITES = [ReLUSite('backbone.relu', 4, 8, 8), ReLUSite('backbone.layer1.0.relu1', 2, 4, 6)]


def valid_spec():
    return BlockReLUSpec({'backbone.relu': [[1, 1], [2, 2], [0, 1], [1, 0]],
                          'backbone.layer1.0.relu1': [[3, 3], [4, 6]]},
                         metadata=dict(model='toy', input_size=[8, 8]))


def test_round_trip_and_counts(tmp_path):
    spec = valid_spec()
    spec.describe(SITES)
    path = tmp_path / 'spec.json'
    spec.save(path)
    loaded = BlockReLUSpec.load(path)
    assert loaded == spec
    assert list(loaded.sites) == ['backbone.relu', 'backbone.layer1.0.relu1']
    assert loaded.metadata['drelus'] == 64 + 16 + 0 + 0 + 4 + 1
    assert loaded.metadata['relus'] == 4 * 64 + 2 * 24
    report = drelu_report(SITES, loaded)
    assert report['drelus'] == 85 and report['relus'] == 304
    # One site per line: large specs stay readable and diffable.
    assert len(path.read_text().splitlines()) == 3 + len(SITES) + 1


def test_all_relu_and_uniform():
    spec = BlockReLUSpec.all_relu(SITES)
    assert spec.metadata['drelus'] == spec.metadata['relus'] == 304
    uni = BlockReLUSpec.uniform(SITES, (2, 3))
    assert uni.metadata['drelus'] == 4 * 4 * 3 + 2 * 2 * 2
    assert all((s == [2, 3]).all() for s in uni.sites.values())


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['sites'].update({'backbone.relu9': [[1, 1]] * 4}), "backbone.relu9"),
    (lambda d: d['sites'].pop('backbone.layer1.0.relu1'), "backbone.layer1.0.relu1"),
    (lambda d: d['sites'].update({'backbone.relu': [[1, 1]] * 3}), "3 channels"),
])
def test_model_mismatch_names_site(edit, message):
    data = json.loads(valid_spec().to_json())
    edit(data)
    spec = BlockReLUSpec.from_json(json.dumps(data))
    with pytest.raises(SpecError, match=message):
        spec.validate(SITES)


@pytest.mark.parametrize('sizes, message', [
    ([[1, 1], [-2, 2], [1, 1], [1, 1]], 'non-negative'),
    ([[1, 1], [1.5, 2], [1, 1], [1, 1]], 'integers'),
    ([[1, 1], [0, 0], [1, 1], [1, 1]], r'\(0, 0\)'),
    ([[1, 1, 1]], r'shape \(C, 2\)'),
    ('2x2', r'shape \(C, 2\)'),
    ([[1, 1], [2]], ''),
    ([[True, False]], 'integers'),
])
def test_bad_sizes_name_site(sizes, message):
    data = json.loads(valid_spec().to_json())
    data['sites']['backbone.relu'] = sizes
    with pytest.raises(SpecError, match="backbone.relu.*" + message):
        BlockReLUSpec.from_json(json.dumps(data))


@pytest.mark.parametrize('text, message', [
    ('{not json', 'not a JSON spec'),
    ('[1, 2]', 'not a block_relu_spec'),
    ('{"format": "block_relu_spec", "version": 99, "sites": {}}', 'version 99'),
    ('{"format": "block_relu_spec", "version": 1, "sites": [1]}', 'JSON objects'),
])
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / 'bad.json'
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        BlockReLUSpec.load(path)


def test_missing_file_and_binary(tmp_path):
    with pytest.raises(SpecError, match='cannot read'):
        BlockReLUSpec.load(tmp_path / 'absent.json')
    path = tmp_path / 'pickle.json'
    path.write_bytes(b'\x80\x04\x95\x00\xff')
    with pytest.raises(SpecError):
        BlockReLUSpec.load(path)


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / 'spec.json'
    valid_spec().save(path)
    before = path.read_bytes()
    broken = valid_spec()
    broken.metadata['not_json'] = object()
    with pytest.raises(TypeError):
        broken.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['spec.json']
