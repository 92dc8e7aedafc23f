"""Predicted secure-inference bytes of a config's model, per layer and in total.

Walks the compiled network with shape-only tensors and sums the protocol cost
formulas of ``block_relu_plugin.mpc.cost``: ``ours`` (this runtime; equals
what the parties' meters record) or ``reference`` (the authors' runtime).

Example:
    python tools/analysis/secure_cost.py CONFIG --spec spec.json --bits 16 --shape 32 32
    python tools/analysis/secure_cost.py CONFIG --protocol reference --pool-before-relu
"""
import argparse
import json
import sys

from block_relu_plugin.mpc.costmodel import predict_costs
from block_relu_plugin.utils.config import build_model, default_input_size, load_config


def compared_bits(text: str) -> int:
    """An argparse type: compared DReLU bits, an integer in 2..64."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer in 2..64, got {text!r}') from None
    if not 2 <= value <= 64:
        raise argparse.ArgumentTypeError(f'must be in 2..64, got {value}')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('--spec', help='Block-ReLU spec file (replaces the config\'s)')
    parser.add_argument('--bits', type=compared_bits, default=64,
                        help='compared bits of the Block-ReLU sites\' DReLUs, 2..64 (default '
                        '64, exact); bytes do not depend on the pre-shift, so no calibration '
                        'is needed here')
    parser.add_argument('--relu-bits', type=compared_bits, default=64,
                        help='compared bits of plain ReLU sites (default 64, exact)')
    parser.add_argument('--pool-bits', type=compared_bits, default=64,
                        help='compared bits of MaxPool sites (default 64, exact)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: from the config)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--protocol', choices=('ours', 'reference'), default='ours')
    parser.add_argument('--pool-before-relu', action='store_true',
                        help='run a MaxPool before the ReLU feeding it (authors\' R50 baseline)')
    parser.add_argument('--top', type=int, help='print only the N most expensive layers')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if min(args.bits, args.relu_bits, args.pool_bits) < 64:
        print('note: bytes at fewer than 64 compared bits do not depend on the pre-shift; '
              'a secure run at these bits needs a calibration (block_relu_plugin.mpc.calibrate) '
              'to pick each site\'s shift', file=sys.stderr)
    cfg = load_config(args.config)
    shape = tuple(args.shape) if args.shape else default_input_size(cfg)
    model = build_model(cfg, spec=args.spec)
    report = predict_costs(model, shape, protocol=args.protocol, batch_size=args.batch_size,
                           bits=args.bits, relu_bits=args.relu_bits, pool_bits=args.pool_bits,
                           pool_before_relu=args.pool_before_relu)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.format(top=args.top))


if __name__ == '__main__':
    main()
