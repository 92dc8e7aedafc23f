# Block-ReLU at 18 % of the DReLUs (paper: 36.31); otherwise as the 6 % config.
_base_ = './mobilenet-v2-relu-d8_deeplabv3_block-relu-6pct_4xb4-40k_ade20k-512x512.py'
model = dict(block_relu_cfg=dict(budget=0.18))
