# Baseline: ResNet18 with the CIFAR stem on CIFAR-100 (paper: 78.27 % top-1).
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(head=dict(num_classes=100))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0005))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[60, 120, 160], gamma=0.2)
input_size = (32, 32)  # what the plugin's tools count ReLUs at
