"""Secure 3-party inference of a config's model on its test data, all parties local.

Starts the client, server and helper as separate processes on this machine
(mutual TLS over 127.0.0.1), runs the first --num-images test images (the
test dataloader's dataset through its pipeline and the model's data
preprocessor, as the stock test tool prepares them; or --images files) and
reports accuracy or mIoU against the real labels, next to the plaintext
model's metric on the same images through the config's ordinary test path
(the stock tools/test.py) and, with --full-test, on the whole test set; then
agreement with the plaintext model, bytes (online, offline and their sum per
image; the masked weights once per session; per party) and the client's time
per image. Below 64 compared bits (--bits, --relu-bits, --pool-bits) every
comparison site gets its shift from the largest value it compares on
--calibration-images training images, times --margin; the report lists them.
Progress (images done, elapsed, left) goes to stderr.

Example:
    python tools/secure_infer.py CONFIG CHECKPOINT --spec spec.json --bits 16 --num-images 10
"""
import json
import os
import sys

from block_relu_plugin.utils.cli import (ArgumentParser, compared_bits, check_files,
                                         margin, positive_int, run_cli)


def parse_args(argv=None):
    """The options, every one checked here: nothing starts before they are valid."""
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('checkpoint',
                        help='model weights (used by the server party only)')
    parser.add_argument('--spec',
                        help='Block-ReLU spec file (default: the config\'s)')
    parser.add_argument('--bits', type=compared_bits, default=64,
                        help='compared bits of the Block-ReLU sites\' DReLUs, 2..64 (64: exact)')
    parser.add_argument('--relu-bits', type=compared_bits, default=64,
                        help='compared bits of plain ReLU sites, 2..64 (64: exact)')
    parser.add_argument('--pool-bits', type=compared_bits, default=64,
                        help='compared bits of MaxPool comparisons, 2..64 (64: exact)')
    parser.add_argument('--num-images', type=positive_int, default=10,
                        help='the first N test images (or of the --images files)')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='images per protocol run')
    parser.add_argument('--images', nargs='+', metavar='IMAGE',
                        help='image files instead of the test dataset (no labels: agreement '
                        'and costs only)')
    parser.add_argument('--calibration-images', type=positive_int, default=256,
                        help='training images that calibrate the DReLU shifts when a --*bits '
                        'is below 64')
    parser.add_argument('--margin', type=margin, default=4.0,
                        help='compared range / calibrated range per site (>= 1)')
    parser.add_argument('--full-test', action='store_true',
                        help='also run the stock test on the whole test set')
    parser.add_argument('--threads', type=positive_int, default=1,
                        help='torch threads per party')
    parser.add_argument('--json-out', help='write the full report here')
    args = parser.parse_args(argv)
    check_files(parser, args, 'config', 'checkpoint', 'spec', 'images')
    if args.json_out and not os.path.isdir(os.path.dirname(args.json_out) or '.'):
        parser.error(f'--json-out: no such directory: {os.path.dirname(args.json_out)}')
    return args


def summary(res) -> dict:
    """The JSON-able part of a :func:`secure_inference` result."""
    keep = ('task', 'num_images', 'batch_size', 'options', 'agreement', 'max_logit_error',
            'accuracy', 'plain_accuracy', 'miou', 'plain_miou', 'metric', 'bytes', 'layers',
            'rounds', 'time', 'predicted_equal', 'calibration', 'margin')
    out = {k: res[k] for k in keep if k in res}
    out['predictions'] = [p.tolist() for p in res['predictions']] \
        if res['task'] == 'classification' else None
    out['predicted'] = res['predicted'].to_dict()['total']
    return out


