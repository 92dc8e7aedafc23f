# Block-ReLU at 6 % of the DReLUs on the AvgPool DeepLabV3-R50 (paper: 74.27 mIoU).
# Before training:
#   python tools/extract_distortion.py \
#       configs/mmseg/deeplabv3_r50_voc12aug/deeplabv3_r50-avgpool-d8_4xb4-4k_voc12aug-512x512.py \
#       work_dirs/deeplabv3_r50-avgpool-d8_4xb4-4k_voc12aug-512x512/iter_4000.pth \
#       --out work_dirs/deeplabv3_r50_voc12aug/distortion --num-samples 30
_base_ = './deeplabv3_r50-avgpool-d8_4xb4-4k_voc12aug-512x512.py'
model = dict(
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/deeplabv3_r50_voc12aug/distortion'))
load_from = 'work_dirs/deeplabv3_r50-avgpool-d8_4xb4-4k_voc12aug-512x512/iter_4000.pth'
# Paper schedule: poly lr 5e-4, 40k iterations.
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
