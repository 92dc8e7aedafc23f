# Block-ReLU at 6 % of the DReLUs (paper: 34.73 mIoU).
# Before training:
#   python tools/extract_distortion.py \
#       configs/mmseg/deeplabv3_mnv2_ade20k/mobilenet-v2-relu-d8_deeplabv3_4xb4-8k_ade20k-512x512.py \
#       work_dirs/mobilenet-v2-relu-d8_deeplabv3_4xb4-8k_ade20k-512x512/iter_8000.pth \
#       --out work_dirs/deeplabv3_mnv2_ade20k/distortion --num-samples 48
_base_ = './mobilenet-v2-relu-d8_deeplabv3_4xb4-8k_ade20k-512x512.py'
model = dict(
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/deeplabv3_mnv2_ade20k/distortion'))
load_from = 'work_dirs/mobilenet-v2-relu-d8_deeplabv3_4xb4-8k_ade20k-512x512/iter_8000.pth'
# Paper schedule: poly lr 5e-4, 40k iterations.
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
