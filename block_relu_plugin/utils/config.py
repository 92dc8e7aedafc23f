"""Build models from OpenMMLab configs, for the plugin's tools."""
import copy
import functools
from typing import Callable, Optional, Tuple, Union

from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from torch import nn

from ..conversion.split import split_reused_relus


def load_config(config: Union[str, Config]) -> Config:
    """Load ``config`` (a path or a Config; ``Config.fromfile`` imports its ``custom_imports``)."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    return cfg


def codebase(cfg: Config) -> str:
    """``'mmpretrain'`` or ``'mmseg'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in ('mmpretrain', 'mmseg'):
        raise ValueError(f'config default_scope is {scope!r}; expected an mmpretrain '
                         "or mmseg config (default_scope='mmpretrain' or 'mmseg')")
    return scope


def model_config(cfg: Union[str, Config], spec: Optional[str] = None) -> ConfigDict:
    """The config's ``model`` as mmengine's Runner builds it, optionally with another spec.

    The Runner and mmpretrain's ``init_model`` merge the config's top-level
    ``data_preprocessor`` into ``model.data_preprocessor`` (``setdefault``: a
    model-level one wins). mmpretrain keeps the normalisation (mean, std,
    to_rgb) at the top level in its dataset bases, and a classifier built
    without it feeds raw 0-255 pixels to its backbone, so every model the
    plugin builds goes through here.

    Args:
        cfg: Config or its path.
        spec: A spec file that replaces ``model.block_relu_cfg.spec`` (a
            plain upstream model becomes the plugin's Block-ReLU model type).
    """
    cfg = load_config(cfg)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    if spec is not None:
        if 'block_relu_cfg' not in model_cfg:
            model_cfg['type'] = _block_relu_type(cfg)
        brc = dict(model_cfg.get('block_relu_cfg') or {})
        brc['spec'] = spec
        model_cfg['block_relu_cfg'] = brc
    return model_cfg


def build_model(cfg: Union[str, Config], spec: Optional[str] = None,
                checkpoint: Optional[str] = None, device: str = 'cpu') -> nn.Module:
    """Build the config's model (reused ReLUs split), optionally with another spec and a checkpoint.

    The model is the one the Runner would build (:func:`model_config`), so
    ``model.data_preprocessor`` prepares inputs as the stock tools do.

    Args:
        cfg: Config or its path.
        spec: A spec file that replaces ``model.block_relu_cfg.spec``.
        checkpoint: Weights to load (keys are the same for plain and
            converted models).
        device: Where to put the model.
    """
    cfg = load_config(cfg)
    init_default_scope(codebase(cfg))
    from mmengine.registry import MODELS
    # Split reused ReLUs so site names are the same as for converted models.
    model = split_reused_relus(MODELS.build(model_config(cfg, spec)))
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device)


def collate_fn(dataloader_cfg: dict) -> Callable:
    """A dataloader config's ``collate_fn``, built as mmengine's Runner builds it.

    Default ``pseudo_collate``; a ``dict(type=..., **kwargs)`` names a function
    registered in ``FUNCTIONS`` (or is the function) with its keyword arguments.
    """
    from mmengine.registry import FUNCTIONS
    spec = dict(dataloader_cfg.get('collate_fn') or dict(type='pseudo_collate'))
    fn = spec.pop('type')
    if isinstance(fn, str):
        name, fn = fn, FUNCTIONS.get(fn)
        if fn is None:
            raise ValueError(f'collate_fn {name!r} is not registered in FUNCTIONS')
    return functools.partial(fn, **spec)


def _block_relu_type(cfg: Config) -> str:
    return {'mmpretrain': 'BlockReLUImageClassifier',
            'mmseg': 'BlockReLUEncoderDecoder'}[codebase(cfg)]


def default_input_size(cfg: Config) -> Tuple[int, int]:
    """The inference input size the config implies (used when no --shape is given).

    Order: a top-level ``input_size``, mmseg's ``crop_size``, the test
    pipeline's last crop (``ResizeEdge 256, CenterCrop 224`` gives 224), else
    its first fixed-size resize, CIFAR datasets (32), else 224.
    """
    if cfg.get('input_size'):
        return _pair(cfg.input_size)
    if cfg.get('crop_size'):
        return _pair(cfg.crop_size)
    loader = cfg.get('test_dataloader') or {}
    dataset = loader.get('dataset', {}) if isinstance(loader, dict) else {}
    steps = dataset.get('pipeline', []) or []
    crops = [s['crop_size'] for s in steps if s.get('crop_size') is not None
             and s.get('type') in ('CenterCrop', 'RandomCrop', 'RandomResizedCrop')]
    if crops:
        return _pair(crops[-1])
    for step in steps:
        if step.get('scale') is not None and step.get('type') in ('Resize', 'ResizeEdge'):
            return _pair(step['scale'])
    if 'cifar' in str(dataset.get('type', '')).lower():
        return 32, 32
    return 224, 224


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, int):
        return v, v
    return int(v[0]), int(v[1])
