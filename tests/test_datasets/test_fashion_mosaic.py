"""FashionMosaicDataset: determinism, label correctness, mmseg pipeline and IoUMetric."""
import os

import numpy as np
import pytest
import torch
from fashion_data import fashion_mnist  # noqa: F401  (fixture)
from mmengine.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'configs', '_base_', 'datasets', 'fashion_mosaic.py')


@pytest.fixture(scope='module')
def mosaics(fashion_mnist):
    from block_relu_plugin.datasets import FashionMosaicDataset
    return FashionMosaicDataset(split='test', num_mosaics=50, seed=3)


def expected_labels(ds, placements, threshold):
    """Independent reference: the topmost item whose pixel is above threshold."""
    H, W = ds.canvas_size
    seg = np.zeros((H, W), np.int64)
    value = np.zeros((H, W), np.int64)
    for src, cls, top, left in placements:
        item = ds.source_images[src].astype(np.int64)
        assert int(ds.source_labels[src]) == cls
        for y in range(28):
            for x in range(28):
                if item[y, x] > threshold:
                    seg[top + y, left + x] = cls + 1
                    value[top + y, left + x] = item[y, x]
    return seg, value


def test_labels_match_placed_items(mosaics):
    thr = mosaics.threshold
    counts = np.zeros(11, np.int64)
    for idx in range(12):
        info = mosaics.get_data_info(idx)
        img, seg = info['img'], info['gt_seg_map']
        canvas, _, placements = mosaics.mosaic(idx)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and seg.shape == (64, 64)
        assert 2 <= len(placements) <= 4
        np.testing.assert_array_equal(img[..., 0], canvas)
        want_seg, want_val = expected_labels(mosaics, placements, thr)
        np.testing.assert_array_equal(seg, want_seg)
        fg = seg > 0
        # a labelled pixel shows the item it is labelled with; background is dark
        np.testing.assert_array_equal(canvas[fg], want_val[fg])
        assert (canvas[~fg] <= thr).all() and (canvas[fg] > thr).all()
        counts += np.bincount(seg.ravel(), minlength=11)
    assert counts[0] > counts[1:].sum() / 2 and (counts[1:] > 0).sum() >= 6


def test_deterministic_and_seeded(fashion_mnist, mosaics):
    from block_relu_plugin.datasets import FashionMosaicDataset
    again = FashionMosaicDataset(split='test', num_mosaics=50, seed=3)
    other = FashionMosaicDataset(split='test', num_mosaics=50, seed=4)
    for idx in (0, 7, 49):
        a, b = mosaics.get_data_info(idx), again.get_data_info(idx)
        np.testing.assert_array_equal(a['img'], b['img'])
        np.testing.assert_array_equal(a['gt_seg_map'], b['gt_seg_map'])
        assert not np.array_equal(a['gt_seg_map'], other.get_data_info(idx)['gt_seg_map'])
    assert not np.array_equal(mosaics.get_data_info(0)['img'], mosaics.get_data_info(1)['img'])
    # the same in reverse order (no hidden state between samples)
    assert [mosaics.mosaic(i)[2] for i in (5, 4)] == [again.mosaic(i)[2] for i in (5, 4)]


def test_canvas_size_and_validation(fashion_mnist):
    from block_relu_plugin.datasets import FashionMosaicDataset
    ds = FashionMosaicDataset(split='test', num_mosaics=3, canvas_size=(40, 96),
                              num_items=(5, 5), source_samples=100)
    info = ds.get_data_info(2)
    assert info['img'].shape == (40, 96, 3) and len(ds.mosaic(2)[2]) == 5
    assert len(ds.source_images) == 100
    with pytest.raises(ValueError, match='canvas_size'):
        FashionMosaicDataset(canvas_size=20)
    with pytest.raises(ValueError, match='reduce_zero_label'):
        FashionMosaicDataset(reduce_zero_label=True)


def test_config_pipeline_and_iou_metric(fashion_mnist):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, METRICS
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmseg')
    train = DATASETS.build(dict(cfg.train_dataloader.dataset, num_mosaics=4))
    val = DATASETS.build(dict(cfg.val_dataloader.dataset, num_mosaics=4))
    assert len(DATASETS.build(cfg.train_dataloader.dataset)) == 8000
    assert len(DATASETS.build(cfg.val_dataloader.dataset)) == 500
    assert train.split == 'train' and val.split == 'test'
    assert len(val.metainfo['classes']) == 11 and len(val.metainfo['palette']) == 11

    sample = train[0]
    assert sample['inputs'].shape == (3, 64, 64) and sample['inputs'].dtype == torch.uint8
    gt = sample['data_samples'].gt_sem_seg.data
    assert gt.shape == (1, 64, 64) and 0 <= gt.min() and gt.max() <= 10
    # the flip moved image and labels together
    info = train.get_data_info(0)
    if sample['data_samples'].flip:
        info['img'], info['gt_seg_map'] = info['img'][:, ::-1], info['gt_seg_map'][:, ::-1]
    np.testing.assert_array_equal(sample['inputs'][0].numpy(), info['img'][..., 0])
    np.testing.assert_array_equal(gt[0].numpy(), info['gt_seg_map'])

    # IoUMetric: a perfect prediction gives 100 mIoU over the classes present,
    # an all-background one the background IoU only
    def run(pred_fn):
        metric = METRICS.build(cfg.val_evaluator)
        metric.dataset_meta = val.metainfo
        outs = []
        for i in range(len(val)):
            ds = val[i]['data_samples']
            gt = ds.gt_sem_seg.data
            outs.append(dict(pred_sem_seg=dict(data=pred_fn(gt)), gt_sem_seg=dict(data=gt)))
        metric.process(None, outs)
        return metric.compute_metrics(metric.results)

    assert run(lambda gt: gt.clone())['mIoU'] == pytest.approx(100.0)
    bg = run(lambda gt: torch.zeros_like(gt))
    assert 0 < bg['mIoU'] < 15


def test_config_combines_with_mmseg_model_base(tmp_path):
    # mmengine refuses a key defined by two bases: the dataset base must not
    # define mmseg model-base keys such as `data_preprocessor`.
    cfg_file = tmp_path / 'seg.py'
    cfg_file.write_text(
        f"_base_ = [{CONFIG!r}, 'mmseg::_base_/models/deeplabv3_r50-d8.py']\n"
        'model = dict(data_preprocessor=_base_.mosaic_data_preprocessor,\n'
        '             decode_head=dict(num_classes=_base_.num_classes))\n')
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.data_preprocessor.size == (64, 64)
    assert cfg.model.decode_head.num_classes == 11


def test_export_tool_writes_the_same_mosaics(tmp_path, fashion_mnist):
    import sys
    from PIL import Image
    sys.path.insert(0, os.path.join(REPO, 'tools', 'dataset_converters'))
    import fashion_mosaic_export
    from block_relu_plugin.datasets import FashionMosaicDataset
    fashion_mosaic_export.main([str(tmp_path), '--num', '2', '--seed', '5'])
    ds = FashionMosaicDataset(split='test', num_mosaics=2, seed=5)
    for i in range(2):
        canvas, seg, _ = ds.mosaic(i)
        img = np.array(Image.open(tmp_path / 'img' / 'test' / f'{i:06d}.png'))
        ann = np.array(Image.open(tmp_path / 'ann' / 'test' / f'{i:06d}.png'))
        np.testing.assert_array_equal(img, canvas)
        np.testing.assert_array_equal(ann, seg)
