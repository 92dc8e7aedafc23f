"""Upstream mmpretrain / mmseg configs as tiny models, for parametrized tests.

Each entry is an upstream config (``mmpretrain::`` / ``mmseg::``) with widths
shrunk where upstream allows (``base_channels``, head channels, groups), so
a forward at the test input size takes milliseconds. The architecture (depth,
block types, reuse of ReLU modules, heads) is upstream's.
"""
import torch

_BN = dict(type='BN', requires_grad=True)


def _resnet(in_channels, **backbone):
    return dict(model=dict(backbone=dict(stem_channels=8, base_channels=8, **backbone),
                           head=dict(num_classes=10, in_channels=in_channels)))


def _seg(decode_head, backbone=None, aux_in=128):
    backbone = backbone or dict(stem_channels=8, base_channels=8)
    return dict(model=dict(
        pretrained=None,
        backbone=dict(norm_cfg=_BN, **backbone),
        decode_head=dict(norm_cfg=_BN, num_classes=4, **decode_head),
        auxiliary_head=dict(norm_cfg=_BN, num_classes=4, in_channels=aux_in, channels=8)))


_CITY = '4xb2-40k_cityscapes-512x1024.py'

#: name -> (upstream config, overrides, test input side, block_relu_cfg edits)
UPSTREAM = {
    'resnet18': ('mmpretrain::resnet/resnet18_8xb32_in1k.py', _resnet(64), 32, {}),
    'resnet34': ('mmpretrain::resnet/resnet34_8xb32_in1k.py', _resnet(64), 32, {}),
    'resnet50': ('mmpretrain::resnet/resnet50_8xb32_in1k.py', _resnet(256), 32, {}),
    'resnet101': ('mmpretrain::resnet/resnet101_8xb32_in1k.py', _resnet(256), 32, {}),
    'resnext50': ('mmpretrain::resnext/resnext50-32x4d_8xb32_in1k.py',
                  _resnet(256, groups=2, width_per_group=4), 32, {}),
    'seresnet50': ('mmpretrain::seresnet/seresnet50_8xb32_in1k.py', _resnet(256), 32, {}),
    'regnetx-400mf': ('mmpretrain::regnet/regnetx-400mf_8xb128_in1k.py',
                      dict(model=dict(head=dict(num_classes=10))), 32, {}),
    # The fixed-size FC (7 x 7 x 512 -> 4096) needs 224 x 224: the convolutional
    # part alone here (no classifier; mode='tensor' gives the last feature map).
    'vgg11': ('mmpretrain::vgg/vgg11_8xb32_in1k.py',
              dict(model=dict(backbone=dict(num_classes=-1))), 32, {}),
    'mobilenet_v2': ('mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
                     dict(model=dict(backbone=dict(widen_factor=0.25),
                                     head=dict(num_classes=10))), 32,
                     {'relu6_to_relu': True}),
    'fcn': ('mmseg::fcn/fcn_r50-d8_' + _CITY,
            _seg(dict(in_channels=256, channels=16)), 64, {}),
    'pspnet': ('mmseg::pspnet/pspnet_r50-d8_' + _CITY,
               _seg(dict(in_channels=256, channels=16)), 64, {}),
    'deeplabv3': ('mmseg::deeplabv3/deeplabv3_r50-d8_' + _CITY,
                  _seg(dict(in_channels=256, channels=16)), 64, {}),
    'deeplabv3plus': ('mmseg::deeplabv3plus/deeplabv3plus_r50-d8_' + _CITY,
                      _seg(dict(in_channels=256, channels=16, c1_in_channels=32,
                                c1_channels=8)), 64, {}),
    'unet': ('mmseg::unet/unet-s5-d16_fcn_4xb4-160k_cityscapes-512x1024.py',
             _seg(dict(in_channels=8, channels=8), dict(base_channels=8), aux_in=16), 64, {}),
}


def upstream_config(name, **model):
    """The tiny config of ``name`` (an mmengine Config); ``model`` keys override ``cfg.model``."""
    from mmengine.hub import get_config
    path, overrides, _, _ = UPSTREAM[name]
    cfg = get_config(path)
    cfg.merge_from_dict(overrides)
    if model:
        cfg.merge_from_dict(dict(model=model))
    return cfg


def build_upstream(name, seed=0, **model):
    """Build the plain upstream model of ``name`` (not split)."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = upstream_config(name, **model)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(seed)
    return MODELS.build(cfg.model)  # torch's default init (init_weights zeroes residual BNs)
