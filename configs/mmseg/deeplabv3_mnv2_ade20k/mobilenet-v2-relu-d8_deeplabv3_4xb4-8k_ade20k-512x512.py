# Architecture edit of the paper: ReLU6 -> ReLU (so every activation is a Block-ReLU site),
# followed by a short finetune from the baseline.
_base_ = './mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py'
model = dict(type='BlockReLUEncoderDecoder', block_relu_cfg=dict(relu6_to_relu=True))
load_from = 'work_dirs/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512/iter_160000.pth'
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=8000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=8000, val_interval=2000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2000))
