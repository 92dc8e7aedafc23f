# Block-ReLU at 6 % of the DReLUs (paper: 34.73 mIoU) on DeepLabV3-MobileNetV2 with ReLU6 -> ReLU.
# As the authors did, there is no separate ReLU finetune: OpenMMLab's ReLU6 weights are loaded
# into the ReLU network, both for the distortions and as the start of this finetune.
# Before training, the channel distortions on 48 training samples (as the paper):
#   python tools/extract_distortion.py configs/mmseg/deeplabv3_mnv2_ade20k/mobilenet-v2-relu-d8_deeplabv3_block-relu-6pct_4xb4-40k_ade20k-512x512.py \
#       https://download.openmmlab.com/mmsegmentation/v0.5/mobilenet_v2/deeplabv3_m-v2-d8_512x512_160k_ade20k/deeplabv3_m-v2-d8_512x512_160k_ade20k_20200825_223255-63986343.pth \
#       --out work_dirs/deeplabv3_mnv2_ade20k/distortion --num-samples 48
# (the tool builds this config's network with all ReLUs: the budget is not used there).
_base_ = './mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py'
model = dict(
    type='BlockReLUEncoderDecoder',
    block_relu_cfg=dict(relu6_to_relu=True, budget=0.06,
                        distortion='work_dirs/deeplabv3_mnv2_ade20k/distortion'))
load_from = {{_base_.published_checkpoint}}
# The authors' finetune: SGD lr 5e-4, momentum 0.9, weight decay 5e-4, batch 16, linear warmup
# over 1,000 iterations from 0.01 x lr, poly (power 0.9) to min lr 1e-4 over 40,000 iterations.
# WarmupPolyLR is that product exactly (mmengine's LinearLR + PolyLR chain, about 3 % off).
custom_imports = dict(imports=['block_relu_plugin', 'block_relu_plugin.engine'],
                      allow_failed_imports=False)
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=5e-4))
param_scheduler = [
    dict(type='WarmupPolyLR', eta_min=1e-4, power=0.9, warmup_iters=1000, warmup_ratio=0.01,
         by_epoch=False, begin=0, end=40000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
