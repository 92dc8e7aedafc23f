"""The inputs the plugin's tools feed a network equal the stock test path's.

The stock path is mmengine's Runner (what the codebases' ``tools/test.py``
runs): the tensor its test loop feeds the backbone is captured with a hook and
compared with :func:`load_test_inputs` (``tools/secure_infer.py``,
``tools/mpc_party.py``, the main job's secure stage) and
:func:`load_samples` (``tools/extract_distortion.py``, the main job's
distortion stage) on the same dataset samples: normalisation, colour order
and padding included.
"""
import copy
import os
import uuid

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from block_relu_plugin.budget.distortion import build_plain_model, load_samples
from block_relu_plugin.mpc.infer import load_test_inputs
from block_relu_plugin.utils.config import build_model, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FASHION = os.path.join(REPO, 'configs/demo/resnet18-w16_fashion-mnist.py')
MOSAIC = os.path.join(REPO, 'configs/demo/deeplabv3_mnv2-relu_fashion-mosaic.py')


def stock_backbone_inputs(cfg: Config, indices, work_dir) -> torch.Tensor:
    """What ``Runner.test()`` feeds the backbone for test images ``indices`` (in order)."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.test_dataloader.dataset.indices = list(indices)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'stock_{uuid.uuid4().hex[:8]}'
    cfg.load_from = None
    runner = Runner.from_cfg(cfg)
    seen = []
    runner.model.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    runner.test()
    return torch.cat(seen)


def test_fashion_mnist_demo_inputs_equal_stock(tmp_path):
    cfg = load_config(FASHION)
    stock = stock_backbone_inputs(cfg, range(6), tmp_path)
    # the normalisation is the config's top-level data_preprocessor (mean 72.9, std 90.0)
    assert stock.min() < -0.5 and stock.max() < 3.0
    ours, labels = load_test_inputs(cfg, build_model(cfg), 6)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)
    assert len(labels) == 6
    # mmpretrain's own init_model prepares the same tensor
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, init_default_scope
    from mmpretrain.apis import init_model
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    theirs = init_model(copy.deepcopy(cfg)).data_preprocessor(
        pseudo_collate([dataset[i] for i in range(6)]), False)['inputs']
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


COLOUR_CLS = """
_base_ = ['mmpretrain::_base_/models/resnet18_cifar.py', 'mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(backbone=dict(stem_channels=4, base_channels=4),
             head=dict(num_classes=2, in_channels=32))
# top level, as mmpretrain's dataset bases put it: per-channel mean / std, BGR -> RGB,
# and padding to a multiple of 16
data_preprocessor = dict(num_classes=2, mean=[10.0, 120.0, 230.0], std=[20.0, 40.0, 80.0],
                         to_rgb=True, pad_size_divisor=16, pad_value=7)
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='CustomDataset', data_root={root!r},
                                    pipeline=[dict(type='LoadImageFromFile'),
                                              dict(type='PackInputs')]))
test_evaluator = dict(type='Accuracy', topk=(1, ))
test_cfg = dict()
"""


def _colour_images(root, size, n=4):
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f'class{i % 2}'
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size + (3, ), dtype=np.uint8)).save(
            folder / f'{i}.png')


def test_colour_padded_classification_inputs_equal_stock(tmp_path):
    _colour_images(tmp_path / 'data', (20, 27))
    path = tmp_path / 'cfg.py'
    path.write_text(COLOUR_CLS.format(root=str(tmp_path / 'data')))
    cfg = load_config(str(path))
    stock = stock_backbone_inputs(cfg, range(4), tmp_path / 'work')
    assert tuple(stock.shape) == (4, 3, 32, 32)  # padded from 20x27
    ours, labels = load_test_inputs(cfg, build_model(cfg), 4)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)
    assert labels == [0, 0, 1, 1]  # CustomDataset: files sorted by class folder


def test_mosaic_segmentation_inputs_equal_stock(tmp_path):
    cfg = load_config(MOSAIC)
    cfg.model.backbone.init_cfg = None  # no pretrained file needed: inputs only
    stock = stock_backbone_inputs(cfg, range(3), tmp_path)
    assert stock.min() < -0.4  # normalised (mean 34.6, std 72.0)
    ours, labels = load_test_inputs(cfg, build_model(cfg), 3)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)
    assert [tuple(t.shape) for t in labels] == [(64, 64)] * 3


COLOUR_SEG = """
_base_ = [{base!r}]
model = dict(backbone=dict(init_cfg=None),
             data_preprocessor=dict(mean=[10.0, 120.0, 230.0], std=[20.0, 40.0, 80.0],
                                    bgr_to_rgb=True{test_cfg}))
