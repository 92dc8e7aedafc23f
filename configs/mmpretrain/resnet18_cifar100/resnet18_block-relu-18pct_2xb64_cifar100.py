# Block-ReLU at 18 % of the DReLUs (paper: 76.88 %); otherwise as the 6 % config.
_base_ = './resnet18_block-relu-6pct_2xb64_cifar100.py'
model = dict(block_relu_cfg=dict(budget=0.18))
