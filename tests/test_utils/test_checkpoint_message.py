"""A corrupt or untrusted checkpoint gets the plugin's one-line message, never torch's
advice to load with ``weights_only=False``.

The files are loaded through the paths the tools use: mmengine's checkpoint
loader (``tools/test.py``, ``load_from``, ``--resume``, the distillation
teacher) and :func:`build_model` (secure inference, ``mpc_party.py``).
"""
import os
import re

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

from block_relu_plugin.utils.checkpoint import CheckpointError, load_checkpoint_file
from block_relu_plugin.utils.config import build_model

CONFIG = """
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(backbone=dict(stem_channels=4, base_channels=4),
             head=dict(num_classes=2, in_channels=32))
"""

REFUSED = ('it is refused because loading it could run code; '
           'if you trust its source, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1')


class Gadget:
    """A custom class: unpickling it means importing and running this module's code."""

    def __init__(self):
        self.value = 7


def _loaders(tmp_path):
    """Each plugin load path, as a function of the checkpoint path."""
    config = tmp_path / 'tiny.py'
    config.write_text(CONFIG)
    return {
        'mmengine': lambda p: CheckpointLoader.load_checkpoint(p, map_location='cpu'),
        'build_model': lambda p: build_model(str(config), checkpoint=p),
    }


def _assert_plugin_message(message: str):
    assert '\n' not in message
    assert 'weights_only' not in message  # torch's advice is not passed on


def _garbage(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.zeros(64)}}, good)
    data = good.read_bytes()
    files = {'random.pth': np.random.default_rng(0).bytes(4000),
             'truncated.pth': data[:len(data) // 2],
             'text.pth': b'this is a README, not a checkpoint\n',
             'empty.pth': b''}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return [str(tmp_path / name) for name in files]


@pytest.mark.parametrize('loader', ['mmengine', 'build_model'])
def test_not_a_checkpoint(tmp_path, loader):
    load = _loaders(tmp_path)[loader]
    for path in _garbage(tmp_path):
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        _assert_plugin_message(message)
        assert re.fullmatch(re.escape(f'{path!r} is not a readable PyTorch checkpoint (')
                            + r'.+' + re.escape('): re-download or re-train it'), message), \
            message
    assert 'empty file' in str(pytest.raises(CheckpointError, load_checkpoint_file,
                                             str(tmp_path / 'empty.pth')).value)


@pytest.mark.parametrize('loader', ['mmengine', 'build_model'])
def test_unallowed_global_is_refused_by_name(tmp_path, loader):
    load = _loaders(tmp_path)[loader]
    zipped, legacy = str(tmp_path / 'gadget.pth'), str(tmp_path / 'gadget_legacy.pth')
    torch.save({'state_dict': {}, 'meta': Gadget()}, zipped)
    torch.save({'state_dict': {}, 'meta': Gadget()}, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        _assert_plugin_message(message)
        assert f'{Gadget.__module__}.Gadget' in message and repr(path) in message
        assert message.endswith(REFUSED)


def test_blocked_module_global_is_refused_by_name(tmp_path):
    path = str(tmp_path / 'os.pth')
    torch.save({'state_dict': {}, 'hook': os.system}, path)  # a reference only: nothing runs
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    name = f'{os.system.__module__}.system'  # posix.system on Linux
    assert repr(name) in str(info.value) and str(info.value).endswith(REFUSED)


def test_protocol_the_restricted_unpickler_cannot_read(tmp_path):
    path = str(tmp_path / 'p4.pth')
    torch.save({'state_dict': {'w': torch.zeros(2)}}, path, pickle_protocol=4)
    with pytest.warns(UserWarning, match='pickle protocol 4'):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint_file(path)
    assert 'restricted unpickler does not read' in str(info.value)
    assert str(info.value).endswith(REFUSED)


def test_the_trust_hint_works_and_good_files_load(tmp_path, monkeypatch):
    path = str(tmp_path / 'gadget.pth')
    torch.save({'state_dict': {}, 'meta': Gadget()}, path)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.warns(UserWarning, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        assert load_checkpoint_file(path)['meta'].value == 7
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    # runner-style content (numpy arrays and scalars) is on the allowlist
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': {'w': torch.ones(3)}, 'meta': {'arr': np.arange(3),
                                                            'best': np.float64(0.5)}}, good)
    loaded = CheckpointLoader.load_checkpoint(good, map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(3))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))
