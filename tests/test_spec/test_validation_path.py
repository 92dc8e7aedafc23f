"""One validation path for specs: ``count_drelus.py`` rejects exactly what model building rejects.

The tool runs in-process (``runpy``) with a tiny mmpretrain config; model
building is :func:`build_model` with the spec, i.e. ``block_relu_cfg`` ->
``convert_block_relu`` -> :meth:`BlockReLUSpec.validate`.
"""
import json
import os
import runpy
import sys

import pytest

from block_relu_plugin.conversion import find_relu_sites
from block_relu_plugin.spec import BlockReLUSpec, SpecError, drelu_report
from block_relu_plugin.utils.config import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COUNT = os.path.join(REPO, 'tools', 'analysis', 'count_drelus.py')

CONFIG = """
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(type='BlockReLUImageClassifier', block_relu_cfg=dict({brc}),
             backbone=dict(stem_channels=4, base_channels=4),
             head=dict(num_classes=2, in_channels=32))
input_size = (16, 16)
"""


def write_config(tmp_path, name='tiny.py', **brc):
    path = tmp_path / name
    path.write_text(CONFIG.format(brc=', '.join(f'{k}={v!r}' for k, v in brc.items())))
    return str(path)


def count_drelus(argv, monkeypatch, capsys):
    """Run the tool as Python would; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, 'argv', ['count_drelus.py', *argv])
    code, message = 0, ''
    try:
        runpy.run_path(COUNT, run_name='__main__')
    except SystemExit as e:  # a message as the code: Python prints it and exits with 1
        code, message = (1, f'{e.code}\n') if isinstance(e.code, str) else (e.code, '')
    out, err = capsys.readouterr()
    return code, out, err + message


@pytest.fixture(scope='module')
def good_spec(tmp_path_factory):
    """A uniform 2x2 spec of the tiny model, as a dict (JSON) and its sites."""
    folder = tmp_path_factory.mktemp('spec')
    config = write_config(folder)
    sites = find_relu_sites(build_model(config), 16)
    spec = BlockReLUSpec.uniform(sites, (2, 2))
    spec.save(folder / 'good.json')
    return json.loads((folder / 'good.json').read_text()), sites


def _missing(d):
    name = list(d['sites'])[3]
    d['sites'].pop(name)
    return name


def _extra(d):
    d['sites']['backbone.layer9.0.relu1'] = [[1, 1]] * 4
    return 'backbone.layer9.0.relu1'


def _channels(d):
    name = list(d['sites'])[2]
    d['sites'][name] = d['sites'][name][:-1]
    return name


@pytest.mark.parametrize('edit', [_missing, _extra, _channels],
                         ids=['missing', 'extra', 'channels'])
def test_tool_and_model_building_reject_alike(edit, good_spec, tmp_path, monkeypatch, capsys):
    data, _ = good_spec
    data = json.loads(json.dumps(data))
    site = edit(data)
    spec_path = tmp_path / 'bad.json'
    spec_path.write_text(json.dumps(data))
    config = write_config(tmp_path)

    with pytest.raises(SpecError) as building:
        build_model(config, spec=str(spec_path))
    message = str(building.value)
    assert repr(site) in message and str(spec_path) in message

    code, out, err = count_drelus([config, '--spec', str(spec_path)], monkeypatch, capsys)
    assert code != 0 and out == ''
    assert err.strip() == f'count_drelus.py: error: {message}'


def test_partial_config_is_honoured_by_both(good_spec, tmp_path, monkeypatch, capsys):
    """``partial=True`` in the config: both accept a spec missing a site, which stays ReLU."""
    data, sites = good_spec
    data = json.loads(json.dumps(data))
    site = _missing(data)
    spec_path = tmp_path / 'partial.json'
    spec_path.write_text(json.dumps(data))
    config = write_config(tmp_path, partial=True)

    build_model(config, spec=str(spec_path))
    code, out, err = count_drelus([config, '--spec', str(spec_path), '--json'], monkeypatch,
                                  capsys)
    assert code == 0, err
    report = json.loads(out)
    by_name = {s.name: s for s in sites}
    expected = sum(int(s.drelus([[2, 2]] * s.channels).sum()) for s in sites if s.name != site)
    assert report['drelus'] == expected + by_name[site].relus
    assert report['relus'] == sum(s.relus for s in sites)


def test_counts_the_config_spec_the_model_applies(good_spec, tmp_path, monkeypatch, capsys):
    """Without --spec the count is of the config's own spec (what the built model computes)."""
    data, sites = good_spec
    spec_path = tmp_path / 'own.json'
    spec_path.write_text(json.dumps(data))
    config = write_config(tmp_path, spec=str(spec_path))
    code, out, err = count_drelus([config, '--json'], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)['drelus'] == sum(int(s.drelus([[2, 2]] * s.channels).sum())
                                            for s in sites)


def test_report_checks_as_model_building_does(good_spec):
    """``drelu_report`` is strict like ``block_relu_cfg`` unless told ``partial``."""
    data, sites = good_spec
    data = json.loads(json.dumps(data))
    site = _missing(data)
    spec = BlockReLUSpec.from_json(json.dumps(data))
    with pytest.raises(SpecError, match=repr(site)):
        drelu_report(sites, spec)
    assert drelu_report(sites, spec, partial=True)['relus'] == sum(s.relus for s in sites)
