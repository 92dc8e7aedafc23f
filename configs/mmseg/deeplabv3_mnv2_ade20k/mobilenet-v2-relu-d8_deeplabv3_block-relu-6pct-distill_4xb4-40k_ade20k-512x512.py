# The 6 % finetune with knowledge distillation: soft targets at temperature 4, per pixel on the
# decode head's logits, from the all-ReLU network (OpenMMLab's weights in the ReLU network, the
# student's own start), frozen, added to the task losses (see block_relu_plugin/models/distill.py).
_base_ = './mobilenet-v2-relu-d8_deeplabv3_block-relu-6pct_4xb4-40k_ade20k-512x512.py'
model = dict(distill_cfg=dict(teacher_checkpoint={{_base_.load_from}}, temperature=4.0, weight=1.0))
