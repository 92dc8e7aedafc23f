"""LocalFashionMNIST on the real Debian data, and its config through mmpretrain."""
import os

import numpy as np
import pytest
import torch
from fashion_data import fashion_mnist  # noqa: F401  (fixture)
from mmengine.config import Config

from block_relu_plugin.datasets.idx import FASHION_MNIST_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'configs', '_base_', 'datasets', 'fashion_mnist_bs64.py')


def test_real_data_counts_and_labels(fashion_mnist):
    for split, n in (('train', 60000), ('test', 10000)):
        images, labels = fashion_mnist[split]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        # 10 balanced classes
        assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
        assert labels.min() == 0 and labels.max() == 9
        # real pictures: dark background, bright items
        assert images[:, 0, 0].mean() < 5 and images.max() == 255


def test_dataset_splits_and_samples(fashion_mnist):
    from block_relu_plugin.datasets import LocalFashionMNIST
    train = LocalFashionMNIST()
    test = LocalFashionMNIST(test_mode=True)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.split == 'train' and test.split == 'test'
    assert train.CLASSES == FASHION_MNIST_CLASSES
    info = test.get_data_info(123)
    img = info['img']
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], fashion_mnist['test'][0][123])
    assert (img == img[..., :1]).all()  # gray replicated
    assert info['gt_label'] == fashion_mnist['test'][1][123]
    assert test.get_cat_ids(123) == [int(fashion_mnist['test'][1][123])]
    np.testing.assert_array_equal(test.get_gt_labels(), fashion_mnist['test'][1])


def test_num_samples_subset_is_deterministic(fashion_mnist):
    from block_relu_plugin.datasets import LocalFashionMNIST
    a = LocalFashionMNIST(num_samples=500)
    b = LocalFashionMNIST(num_samples=500)
    c = LocalFashionMNIST(num_samples=500, subset_seed=1)
    ia = [a.get_data_info(i)['img_index'] for i in range(len(a))]
    assert len(a) == 500 and ia == sorted(set(ia))
    assert ia == [b.get_data_info(i)['img_index'] for i in range(len(b))]
    assert ia != [c.get_data_info(i)['img_index'] for i in range(len(c))]
    assert ia[-1] > 50000  # a spread-out subset, not the first 500
    with pytest.raises(ValueError, match='num_samples'):
        LocalFashionMNIST(num_samples=60001)


def test_config_pipelines_and_evaluator(fashion_mnist):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, METRICS, MODELS
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmpretrain')
    # the config's mean / std are those of the data
    images = fashion_mnist['train'][0]
    assert cfg.data_preprocessor.mean[0] == pytest.approx(images.mean(), abs=0.01)
    assert cfg.data_preprocessor.std[0] == pytest.approx(images.std(), abs=0.01)

    samples = []
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        ds_cfg = dict(loader.dataset, num_samples=8)
        ds = DATASETS.build(ds_cfg)
        sample = ds[0]
        assert sample['inputs'].shape == (3, 32, 32) and sample['inputs'].dtype == torch.uint8
        assert sample['data_samples'].gt_label.item() == ds.get_cat_ids(0)[0]
        samples.append(sample)
    assert len(DATASETS.build(cfg.val_dataloader.dataset)) == 10000

    # data preprocessor + Accuracy on one batch
    pre = MODELS.build(dict(type='ClsDataPreprocessor', **cfg.data_preprocessor))
    batch = pre(dict(inputs=[s['inputs'] for s in samples],
                     data_samples=[s['data_samples'] for s in samples]))
    assert batch['inputs'].shape == (2, 3, 32, 32) and batch['inputs'].dtype == torch.float32
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dict(classes=FASHION_MNIST_CLASSES)
    scores = torch.zeros(2, 10)
    labels = [int(s['data_samples'].gt_label) for s in samples]
    scores[0, labels[0]] = 1  # first right, second wrong
    scores[1, (labels[1] + 1) % 10] = 1
    for s, sc in zip(samples, scores):
        s['data_samples'].set_pred_score(sc)
    metric.process(None, [s['data_samples'].to_dict() for s in samples])
    assert metric.evaluate(2)['accuracy/top1'] == pytest.approx(50.0)


def test_config_combines_with_mmpretrain_model_base(tmp_path):
    cfg_file = tmp_path / 'cls.py'
    cfg_file.write_text(
        f"_base_ = [{CONFIG!r}, 'mmpretrain::_base_/models/resnet18_cifar.py']\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.head.num_classes == 10
    assert cfg.train_dataloader.persistent_workers is False  # num_workers=0 with stock train.py
