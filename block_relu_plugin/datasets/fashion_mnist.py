"""Fashion-MNIST for mmpretrain, read from the local gzipped IDX files.

Registered as ``LocalFashionMNIST`` (mmpretrain's own ``FashionMNIST`` name is
taken: that class downloads and expects unpacked files). Images are the real
28x28 grayscale pictures, replicated to 3-channel ``uint8`` HWC so that
mmpretrain's standard transforms (``Resize``, ``RandomCrop``, ``PackInputs``)
apply unchanged; no ``LoadImageFromFile`` step is needed.
"""
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .idx import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, load_fashion_mnist


def subset_indices(total: int, num_samples: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic random subset (all when ``num_samples`` is None)."""
    if num_samples is None:
        return np.arange(total)
    if not 0 < int(num_samples) <= total:
        raise ValueError(f'num_samples must be in 1..{total}, got {num_samples}')
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(total)[:int(num_samples)])


def gray_to_rgb(img: np.ndarray) -> np.ndarray:
    """``(H, W)`` -> ``(H, W, 3)`` by replication (contiguous, writable)."""
    return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))


@DATASETS.register_module()
class LocalFashionMNIST(BaseDataset):
    """Fashion-MNIST (60,000 train / 10,000 test images, 10 classes) from local IDX files.

    Args:
        data_root: Folder with ``train-images-idx3-ubyte.gz`` etc. (gzipped or
            not). Defaults to where the Debian package ``dataset-fashion-mnist``
            installs them. Nothing is downloaded.
        split: ``'train'`` or ``'test'`` (t10k). Defaults to ``'test'`` when
            ``test_mode`` else ``'train'``.
        num_samples: Take a deterministic random subset of this many images
            (sorted by original index), e.g. for short runs.
        subset_seed: Seed of that subset.
        **kwargs: Other :class:`mmpretrain.datasets.BaseDataset` arguments
            (``pipeline``, ``test_mode``, ``metainfo``, ``indices``, ...).

    Each sample has ``img`` (28x28x3 uint8), ``gt_label`` (int64),
    ``img_shape``/``ori_shape``; ``img_index`` is the index in the split.
    """
    METAINFO = {'classes': FASHION_MNIST_CLASSES}

    def __init__(self,
                 data_root: str = FASHION_MNIST_ROOT,
                 split: Optional[str] = None,
                 num_samples: Optional[int] = None,
                 subset_seed: int = 0,
                 test_mode: bool = False,
                 **kwargs):
        self.split = split or ('test' if test_mode else 'train')
        if self.split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.num_samples = num_samples
        self.subset_seed = subset_seed
        kwargs.setdefault('ann_file', '')
        # The per-sample records are two ints (images stay in one shared array);
        # pickling 60,000 of them would only cost start-up time.
        kwargs.setdefault('serialize_data', False)
        super().__init__(data_root=data_root, test_mode=test_mode, **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_fashion_mnist(self.data_root, self.split)
        self._images = images
        keep = subset_indices(len(images), self.num_samples, self.subset_seed)
        return [dict(img_index=int(i), gt_label=int(labels[i])) for i in keep]

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        img = gray_to_rgb(self._images[info['img_index']])
        info.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return info

    def get_cat_ids(self, idx: int) -> List[int]:
        # Without building the image.
        return [int(BaseDataset.get_data_info(self, idx)['gt_label'])]

    def get_gt_labels(self) -> np.ndarray:
        return np.array([self.get_cat_ids(i)[0] for i in range(len(self))], dtype=np.int64)

    def extra_repr(self) -> List[str]:
        return [f'Data root: \t{self.data_root}', f'Split: \t{self.split}']
