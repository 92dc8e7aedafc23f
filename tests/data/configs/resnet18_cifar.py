_base_ = 'mmpretrain::_base_/models/resnet18_cifar.py'
default_scope = 'mmpretrain'
model = dict(head=dict(num_classes=100))
