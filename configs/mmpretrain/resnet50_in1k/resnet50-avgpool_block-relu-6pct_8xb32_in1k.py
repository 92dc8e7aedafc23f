# Block-ReLU at 6 % of the DReLUs on the AvgPool ResNet50 (paper: 70.36 % top-1).
# Before training, the channel distortions on 512 training samples (as the paper):
#   python tools/extract_distortion.py configs/mmpretrain/resnet50_in1k/resnet50-avgpool_8xb32_in1k.py \
#       work_dirs/resnet50-avgpool_8xb32_in1k/epoch_15.pth --out work_dirs/resnet50_in1k/distortion \
#       --num-samples 512
_base_ = './resnet50-avgpool_8xb32_in1k.py'
model = dict(
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/resnet50_in1k/distortion'))
load_from = 'work_dirs/resnet50-avgpool_8xb32_in1k/epoch_15.pth'
# The authors' finetune: SGD lr 0.005, momentum 0.9, weight decay 1e-4, 25 epochs, batch 256,
# linear warmup over 1 epoch from 0.01 x lr, steps at 12, 18, 22 x0.25, min lr 1e-4.
optim_wrapper = dict(optimizer=dict(lr=0.005, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, milestones=[12, 18], gamma=0.25),
    # The min lr: 0.005 x 0.25^3 would be 7.8e-5 < 1e-4, and MultiStepLR has no floor, so the
    # third step is 1e-4 / (0.005 x 0.25^2) = 0.32. Change it with the lr.
    dict(type='MultiStepLR', by_epoch=True, milestones=[22], gamma=0.32),
]
train_cfg = dict(by_epoch=True, max_epochs=25, val_interval=1)
