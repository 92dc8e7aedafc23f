# Architecture edit of the paper: stem MaxPool 3x3/s2 -> AvgPool 3x3/s2/p1 (free under MPC),
# then the authors' short finetune from OpenMMLab's DeepLabV3-R50: 3,000 iterations at a
# constant lr 1e-4 (SGD, momentum 0.9, weight decay 5e-4, batch 16).
_base_ = './deeplabv3_r50-d8_4xb4-40k_voc12aug-512x512.py'
model = dict(type='BlockReLUEncoderDecoder', block_relu_cfg=dict(maxpool_to_avgpool=True))
load_from = {{_base_.published_checkpoint}}
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=5e-4))
param_scheduler = []  # constant lr
train_cfg = dict(type='IterBasedTrainLoop', max_iters=3000, val_interval=1000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000))
