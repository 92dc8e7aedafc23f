# Architecture edit of the paper: stem MaxPool 3x3/s2 -> AvgPool 3x3/s2/p1 (free under MPC),
# then the authors' short finetune from OpenMMLab's ResNet50: 15 epochs at a constant lr 1e-4
# (SGD, momentum 0.9, weight decay 1e-4, batch 256).
_base_ = './resnet50_8xb32_in1k.py'
model = dict(type='BlockReLUImageClassifier', block_relu_cfg=dict(maxpool_to_avgpool=True))
load_from = {{_base_.published_checkpoint}}
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=1e-4))
param_scheduler = []  # constant lr
train_cfg = dict(by_epoch=True, max_epochs=15, val_interval=1)
