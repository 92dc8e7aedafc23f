"""Budgeted Block-ReLU for OpenMMLab 2.x networks and their 3-party secure inference.

Importing the package registers ``BlockReLU`` in mmengine's root ``MODELS``
registry and the model types ``BlockReLUImageClassifier`` (mmpretrain) and
``BlockReLUEncoderDecoder`` (mmseg), so configs use them through
``custom_imports = dict(imports=['block_relu_plugin'])``.
"""
from . import _dependency_warnings  # noqa: F401  (first: mutes them before they fire)

import importlib.util  # noqa: E402

from .conversion import (ReLUSite, convert_block_relu, count_relus, find_relu_sites,
                         maxpool_to_avgpool, relu6_to_relu, split_reused_relus)
from .layers import BlockReLU, num_drelus
from .spec import BlockReLUSpec, SpecError
from .utils.checkpoint import register_checkpoint_loader, register_checkpoint_safe_globals
from . import engine  # noqa: F401  (registers WarmupPolyLR)

__version__ = '0.1.0'

register_checkpoint_safe_globals()
register_checkpoint_loader()  # every local checkpoint mmengine loads: the plugin's messages

# Codebase model types: each registers if its codebase (which needs mmcv) is installed.
_HAS_MMCV = importlib.util.find_spec('mmcv') is not None
if _HAS_MMCV and importlib.util.find_spec('mmpretrain') is not None:
    from .models import classifier  # noqa: F401
if _HAS_MMCV and importlib.util.find_spec('mmseg') is not None:
    from .models import segmentor  # noqa: F401
if _HAS_MMCV:
    from . import datasets  # noqa: F401  (the demo datasets register themselves)

__all__ = [
    'BlockReLU', 'num_drelus', 'ReLUSite', 'find_relu_sites', 'count_relus',
    'split_reused_relus', 'convert_block_relu', 'maxpool_to_avgpool', 'relu6_to_relu',
    'BlockReLUSpec', 'SpecError', '__version__'
]
