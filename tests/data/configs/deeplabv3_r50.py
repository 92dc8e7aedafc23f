_base_ = 'mmseg::_base_/models/deeplabv3_r50-d8.py'
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg, num_classes=21),
    auxiliary_head=dict(norm_cfg=norm_cfg, num_classes=21))
