# Block-ReLU at 9 % of the DReLUs (paper: 75.89); otherwise as the 6 % config.
_base_ = './deeplabv3_r50-avgpool-d8_block-relu-6pct_4xb4-20k_voc12aug-512x512.py'
model = dict(block_relu_cfg=dict(budget=0.09))
