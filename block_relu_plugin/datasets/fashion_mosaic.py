"""Semantic segmentation of Fashion-MNIST mosaics, generated in memory, for mmseg.

Each sample is a canvas (64x64 by default) on which a few real Fashion-MNIST
items are pasted at random positions. Every pixel brighter than ``threshold``
in a pasted item is foreground and gets that item's class + 1; everything
else is background (0), so there are 11 classes. Later items occlude earlier
ones (only their foreground pixels are pasted; their faint sub-threshold
pixels are drawn only on background). Hence, for every pixel:
``label > 0`` exactly when the pixel is brighter than ``threshold``, and then
the pixel's value is the value of the labelled item at that position.

A mosaic is a pure function of (source split, index, seed): the same dataset
arguments give the same data in every process and epoch, with no files.
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .fashion_mnist import gray_to_rgb, subset_indices
from .idx import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, load_fashion_mnist

MOSAIC_CLASSES = ('background', ) + FASHION_MNIST_CLASSES
MOSAIC_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                  [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                  [210, 245, 60], [250, 190, 190]]


def make_mosaic(images: np.ndarray, labels: np.ndarray, index: int, seed: int = 0,
                canvas_size: Tuple[int, int] = (64, 64), num_items: Tuple[int, int] = (2, 4),
                threshold: int = 32):
    """Build mosaic ``index`` from source ``images`` (N, h, w) uint8 and ``labels``.

    Returns:
        ``(canvas, seg, placements)``: the (H, W) uint8 image, the (H, W)
        uint8 label map (0 = background, class + 1 elsewhere) and the list of
        ``(source_index, class, top, left)`` in paste order.
    """
    H, W = canvas_size
    h, w = images.shape[1:3]
    rng = np.random.default_rng([int(seed), int(index)])
    n = int(rng.integers(num_items[0], num_items[1] + 1))
    src = rng.integers(0, len(images), n)
    tops = rng.integers(0, H - h + 1, n)
    lefts = rng.integers(0, W - w + 1, n)
    canvas = np.zeros((H, W), np.uint8)
    seg = np.zeros((H, W), np.uint8)
    placements = []
    for s, t, l in zip(src, tops, lefts):
        item = images[s]
        cls = int(labels[s])
        c_win, s_win = canvas[t:t + h, l:l + w], seg[t:t + h, l:l + w]
        fg = item > threshold
        c_win[fg] = item[fg]
        s_win[fg] = cls + 1
        faint = ~fg & (s_win == 0)
        c_win[faint] = np.maximum(c_win[faint], item[faint])
        placements.append((int(s), cls, int(t), int(l)))
    return canvas, seg, placements


@DATASETS.register_module()
class FashionMosaicDataset(BaseSegDataset):
    """Fashion-MNIST mosaics for semantic segmentation (11 classes), made on the fly.

    Args:
        data_root: Folder with the Fashion-MNIST IDX files (Debian package
            ``dataset-fashion-mnist``).
        split: Source split of the pasted items, ``'train'`` or ``'test'``.
        num_mosaics: Number of samples.
        canvas_size: ``(H, W)`` of the canvas (an int for a square); each side
            must be at least 28.
        num_items: Inclusive range ``(min, max)`` of items per mosaic.
        threshold: Item pixels above this intensity are foreground.
        seed: With the index, determines each mosaic.
        source_samples: Draw items only from a deterministic subset of this
            many source images.
        **kwargs: Other :class:`mmseg.datasets.BaseSegDataset` arguments
            (``pipeline``, ``test_mode``, ``indices``, ``lazy_init``, ...).

    Each sample provides ``img`` (H x W x 3 uint8, gray replicated),
    ``gt_seg_map`` (H x W uint8), ``seg_fields``, ``img_shape``, ``ori_shape``
    and ``reduce_zero_label=False``, as mmseg's ``LoadImageFromFile`` +
    ``LoadAnnotations`` would; so pipelines start directly with augmentations
    or ``PackSegInputs``.
    """
    METAINFO = dict(classes=MOSAIC_CLASSES, palette=MOSAIC_PALETTE)

    def __init__(self,
                 data_root: str = FASHION_MNIST_ROOT,
                 split: str = 'train',
                 num_mosaics: int = 1000,
                 canvas_size: Union[int, Sequence[int]] = (64, 64),
                 num_items: Sequence[int] = (2, 4),
                 threshold: int = 32,
                 seed: int = 0,
                 source_samples: Optional[int] = None,
                 **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if kwargs.get('reduce_zero_label'):
            raise ValueError('FashionMosaicDataset labels background as class 0; '
                             'reduce_zero_label must be False')
        if isinstance(canvas_size, int):
            canvas_size = (canvas_size, canvas_size)
        self.canvas_size = tuple(int(s) for s in canvas_size)
        if len(self.canvas_size) != 2 or min(self.canvas_size) < 28:
            raise ValueError(f'canvas_size must be (H, W) with both >= 28, got {canvas_size}')
        lo, hi = (int(v) for v in num_items)
        if not 1 <= lo <= hi:
            raise ValueError(f'num_items must be (min, max) with 1 <= min <= max, got {num_items}')
        if int(num_mosaics) < 1:
            raise ValueError(f'num_mosaics must be positive, got {num_mosaics}')
        self.split = split
        self.num_mosaics = int(num_mosaics)
        self.num_items = (lo, hi)
        self.threshold = int(threshold)
        self.seed = int(seed)
        self.source_samples = source_samples
        kwargs.setdefault('serialize_data', False)  # records are one int each
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        if self.label_map is not None:
            raise ValueError('FashionMosaicDataset does not remap classes; leave '
                             "metainfo['classes'] at its 11 defaults")
        images, labels = load_fashion_mnist(self.data_root, self.split)
        keep = subset_indices(len(images), self.source_samples, self.seed)
        if self.source_samples is None:
            self._images, self._labels = images, labels
        else:
            self._images, self._labels = images[keep], labels[keep]
        return [dict(mosaic_index=i) for i in range(self.num_mosaics)]

    def mosaic(self, index: int):
        """``(canvas, seg, placements)`` of mosaic ``index`` (see :func:`make_mosaic`);
        ``source_index`` in ``placements`` indexes :attr:`source_images`."""
        return make_mosaic(self._images, self._labels, index, self.seed, self.canvas_size,
                           self.num_items, self.threshold)

    @property
    def source_images(self) -> np.ndarray:
        return self._images

    @property
    def source_labels(self) -> np.ndarray:
        return self._labels

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        canvas, seg, _ = self.mosaic(info['mosaic_index'])
        info.update(img=gray_to_rgb(canvas), gt_seg_map=seg, seg_fields=['gt_seg_map'],
                    img_shape=canvas.shape, ori_shape=canvas.shape,
                    reduce_zero_label=False)
        return info
