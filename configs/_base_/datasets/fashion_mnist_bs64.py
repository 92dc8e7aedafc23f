# Fashion-MNIST (real 28x28 grayscale clothing images, 10 classes, 60,000 train /
# 10,000 test) from the Debian package `dataset-fashion-mnist`, read from its
# gzipped IDX files by the plugin's LocalFashionMNIST (no downloads; mmpretrain's
# own `FashionMNIST` would try to download). Images come as 3-channel uint8
# (gray replicated) and are resized to 32x32 for CIFAR-style networks
# (e.g. 'mmpretrain::_base_/models/resnet18_cifar.py' with num_classes=10).
custom_imports = dict(
    imports=['block_relu_plugin', 'block_relu_plugin.datasets'], allow_failed_imports=False)

dataset_type = 'LocalFashionMNIST'
data_root = '/usr/share/datasets/fashion-mnist/'
data_preprocessor = dict(
    num_classes=10,
    # mean / std of the Fashion-MNIST training images (0-255), same on all channels
    mean=[72.940, 72.940, 72.940],
    std=[90.021, 90.021, 90.021],
    to_rgb=False)

train_pipeline = [
    dict(type='Resize', scale=(32, 32)),
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]

# num_workers=0: samples are in memory and cheap to make (2 shared cores).
# persistent_workers=False must then be explicit: mmpretrain's tools/train.py
# defaults it to True, which torch rejects without workers.
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, data_root=data_root, split='test', test_mode=True,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
