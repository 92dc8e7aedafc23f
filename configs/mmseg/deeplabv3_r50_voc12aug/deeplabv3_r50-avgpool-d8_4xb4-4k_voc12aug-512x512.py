# Architecture edit of the paper: stem MaxPool 3x3/s2 -> AvgPool 3x3/s2/p1, short finetune.
_base_ = './deeplabv3_r50-d8_4xb4-40k_voc12aug-512x512.py'
model = dict(type='BlockReLUEncoderDecoder', block_relu_cfg=dict(maxpool_to_avgpool=True))
load_from = 'work_dirs/deeplabv3_r50-d8_4xb4-40k_voc12aug-512x512/iter_40000.pth'
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=4000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4000, val_interval=1000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000))
