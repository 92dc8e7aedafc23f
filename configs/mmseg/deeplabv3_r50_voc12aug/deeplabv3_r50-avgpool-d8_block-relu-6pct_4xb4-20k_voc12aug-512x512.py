# Block-ReLU at 6 % of the DReLUs on the AvgPool DeepLabV3-R50 (paper: 74.27 mIoU).
# Before training, the channel distortions on 30 training samples (as the paper):
#   python tools/extract_distortion.py configs/mmseg/deeplabv3_r50_voc12aug/deeplabv3_r50-avgpool-d8_4xb4-3k_voc12aug-512x512.py \
#       work_dirs/deeplabv3_r50-avgpool-d8_4xb4-3k_voc12aug-512x512/iter_3000.pth \
#       --out work_dirs/deeplabv3_r50_voc12aug/distortion --num-samples 30
_base_ = './deeplabv3_r50-avgpool-d8_4xb4-3k_voc12aug-512x512.py'
model = dict(
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/deeplabv3_r50_voc12aug/distortion'))
load_from = 'work_dirs/deeplabv3_r50-avgpool-d8_4xb4-3k_voc12aug-512x512/iter_3000.pth'
# The authors' finetune: SGD lr 5e-4, momentum 0.9, weight decay 5e-4, batch 16, linear warmup
# over 1,000 iterations from 0.01 x lr, poly (power 0.9) to min lr 1e-4 over 20,000 iterations.
# WarmupPolyLR is that product exactly (mmengine's LinearLR + PolyLR chain, about 3 % off).
custom_imports = dict(imports=['block_relu_plugin', 'block_relu_plugin.engine'],
                      allow_failed_imports=False)
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=5e-4))
param_scheduler = [
    dict(type='WarmupPolyLR', eta_min=1e-4, power=0.9, warmup_iters=1000, warmup_ratio=0.01,
         by_epoch=False, begin=0, end=20000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
