"""``block_relu_cfg``: what a config adds to an upstream model to get Block-ReLU.

Keys (all optional):

- ``spec``: path of a spec file (JSON, see :mod:`block_relu_plugin.spec`).
- ``maxpool_to_avgpool``: stem ``MaxPool 3x3/s2/p1`` -> ``AvgPool`` (ResNets).
- ``relu6_to_relu``: ``ReLU6`` -> ``ReLU`` (MobileNetV2; without it such a
  network has no sites, which is an error).
- ``partial``: allow model sites that the spec does not name (they stay ReLU).
- ``input_size``: side or ``(H, W)`` of the zero image traced to find the sites
  (split reused ReLUs, validate the spec). Names and channel counts do not
  depend on it; it only has to be a size the model runs at, which matters
  for classifiers whose FC needs a fixed size (VGG: 224). Default: the
  config's own input size (:func:`block_relu_plugin.utils.config.default_input_size`)
  where the model is built from a config by the plugin's tools
  (:func:`set_default_input_size`), else 64, then 224 if the model does not
  run at 64.
- ``budget``: instead of ``spec``, a budget in any form of
  :func:`block_relu_plugin.budget.budget_spec.parse_budget` (``0.06``,
  ``'6%'``, ``'drelus=33423'``, ``'bytes=20MB'`` with ``bits`` the compared bits
  the bytes are counted at), solved from the distortion directory
  ``distortion`` with ``solver`` (``'exact'`` (default), ``'dense'`` or
  ``'uniform'``) over the candidate set ``candidates`` (default: every
  measured candidate; ``'paper'`` or ``'all_pairs'`` restrict it). The spec is
  cached in the distortion directory and reused while the distortion files are
  unchanged (see :func:`block_relu_plugin.budget.solve.cached_budget_spec`).
  A ``spec`` given as well wins, so tools can override a budgeted config with a spec file.

Every ReLU module applied several times per forward is always split (the
ResNet blocks' shared ``relu`` into ``relu1..3``, others into ``relu.0``,
``relu.1``, ... see :mod:`block_relu_plugin.conversion.split`), so site names
never depend on whether a spec is given. A network with no ReLU site is an
error naming the activations it has instead.
"""
from typing import Optional

from torch import nn

from ..conversion.convert import convert_block_relu, maxpool_to_avgpool, relu6_to_relu
from ..conversion.split import split_and_find_sites

_KEYS = {'spec', 'maxpool_to_avgpool', 'relu6_to_relu', 'partial', 'input_size',
         'budget', 'distortion', 'solver', 'candidates', 'bits'}


def apply_block_relu_cfg(model: nn.Module, block_relu_cfg: Optional[dict]) -> nn.Module:
    """Apply the architecture edits and the spec of ``block_relu_cfg`` to ``model``."""
    cfg = dict(block_relu_cfg or {})
    unknown = set(cfg) - _KEYS
    if unknown:
        raise KeyError(f'unknown block_relu_cfg key(s) {sorted(unknown)}; '
                       f'expected some of {sorted(_KEYS)}')
    spec = cfg.get('spec')
    if cfg.get('budget') is not None:
        from ..budget.budget_spec import parse_budget
        parse_budget(cfg['budget'], cfg.get('bits'))  # malformed: an error even where spec wins
    solve = cfg.get('budget') is not None and not spec
    if solve and not cfg.get('distortion'):
        raise KeyError('block_relu_cfg budget needs distortion=DIR (a distortion '
                       'directory from tools/extract_distortion.py)')
    if cfg.get('budget') is None and (cfg.get('distortion') or cfg.get('solver')
                                      or cfg.get('bits')):
        raise KeyError('block_relu_cfg distortion/solver/bits are only used with budget')
    input_size = cfg.get('input_size')
    if cfg.get('maxpool_to_avgpool'):
        maxpool_to_avgpool(model)
    if cfg.get('relu6_to_relu'):
        relu6_to_relu(model)
    if solve:
        from ..budget.solve import cached_budget_spec  # the solver stack only when used
        spec = cached_budget_spec(cfg['distortion'], cfg['budget'], cfg.get('solver', 'exact'),
                                  candidates=cfg.get('candidates'), bits=cfg.get('bits'))
    if spec:  # splits, and refuses a model without sites
        convert_block_relu(model, spec, partial=cfg.get('partial', False), input_size=input_size)
    else:
        split_and_find_sites(model, input_size)  # NoSitesError: a Block-ReLU model needs sites
    return model


def set_default_input_size(cfg):
    """Default ``model.block_relu_cfg.input_size`` to the config's own input size (in place).

    For tools that build a model from a whole config (the model's constructor
    only sees ``cfg.model``). A no-op for models without ``block_relu_cfg``
    or with an ``input_size`` already.

    Args:
        cfg (mmengine.Config): the config.

    Returns:
        mmengine.Config: ``cfg``.
    """
    from ..utils.config import default_input_size
    model = cfg.get('model') or {}
    if 'block_relu_cfg' in model:
        brc = dict(model.get('block_relu_cfg') or {})
        if brc.get('input_size') is None:
            brc['input_size'] = list(default_input_size(cfg))
            model['block_relu_cfg'] = brc
    return cfg


class BlockReLUModelMixin:
    """The constructor both codebases' Block-ReLU model types share: build the
    upstream model, apply ``block_relu_cfg``, and hold a distillation teacher
    when ``distill_cfg`` is given (see :mod:`.distill`). Put it first in the
    bases: ``class BlockReLUImageClassifier(BlockReLUModelMixin, ImageClassifier)``.
    """

    def __init__(self, *args, block_relu_cfg=None, distill_cfg=None, **kwargs):
        import copy
        import functools

        from .distill import Distiller, check_distill_cfg, teacher_block_relu_cfg
        distill_cfg = check_distill_cfg(distill_cfg)
        # Copied before the base class edits them (it fills in defaults in place).
        teacher_args = copy.deepcopy((args, kwargs)) if distill_cfg else None
        super().__init__(*args, **kwargs)
        self.block_relu_cfg = block_relu_cfg
        apply_block_relu_cfg(self, block_relu_cfg)
        # A plain object, not a submodule: the teacher stays out of parameters(),
        # the optimizer and state_dict().
        self.distiller = None
        if distill_cfg:
            targs, tkwargs = teacher_args
            tbrc = teacher_block_relu_cfg(block_relu_cfg)
            self.distiller = Distiller(distill_cfg, functools.partial(
                type(self), *targs, block_relu_cfg=tbrc, **tkwargs))

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if getattr(self, 'distiller', None) is not None:
            self.distiller.apply(fn)  # .to() / .cuda() / .half() move the teacher too
        return self
