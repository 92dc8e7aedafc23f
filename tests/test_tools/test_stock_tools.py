"""Converted configs through the codebases' own tools and the plugin's tools.

Real subprocesses, real runner, real checkpoints; the data is generated.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from block_relu_plugin.spec import BlockReLUSpec
from block_relu_plugin.utils.stock_tools import stock_tool_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLS_CONFIG = """
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(type='BlockReLUImageClassifier', block_relu_cfg=dict(spec={spec!r}),
             backbone=dict(base_channels=16), head=dict(num_classes=2, in_channels=128))
data_preprocessor = dict(num_classes=2, mean=[128.0] * 3, std=[64.0] * 3, to_rgb=False)
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(type='CustomDataset', data_root={root!r}, pipeline=pipeline)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dataset,
                        sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dataset,
                      sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(by_epoch=False, max_iters=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
"""

SEG_CONFIG = """
_base_ = ['mmseg::_base_/models/deeplabv3_r50-d8.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (64, 64)
model = dict(
    type='BlockReLUEncoderDecoder', block_relu_cfg=dict(spec={spec!r}, maxpool_to_avgpool=True),
    pretrained=None, data_preprocessor=dict(size=crop_size),
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=512, channels=32, num_classes=3, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=16, num_classes=3, norm_cfg=norm_cfg))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
dataset = dict(type='BaseSegDataset', data_root={root!r}, img_suffix='.png',
               seg_map_suffix='.png', metainfo=dict(classes=('bg', 'a', 'b')),
               data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=pipeline)
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dataset,
                        sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dataset,
                      sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
"""


def make_cls_data(root):
    rng = np.random.default_rng(0)
    for label in ('a', 'b'):
        os.makedirs(os.path.join(root, label))
        for i in range(4):
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(os.path.join(root, label, f'{i}.png'))


def make_seg_data(root):
    rng = np.random.default_rng(0)
    for sub in ('img', 'ann'):
        os.makedirs(os.path.join(root, sub))
    for i in range(2):
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        ann = rng.integers(0, 3, (64, 64), dtype=np.uint8)
        Image.fromarray(img).save(os.path.join(root, 'img', f'{i}.png'))
        Image.fromarray(ann).save(os.path.join(root, 'ann', f'{i}.png'))


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='2')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)  # the plugin must not need it
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def write_config(tmp_path, kind, spec_size):
    """Config + data + a non-trivial uniform spec for the config's model."""
    from block_relu_plugin.conversion import find_relu_sites
    from block_relu_plugin.utils.config import build_model, load_config
    root = str(tmp_path / 'data')
    (make_cls_data if kind == 'cls' else make_seg_data)(root)
    spec_path = str(tmp_path / 'spec.json')
    text = (CLS_CONFIG if kind == 'cls' else SEG_CONFIG)
    config = tmp_path / 'config.py'
    # Sites come from the config's own model without a spec.
    config.write_text(text.format(spec=None, root=root))
    sites = find_relu_sites(build_model(load_config(str(config))), spec_size)
    BlockReLUSpec.uniform(sites, (2, 2)).save(spec_path)
    config.write_text(text.format(spec=spec_path, root=root))
    # What the tools build from this config is the converted network.
    from block_relu_plugin import BlockReLU
    acts = [m for m in build_model(load_config(str(config))).modules()
            if isinstance(m, BlockReLU)]
    assert len(acts) == len(sites) and all((a.block_sizes == 2).all() for a in acts)
    return str(config)


@pytest.mark.parametrize('kind, scope, size', [('cls', 'mmpretrain', 32), ('seg', 'mmseg', 64)])
def test_stock_tools_train_resume_test(tmp_path, kind, scope, size):
    config = write_config(tmp_path, kind, size)
    work = str(tmp_path / 'work')
    run([stock_tool_path(scope, 'train.py'), config, '--work-dir', work], tmp_path)
    ckpt = os.path.join(work, 'iter_1.pth')
    assert os.path.isfile(ckpt)
    # --resume continues from the runner checkpoint (message hub, optimizer).
    run([stock_tool_path(scope, 'train.py'), config, '--work-dir', work, '--resume',
         '--cfg-options', 'train_cfg.max_iters=2'], tmp_path)
    assert os.path.isfile(os.path.join(work, 'iter_2.pth'))
    out = run([stock_tool_path(scope, 'test.py'), config, os.path.join(work, 'iter_2.pth'),
               '--work-dir', work], tmp_path)
    assert ('accuracy/top1' if kind == 'cls' else 'mIoU') in out


@pytest.mark.parametrize('kind, size', [('cls', 32), ('seg', 64)])
def test_plugin_tools_train_test(tmp_path, kind, size):
    config = write_config(tmp_path, kind, size)
    work = str(tmp_path / 'work')
    run([os.path.join(REPO, 'tools', 'train.py'), config, '--work-dir', work], tmp_path)
    out = run([os.path.join(REPO, 'tools', 'test.py'), config,
               os.path.join(work, 'iter_1.pth'), '--work-dir', work], tmp_path)
    assert ('accuracy/top1' if kind == 'cls' else 'mIoU') in out
