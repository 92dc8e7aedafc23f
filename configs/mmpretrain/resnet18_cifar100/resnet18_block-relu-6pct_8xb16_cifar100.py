# Block-ReLU at 6 % of the DReLUs, finetuned from the baseline (paper: 71.16 % top-1).
# Before training:
#   python tools/extract_distortion.py configs/mmpretrain/resnet18_cifar100/resnet18_8xb16_cifar100.py \
#       work_dirs/resnet18_8xb16_cifar100/epoch_200.pth --out work_dirs/resnet18_cifar100/distortion \
#       --num-samples 2048
# The budget below is solved once (exact knapsack) and cached as a spec in the distortion folder.
_base_ = './resnet18_8xb16_cifar100.py'
model = dict(
    type='BlockReLUImageClassifier',
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/resnet18_cifar100/distortion'))
load_from = 'work_dirs/resnet18_8xb16_cifar100/epoch_200.pth'
# Paper schedule: SGD lr 0.005, 120 epochs, step decay.
optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = dict(
    _delete_=True, type='MultiStepLR', by_epoch=True, milestones=[40, 80], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
