"""Every config under configs/ builds, and trains one iteration (or tests, for the
format-only submission configs) through mmengine's Runner on generated data.

The datasets of the paper tasks are not on this machine: each config keeps its
model, optimizer and schedule, and its dataset is swapped for generated images
(and label maps) in the standard folder layouts. Segmentation runs at 64x64
instead of 512x512 crops, and a budget config gets a uniform spec for its own
model instead of a solved one (budget solving is tested in test_budget), both
to keep CI in its time budget. A distillation config's teacher checkpoint is the plain
network's initial weights, saved for the test.
"""
import glob
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from block_relu_plugin.spec import BlockReLUSpec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', 'mm*', '*', '*.py')) +
                 glob.glob(os.path.join(REPO, 'configs', 'demo', '*.py')))


def _make_cls_data(root, size):
    rng = np.random.default_rng(0)
    for label in ('a', 'b'):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(os.path.join(root, label, '0.png'))


def _make_seg_data(root, size, num_classes):
    rng = np.random.default_rng(0)
    for sub in ('img', 'ann'):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            os.path.join(root, 'img', f'{i}.png'))
        Image.fromarray(rng.integers(0, num_classes, (size, size), dtype=np.uint8)).save(
            os.path.join(root, 'ann', f'{i}.png'))


def _cls_pipeline(pipeline):
    steps = [dict(s) for s in pipeline]
    if not steps or steps[0]['type'] != 'LoadImageFromFile':
        steps.insert(0, dict(type='LoadImageFromFile'))
    return steps


def _loader(dataset, batch_size=2):
    return dict(batch_size=batch_size, num_workers=0, persistent_workers=False, dataset=dataset,
                sampler=dict(type='DefaultSampler', shuffle=False))


def prepare(path, tmp_path):
    """The config with generated data and no downloads; returns (cfg, is_submission)."""
    cfg = Config.fromfile(path)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = None
    cfg.resume = False
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000)
    cfg.visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    if cfg.model.get('pretrained'):
        cfg.model.pretrained = None
    if cfg.model.backbone.get('init_cfg'):
        cfg.model.backbone.init_cfg = None
    submission = bool(cfg.get('test_evaluator', {}).get('format_only'))
    data = str(tmp_path / 'data')
    if cfg.default_scope == 'mmpretrain':
        size = 32 if 'cifar' in path or 'fashion' in path else 224
        _make_cls_data(data, size)
        ds_train = dict(type='CustomDataset', data_root=data,
                        pipeline=_cls_pipeline(cfg.train_dataloader.dataset.pipeline))
        ds_test = dict(type='CustomDataset', data_root=data,
                       pipeline=_cls_pipeline(cfg.test_dataloader.dataset.pipeline))
        cfg.model.head.num_classes = 2
        cfg.model.data_preprocessor = dict(cfg.model.get('data_preprocessor') or {}, num_classes=2)
        cfg.data_preprocessor = dict(cfg.get('data_preprocessor') or {}, num_classes=2)
        cfg.train_dataloader = _loader(ds_train)
        cfg.val_dataloader = cfg.test_dataloader = _loader(ds_test)
        cfg.val_evaluator = cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
        cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1000)
    else:
        size, num_classes = 64, cfg.model.decode_head.num_classes
        _make_seg_data(data, size, num_classes)
        ds = dict(type='BaseSegDataset', data_root=data, img_suffix='.png',
                  seg_map_suffix='.png', data_prefix=dict(img_path='img', seg_map_path='ann'),
                  metainfo=dict(classes=tuple(f'c{i}' for i in range(num_classes))),
                  pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                            dict(type='PackSegInputs')])
        cfg.model.data_preprocessor.size = (size, size)
        cfg.train_dataloader = _loader(ds)
        cfg.val_dataloader = cfg.test_dataloader = _loader(ds, 1)
        evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
        if submission:
            evaluator.update(format_only=True, output_dir=str(tmp_path / 'format_results'))
        cfg.val_evaluator = cfg.test_evaluator = evaluator
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1000)
    brc = cfg.model.get('block_relu_cfg') or {}
    distill = cfg.model.get('distill_cfg')
    if brc.get('budget') is not None or distill:
        from block_relu_plugin.conversion import find_relu_sites
        from block_relu_plugin.utils.config import build_model
        plain = Config(cfg.to_dict())
        plain.model.pop('distill_cfg', None)
        plain.model.block_relu_cfg = {
            k: v for k, v in brc.items()
            if k not in ('budget', 'distortion', 'solver', 'candidates')}
        plain_model = build_model(plain)
        if brc.get('budget') is not None:
            sites = find_relu_sites(plain_model, size)
            spec = str(tmp_path / 'spec.json')
            BlockReLUSpec.uniform(sites, (2, 2)).save(spec)
            cfg.model.block_relu_cfg = dict(plain.model.block_relu_cfg, spec=spec)
        if distill:  # the all-ReLU teacher: this plain network's initial weights
            teacher = str(tmp_path / 'teacher.pth')
            torch.save({'state_dict': plain_model.state_dict()}, teacher)
            cfg.model.distill_cfg = dict(distill, teacher_checkpoint=teacher)
    return cfg, submission


def test_configs_found():
    assert len(CONFIGS) >= 30


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_runs_one_iteration(path, tmp_path):
    from mmengine.runner import Runner
    cfg, submission = prepare(path, tmp_path)
    runner = Runner.from_cfg(cfg)
    if submission:
        runner.test()
        assert glob.glob(str(tmp_path / 'format_results' / '*.png'))
    else:
        runner.train()
        assert runner.iter == 1
        if cfg.model.get('distill_cfg'):
            assert 'train/loss_distill' in runner.message_hub.log_scalars
