# Block-ReLU at 12 % of the DReLUs (paper: 35.77); otherwise as the 6 % config.
_base_ = './mobilenet-v2-relu-d8_deeplabv3_block-relu-6pct_4xb4-40k_ade20k-512x512.py'
model = dict(block_relu_cfg=dict(budget=0.12))
