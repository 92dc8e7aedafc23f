# The 6 % finetune with knowledge distillation (the authors' later addition): soft targets at
# temperature 4 from the all-ReLU baseline, frozen, added to the cross-entropy
# (see block_relu_plugin/models/distill.py). Checkpoints have the plain model's layout.
_base_ = './resnet18_block-relu-6pct_2xb64_cifar100.py'
model = dict(distill_cfg=dict(teacher_checkpoint={{_base_.load_from}}, temperature=4.0, weight=1.0))
