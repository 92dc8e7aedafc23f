"""Compiled tiny target networks, run by three party processes over real TLS sockets.

Each run is checked against the plaintext float model (fixed-point error,
same predictions) and its measured bytes against the cost model (``ours``),
per (phase, sender, receiver) and per layer.

The networks are the four targets' classes (mmpretrain ResNet_CIFAR / ResNet,
mmseg EncoderDecoder with ResNetV1c or MobileNetV2, ASPPHead and an FCN
auxiliary head), a few channels wide, with BatchNorm statistics randomised
so that folding is not the identity.
"""
import numpy as np
import pytest
import torch
from torch import nn

from block_relu_plugin.conversion import (convert_block_relu, find_relu_sites,
                                          relu6_to_relu, split_reused_relus)
from block_relu_plugin.mpc import LocalCluster
from block_relu_plugin.mpc.infer import secure_inference
from block_relu_plugin.spec import BlockReLUSpec

from networks import randomise_bn

#: per-channel codes cycled through every site: ReLU, patches, identity, zero
MIXED = [(1, 1), (2, 2), (0, 1), (1, 0), (3, 2), (1, 4), (8, 8), (2, 1)]


def _build(scope: str, cfg: dict, seed: int) -> nn.Module:
    from mmengine.registry import DefaultScope
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg)
    model.init_weights()
    return randomise_bn(model, seed)


def resnet_cifar(seed: int = 0, num_classes: int = 10) -> nn.Module:
    """ResNet18-CIFAR (mmpretrain ResNet_CIFAR), 8 base channels."""
    return _build('mmpretrain', dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=64)), seed)


def resnet_maxpool(seed: int = 0) -> nn.Module:
    """mmpretrain ResNet (ImageNet stem with MaxPool 3x3/s2), depth 18, 8 base channels."""
    return _build('mmpretrain', dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64)), seed)


def _deeplab(backbone: dict, in_channels: int, aux_channels: int) -> dict:
    return dict(
        type='EncoderDecoder', backbone=backbone,
        decode_head=dict(type='ASPPHead', in_channels=in_channels, in_index=3, channels=16,
                         dilations=(1, 2, 3), dropout_ratio=0.1, num_classes=5,
                         align_corners=False),
        auxiliary_head=dict(type='FCNHead', in_channels=aux_channels, in_index=2, channels=8,
                            num_convs=1, concat_input=False, num_classes=5),
        test_cfg=dict(mode='whole'))


def deeplab_r18v1c(seed: int = 0) -> nn.Module:
    """DeepLabV3 with a ResNetV1c-18 backbone (deep stem, MaxPool, dilated), ASPP + FCN aux."""
    return _build('mmseg', _deeplab(
        dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
             out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
             contract_dilation=True), 64, 32), seed)


def deeplab_mnv2(seed: int = 0) -> nn.Module:
    """DeepLabV3 with mmseg's MobileNetV2 (widen 0.25, dilated; ReLU6 as upstream)."""
    return _build('mmseg', _deeplab(
        dict(type='MobileNetV2', widen_factor=0.25, strides=(1, 2, 2, 1, 1, 1, 1),
             dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6)), 80, 24), seed)


def mixed_spec(model: nn.Module, size: int, codes=MIXED, every: int = 1) -> BlockReLUSpec:
    """Every ``every``-th site gets the cycled per-channel ``codes`` (others stay ReLU)."""
    sites = find_relu_sites(split_reused_relus(model), size)
    chosen = {}
    for i, s in enumerate(sites):
        if i % every == 0:
            chosen[s.name] = np.asarray([codes[(c + i) % len(codes)] for c in range(s.channels)])
    return BlockReLUSpec(chosen)


def with_spec(model: nn.Module, size: int, every: int = 1) -> nn.Module:
    """``model`` converted to Block-ReLU with :func:`mixed_spec` (in place)."""
    return convert_block_relu(model, mixed_spec(model, size, every=every), partial=True)


def mnv2_converted(seed: int = 0, size: int = 32) -> nn.Module:
    return with_spec(relu6_to_relu(deeplab_mnv2(seed)), size, every=2)


