# Semantic segmentation on Fashion-MNIST mosaics, generated in memory by the
# plugin's FashionMosaicDataset from the Debian package `dataset-fashion-mnist`:
# each sample is a 64x64 canvas with 2-4 real Fashion-MNIST items at random
# (index- and seed-determined) positions; pixels above intensity 32 are labelled
# with their item's class + 1, the rest is background 0 (11 classes).
# Train mosaics draw items from the Fashion-MNIST train split, val/test mosaics
# from the t10k split. Pipelines need no loading steps.
custom_imports = dict(
    imports=['block_relu_plugin', 'block_relu_plugin.datasets'], allow_failed_imports=False)

dataset_type = 'FashionMosaicDataset'
data_root = '/usr/share/datasets/fashion-mnist/'
crop_size = (64, 64)
num_classes = 11
# For the model (mean / std of the mosaics, 0-255, same on all channels):
#   model = dict(data_preprocessor=_base_.mosaic_data_preprocessor, ...)
# Not named `data_preprocessor`: mmseg's model bases define that, and mmengine
# refuses a key defined by two bases.
mosaic_data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[34.633, 34.633, 34.633],
    std=[72.044, 72.044, 72.044],
    bgr_to_rgb=False,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
mosaic_cfg = dict(canvas_size=crop_size, num_items=(2, 4), threshold=32, seed=0)

train_pipeline = [
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [dict(type='PackSegInputs')]

# num_workers=0: samples are cheap to make in memory (2 shared cores).
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', num_mosaics=8000,
                 pipeline=train_pipeline, **mosaic_cfg))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', num_mosaics=500,
                 test_mode=True, pipeline=test_pipeline, **mosaic_cfg))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
