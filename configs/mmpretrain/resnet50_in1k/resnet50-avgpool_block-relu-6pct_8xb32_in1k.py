# Block-ReLU at 6 % of the DReLUs on the AvgPool ResNet50 (paper: 70.36 % top-1).
# Before training:
#   python tools/extract_distortion.py configs/mmpretrain/resnet50_in1k/resnet50-avgpool_8xb32_in1k.py \
#       work_dirs/resnet50-avgpool_8xb32_in1k/epoch_5.pth --out work_dirs/resnet50_in1k/distortion \
#       --num-samples 512
_base_ = './resnet50-avgpool_8xb32_in1k.py'
model = dict(
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/resnet50_in1k/distortion'))
load_from = 'work_dirs/resnet50-avgpool_8xb32_in1k/epoch_5.pth'
# Paper schedule: SGD lr 0.005, 25 epochs, step decay.
optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = dict(
    _delete_=True, type='MultiStepLR', by_epoch=True, milestones=[10, 20], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=25, val_interval=1)
