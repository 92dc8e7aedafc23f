# Block-ReLU at 18 % of the DReLUs; otherwise as the 6 % config.
_base_ = './resnet18_block-relu-6pct_8xb16_cifar100.py'
model = dict(block_relu_cfg=dict(budget=0.18))