test_dataloader = dict(batch_size=2, dataset=dict(
    _delete_=True, type='BaseSegDataset', data_root={root!r},
    data_prefix=dict(img_path='img', seg_map_path='ann'), img_suffix='.png',
    seg_map_suffix='.png', metainfo=dict(classes=[str(i) for i in range(11)]),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
              dict(type='PackSegInputs')]))
"""


def _seg_data(root, size, n=3):
    rng = np.random.default_rng(1)
    for sub in ('img', 'ann'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size + (3, ), dtype=np.uint8)).save(
            root / 'img' / f'{i}.png')
        Image.fromarray(rng.integers(0, 11, size, dtype=np.uint8)).save(root / 'ann' / f'{i}.png')


def test_colour_segmentation_inputs_equal_stock(tmp_path):
    _seg_data(tmp_path / 'data', (24, 24))
    path = tmp_path / 'cfg.py'
    path.write_text(COLOUR_SEG.format(base=MOSAIC, root=str(tmp_path / 'data'), test_cfg=''))
    cfg = load_config(str(path))
    stock = stock_backbone_inputs(cfg, range(3), tmp_path / 'work')
    ours, labels = load_test_inputs(cfg, build_model(cfg), 3)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)
    assert [tuple(t.shape) for t in labels] == [(24, 24)] * 3


def test_segmentation_test_time_padding_is_refused(tmp_path):
    """Secure predictions would keep the padding mmseg crops off: a one-line error instead."""
    _seg_data(tmp_path / 'data', (24, 24))
    path = tmp_path / 'cfg.py'
    path.write_text(COLOUR_SEG.format(base=MOSAIC, root=str(tmp_path / 'data'),
                                      test_cfg=', test_cfg=dict(size_divisor=16)'))
    cfg = load_config(str(path))
    with pytest.raises(ValueError, match='pads test images'):
        load_test_inputs(cfg, build_model(cfg), 2)


def test_distortion_samples_equal_stock_preprocessing():
    """extract_distortion's samples: the training set through mmpretrain's own preprocessor."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, init_default_scope
    from mmpretrain.apis import init_model
    cfg = load_config(FASHION)
    # a deterministic training pipeline, so that both sides see the same pixels
    cfg.train_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline
    cfg.train_dataloader.dataset.num_samples = 200
    model = build_plain_model(cfg)
    ours, indices = load_samples(cfg, model, 5, seed=0, shape=(32, 32))
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    theirs = init_model(copy.deepcopy(cfg)).data_preprocessor(
        pseudo_collate([dataset[i] for i in indices]), False)['inputs']
    assert theirs.min() < -0.5
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_stock_test_subset_indices():
    from block_relu_plugin.utils.stock_test import subset_indices
    assert subset_indices({}, [3, 1]) == [3, 1]
    assert subset_indices({'indices': 10}, [3, 1]) == [3, 1]
    assert subset_indices({'indices': [5, 7, 9]}, [2, 0]) == [9, 5]
    with pytest.raises(ValueError, match='outside'):
        subset_indices({'indices': 2}, [2])
    with pytest.raises(ValueError, match='negative'):
        subset_indices({}, [-1])


def test_distortion_samples_use_a_deterministic_test_style_pipeline():
    """Distortion samples: training images through the test pipeline (no random
    crop or flip), the same whatever the seed for the same index; an explicit
    ``distortion_pipeline`` wins; wrappers (ConcatDataset) get it too."""
    from block_relu_plugin.budget.distortion import distortion_dataset
    cfg = load_config(FASHION)
    cfg.train_dataloader.dataset.num_samples = 200
    assert any(s['type'] == 'RandomFlip' for s in cfg.train_dataloader.dataset.pipeline)
    model = build_plain_model(cfg)
    a, ia = load_samples(cfg, model, 40, seed=0, shape=(32, 32))
    b, ib = load_samples(cfg, model, 40, seed=1, shape=(32, 32))
    common = sorted(set(ia) & set(ib))
    assert common, 'seeds drew disjoint samples; use more'
    for i in common:  # augmentation would differ between the two seeds
        torch.testing.assert_close(a[ia.index(i)], b[ib.index(i)], rtol=0, atol=0)
    assert distortion_dataset(cfg)['pipeline'] == list(cfg.test_dataloader.dataset.pipeline)
    cfg.distortion_pipeline = [dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]
    c, _ = load_samples(cfg, model, 3, seed=0, shape=(16, 16))
    assert c.shape == (3, 3, 16, 16)
    wrapped = dict(type='ConcatDataset', datasets=[dict(cfg.train_dataloader.dataset)] * 2)
    cfg.train_dataloader.dataset = wrapped
    out = distortion_dataset(cfg)
    assert all(d['pipeline'] == cfg.distortion_pipeline for d in out['datasets'])
