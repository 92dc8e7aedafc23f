# Baseline: ResNet18 with the CIFAR stem on CIFAR-100, trained from scratch as the authors did
# (OpenMMLab publishes no CIFAR-100 ResNet18; paper: 78.27 % top-1). The authors' schedule:
# SGD lr 0.1, momentum 0.9, weight decay 1e-3, 200 epochs, steps at 60, 120, 160 x0.2,
# batch 2 GPUs x 64.
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
model = dict(head=dict(num_classes=100))
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(lr=0.1, weight_decay=1e-3))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[60, 120, 160], gamma=0.2)
input_size = (32, 32)  # what the plugin's tools count ReLUs at