def format_report(res) -> str:
    """The lines :func:`main` prints."""
    b, t = res['bytes'], res['time']
    pi = b['per_image']
    options = {k: v for k, v in res['options'].items()
               if k not in ('site_shifts', 'site_ranges')}  # per site: the calibration table
    lines = [f'{res["num_images"]} image(s), task {res["task"]}, options {options}']
    m = res.get('metric')
    if m:
        def fmt(v):
            return '-' if v is None else f'{v:.2f}'
        lines.append(f'{m["name"]} against the labels: secure {fmt(m["secure"])} | plaintext, '
                     f'same images, config\'s test path {fmt(m["stock"])} | plaintext, same '
                     f'input tensors {fmt(m["plaintext"])} | test set {fmt(m["test_set"])}')
        if m['stock'] is not None and abs(m['stock'] - m['plaintext']) > 0.01:
            lines.append('WARNING: the plaintext metric differs between the config\'s test path '
                         'and the inputs fed to secure inference (preprocessing mismatch)')
    if res.get('calibration'):
        from block_relu_plugin.mpc.calibrate import format_report as calibration_table
        lines.append(f'approximate DReLUs calibrated on training images, margin '
                     f'{res["margin"]:g}:')
        lines.append(calibration_table(res['calibration']))
    lines.append(f'agreement with the plaintext model: {res["agreement"] * 100:.2f} % '
                 f'(max |logit error| {res["max_logit_error"]:.4g})')
    lines.append(f'MB per image: online {pi["online"] / 1e6:.3f} + offline '
                 f'{pi["offline"] / 1e6:.3f} = {pi["online_offline"] / 1e6:.3f}; once per '
                 f'session: masked weights {b["weights"] / 1e6:.3f} MB, key agreement '
                 f'{b["handshake"]:,} B')
    for role, parts in b['per_party'].items():
        lines.append(f'  {role}: ' + ', '.join(f'{k} {v:,}' for k, v in parts.items()))
    lines.append(f'time per image (client): online {t["online_per_image"]:.3f} s, offline '
                 f'{t["offline_per_image"]:.3f} s; cost model matches meters: '
                 f'{res["predicted_equal"]}')
    lines.append('(three processes on this machine over loopback)')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    # heavy imports after the options are checked: a bad option answers at once
    from block_relu_plugin.mpc.infer import load_test_inputs, secure_inference
    from block_relu_plugin.utils.config import build_model, load_config
    cfg = load_config(args.config)
    model = build_model(cfg, spec=args.spec, checkpoint=args.checkpoint)
    indices = None if args.images else list(range(args.num_images))
    images, labels = load_test_inputs(cfg, model, args.num_images, args.images, indices)
    if indices is not None:
        indices = indices[:images.shape[0]]  # a test set smaller than --num-images
    test_set = None
    if args.full_test:
        from block_relu_plugin.utils.stock_test import stock_test
        name = 'mIoU' if cfg.get('default_scope') == 'mmseg' else 'accuracy/top1'
        test_set = stock_test(cfg, args.checkpoint, args.spec).get(name)
    calibration = None
    if min(args.bits, args.relu_bits, args.pool_bits) < 64:
        from block_relu_plugin.budget.distortion import load_samples
        calibration, _ = load_samples(cfg, model, args.calibration_images, seed=0,
                                      shape=tuple(images.shape[2:]))
    print(f'secure_infer.py: {images.shape[0]} image(s) of {tuple(images.shape[1:])}; '
          'compiling and starting the client, server and helper', file=sys.stderr, flush=True)
    res = secure_inference(cfg, args.checkpoint, spec=args.spec, images=images, labels=labels,
                           bits=args.bits, relu_bits=args.relu_bits, pool_bits=args.pool_bits,
                           batch_size=args.batch_size, party_threads=args.threads,
                           test_indices=indices if labels is not None else None,
                           test_set_metric=test_set, calibration_images=calibration,
                           margin=args.margin, progress=True)
    print(format_report(res))
    sys.stdout.flush()
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(summary(res), f, indent=1)


if __name__ == '__main__':
    run_cli(main, 'secure_infer.py')
