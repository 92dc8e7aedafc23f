# Block-ReLU at 6 % of the DReLUs, finetuned from the baseline (paper: 71.16 % top-1).
# Before training, the channel distortions on 2,048 training samples (as the paper):
#   python tools/extract_distortion.py configs/mmpretrain/resnet18_cifar100/resnet18_2xb64_cifar100.py \
#       work_dirs/resnet18_2xb64_cifar100/epoch_200.pth --out work_dirs/resnet18_cifar100/distortion \
#       --num-samples 2048
# The budget below is solved once (exact knapsack) and cached as a spec in the distortion folder.
_base_ = './resnet18_2xb64_cifar100.py'
model = dict(
    type='BlockReLUImageClassifier',
    block_relu_cfg=dict(budget=0.06, distortion='work_dirs/resnet18_cifar100/distortion'))
load_from = 'work_dirs/resnet18_2xb64_cifar100/epoch_200.pth'
# The authors' finetune: SGD lr 0.005, momentum 0.9, weight decay 1e-3, 120 epochs, batch 2 x 64,
# linear warmup over 5 epochs from 0.01 x lr, steps at 30, 60, 90 x0.25, min lr 1e-4.
optim_wrapper = dict(optimizer=dict(lr=0.005, weight_decay=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60], gamma=0.25),
    # The min lr: 0.005 x 0.25^3 would be 7.8e-5 < 1e-4, and MultiStepLR has no floor, so the
    # third step is 1e-4 / (0.005 x 0.25^2) = 0.32. Change it with the lr.
    dict(type='MultiStepLR', by_epoch=True, milestones=[90], gamma=0.32),
]
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
