"""``block_relu_cfg``: what a config adds to an upstream model to get Block-ReLU.

Keys (all optional):

- ``spec``: path of a spec file (JSON, see :mod:`block_relu_plugin.spec`).
- ``maxpool_to_avgpool``: stem ``MaxPool 3x3/s2/p1`` -> ``AvgPool`` (ResNets).
- ``relu6_to_relu``: ``ReLU6`` -> ``ReLU`` (MobileNetV2).
- ``partial``: allow model sites that the spec does not name (they stay ReLU).
- ``input_size``: input side used to discover sites while validating (default 64).
- ``budget``: instead of ``spec``, a DReLU budget (fraction of the ReLU count if
  <= 1, else a count), solved from the distortion directory ``distortion`` with
  ``solver`` (``'exact'`` (default), ``'dense'`` or ``'uniform'``). The spec is
  cached as ``<distortion>/spec_<solver>_<budget>.json`` and reused while the
  distortion files are unchanged (see :func:`block_relu_plugin.budget.solve.cached_budget_spec`).
  A ``spec`` given as well wins, so tools can override a budgeted config with a spec file.

The ResNet blocks' shared ``relu`` is always split into ``relu1..3`` so that
site names never depend on whether a spec is given.
"""
from typing import Optional

from torch import nn

from ..conversion.convert import convert_block_relu, maxpool_to_avgpool, relu6_to_relu
from ..conversion.split import split_reused_relus

_KEYS = {'spec', 'maxpool_to_avgpool', 'relu6_to_relu', 'partial', 'input_size',
         'budget', 'distortion', 'solver'}


def apply_block_relu_cfg(model: nn.Module, block_relu_cfg: Optional[dict]) -> nn.Module:
    """Apply the architecture edits and the spec of ``block_relu_cfg`` to ``model``."""
    cfg = dict(block_relu_cfg or {})
    unknown = set(cfg) - _KEYS
    if unknown:
        raise KeyError(f'unknown block_relu_cfg key(s) {sorted(unknown)}; '
                       f'expected some of {sorted(_KEYS)}')
    spec = cfg.get('spec')
    solve = cfg.get('budget') is not None and not spec
    if solve and not cfg.get('distortion'):
        raise KeyError('block_relu_cfg budget needs distortion=DIR (a distortion '
                       'directory from tools/extract_distortion.py)')
    if cfg.get('budget') is None and (cfg.get('distortion') or cfg.get('solver')):
        raise KeyError('block_relu_cfg distortion/solver are only used with budget')
    split_reused_relus(model)
    if cfg.get('maxpool_to_avgpool'):
        maxpool_to_avgpool(model)
    if cfg.get('relu6_to_relu'):
        relu6_to_relu(model)
    if solve:
        from ..budget.solve import cached_budget_spec  # the solver stack only when used
        spec = cached_budget_spec(cfg['distortion'], cfg['budget'], cfg.get('solver', 'exact'))
    if spec:
        convert_block_relu(model, spec, partial=cfg.get('partial', False),
                           input_size=cfg.get('input_size', 64))
    return model
