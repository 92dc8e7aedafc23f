# Architecture edit of the paper: stem MaxPool 3x3/s2 -> AvgPool 3x3/s2/p1 (free under MPC),
# followed by a short finetune from the baseline.
_base_ = './resnet50_8xb32_in1k.py'
model = dict(type='BlockReLUImageClassifier', block_relu_cfg=dict(maxpool_to_avgpool=True))
load_from = 'work_dirs/resnet50_8xb32_in1k/epoch_100.pth'
optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = dict(_delete_=True, type='CosineAnnealingLR', by_epoch=True, T_max=5)
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=1)
