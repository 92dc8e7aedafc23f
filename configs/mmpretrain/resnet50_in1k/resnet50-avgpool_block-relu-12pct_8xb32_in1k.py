# Block-ReLU at 12 % of the DReLUs (paper: 73.30 %); otherwise as the 6 % config.
_base_ = './resnet50-avgpool_block-relu-6pct_8xb32_in1k.py'
model = dict(block_relu_cfg=dict(budget=0.12))