# ----------------------------------------------------------------- tests
@pytest.fixture(scope='module')
def net_cluster():
    # a generous receive timeout: parties import mmpretrain/mmseg on their
    # first program, at different speeds on a loaded machine
    with LocalCluster(timeout=300, light=True) as cl:
        yield cl


def _images(n, size, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def check_agreement(res, tol, flip_tol=0.0):
    """Logits close to the float model's; equal predictions where not a near tie.

    ``tol``: fixed-point error (local truncation, quantised weights).
    ``flip_tol``: extra allowance, relative to the logit scale, for Block-ReLU
    patches whose sum is within a few ulp of 0, whose gate may then flip.
    """
    logits, plain = res['logits'], res['plain_logits']
    err = (logits - plain).abs()
    scale = float(plain.abs().max())
    assert err.max() <= tol + flip_tol * scale, (float(err.max()), scale)
    assert err.mean() <= tol, float(err.mean())
    if res['task'] == 'classification':
        top2 = plain.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * float(err.max())
        got = torch.stack(res['predictions'])
        want = torch.stack(res['plain_predictions'])
        assert torch.equal(got[clear], want[clear])
    else:
        assert res['agreement'] >= 0.95, res['agreement']


def check_bytes(res):
    """Measured == predicted, per layer and per (phase, src, dst)."""
    pred = res['predicted']
    measured = res['measured']
    assert set(measured) == set(k for k, c in pred.layers.items() if c.total())
    for label, c in pred.layers.items():
        assert measured.get(label, c) == c, label
    assert res['predicted_equal']


@pytest.mark.parametrize('bits', [64, 16])
def test_resnet_cifar_block_relu(net_cluster, bits):
    model = with_spec(resnet_cifar(), 16)
    res = secure_inference(model, images=_images(2, 16), labels=[0, 1], bits=bits,
                           batch_size=2, cluster=net_cluster,
                           calibration_images=_images(16, 16, seed=9) if bits < 64 else None)
    # 16 bits: each site's shift keeps 4x its calibrated range, so values within
    # 2^shift ulp of 0 (up to 8 ulp here) may take either sign: more near-tie flips
    check_agreement(res, 0.01, flip_tol=0.25 if bits == 64 else 0.5)
    check_bytes(res)
    assert res['bytes']['session'] > 0  # masked weights, once
    assert res['time']['online_per_image'] > 0


def test_resnet_maxpool_batch_equals_singles(net_cluster):
    model = resnet_maxpool()
    x = _images(2, 32, seed=1)
    both = secure_inference(model, images=x, batch_size=2, cluster=net_cluster)
    single = secure_inference(model, images=x, batch_size=1, cluster=net_cluster)
    check_agreement(both, 0.01)  # all ReLU + MaxPool: exact comparisons
    check_bytes(both)
    check_bytes(single)
    # same values up to the ±1 ulp local-truncation noise; same predictions
    assert (both['logits'] - single['logits']).abs().max() < 0.01
    assert all(torch.equal(a, b) for a, b in zip(both['predictions'], single['predictions']))
    # a batch of 2 sends what two single runs send (weights once per session)
    for phase in ('offline', 'online', 'session'):
        assert both['bytes'][phase] == single['bytes'][phase], phase


def test_deeplab_resnetv1c(net_cluster):
    model = with_spec(deeplab_r18v1c(), 32, every=2)
    res = secure_inference(model, images=_images(1, 32, seed=2), bits=20,
                           labels=[torch.randint(0, 5, (32, 32))], cluster=net_cluster,
                           calibration_images=_images(4, 32, seed=9))
    assert res['task'] == 'segmentation'
    assert res['predictions'][0].shape == (32, 32)
    check_agreement(res, 0.01, flip_tol=0.25)
    check_bytes(res)
    assert abs(res['miou'] - res['plain_miou']) < 10
    assert not any(k.startswith('auxiliary_head') for k in res['measured'])


def test_deeplab_mobilenetv2(net_cluster):
    model = mnv2_converted()
    res = secure_inference(model, images=_images(1, 32, seed=3), bits=16,
                           cluster=net_cluster, calibration_images=_images(4, 32, seed=9))
    check_agreement(res, 0.01, flip_tol=0.25)
    check_bytes(res)
