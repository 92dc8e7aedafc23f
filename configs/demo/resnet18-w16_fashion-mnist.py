# Classification demo: a ResNet18 with the CIFAR stem, base width 16 (a quarter of the
# paper's, to train in minutes on 2 CPU cores), on real Fashion-MNIST at 32x32.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    '../_base_/datasets/fashion_mnist_bs64.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(
    type='BlockReLUImageClassifier',
    block_relu_cfg=dict(),
    backbone=dict(stem_channels=16, base_channels=16),
    head=dict(num_classes=10, in_channels=128))
input_size = (32, 32)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=3, eta_min=1e-3, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=3)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=200, by_epoch=False, max_keep_ckpts=2))
randomness = dict(seed=0)
