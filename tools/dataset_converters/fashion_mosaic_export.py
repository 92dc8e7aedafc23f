"""Write Fashion-MNIST mosaics to PNG files, for inspection or for stock mmseg datasets.

The plugin's ``FashionMosaicDataset`` makes the mosaics in memory; this tool
saves the same samples (same arguments -> same pixels) as

    <out>/img/<split>/<index>.png    (grayscale image, H x W)
    <out>/ann/<split>/<index>.png    (label map: 0 background, class + 1)
    <out>/preview_<split>.png        (first images next to their colour-coded labels)

so they also load with mmseg's ``BaseSegDataset`` (``img_suffix='.png'``).

Example::

    python tools/dataset_converters/fashion_mosaic_export.py work_dirs/mosaics --num 16
"""
import os

import numpy as np
from PIL import Image

from block_relu_plugin.utils.cli import ArgumentParser, nonnegative_int, positive_int, run_cli


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument('out_dir', help='folder to write img/, ann/ and the preview into')
    p.add_argument('--split', choices=['train', 'test'], default='test',
                   help='Fashion-MNIST split the items are taken from')
    p.add_argument('--num', type=positive_int, default=16, help='number of mosaics')
    p.add_argument('--canvas-size', type=positive_int, nargs=2, default=(64, 64),
                   metavar=('H', 'W'), help='mosaic size')
    p.add_argument('--num-items', type=positive_int, nargs=2, default=(2, 4),
                   metavar=('MIN', 'MAX'), help='clothing items per mosaic')
    p.add_argument('--threshold', type=nonnegative_int, default=32,
                   help='pixels above this gray value get the item\'s class, others background')
    p.add_argument('--seed', type=int, default=0, help='seed of the item choice and placement')
    p.add_argument('--data-root', default=None,
                   help='Fashion-MNIST IDX folder (default: the Debian package\'s)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from block_relu_plugin.datasets.fashion_mosaic import MOSAIC_PALETTE, FashionMosaicDataset
    from block_relu_plugin.datasets.idx import FASHION_MNIST_ROOT
    ds = FashionMosaicDataset(data_root=args.data_root or FASHION_MNIST_ROOT, split=args.split,
                              num_mosaics=args.num, canvas_size=tuple(args.canvas_size),
                              num_items=tuple(args.num_items), threshold=args.threshold,
                              seed=args.seed)
    img_dir = os.path.join(args.out_dir, 'img', args.split)
    ann_dir = os.path.join(args.out_dir, 'ann', args.split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    palette = np.array(MOSAIC_PALETTE, np.uint8)
    rows = []
    for i in range(len(ds)):
        canvas, seg, _ = ds.mosaic(i)
        Image.fromarray(canvas).save(os.path.join(img_dir, f'{i:06d}.png'))
        Image.fromarray(seg).save(os.path.join(ann_dir, f'{i:06d}.png'))
        if len(rows) < 8:
            rows.append(np.concatenate([np.repeat(canvas[..., None], 3, 2), palette[seg]], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(
        os.path.join(args.out_dir, f'preview_{args.split}.png'))
    print(f'wrote {len(ds)} mosaics to {img_dir} and {ann_dir}')


if __name__ == '__main__':
    run_cli(main, 'fashion_mosaic_export.py')
