"""Predicted secure-inference bytes of a config's model, per layer and in total.

Walks the compiled network with shape-only tensors and sums the protocol cost
formulas of ``block_relu_plugin.mpc.cost``: ``ours`` (this runtime; equals
what the parties' meters record) or ``reference`` (the authors' runtime).

Example:
    python tools/analysis/secure_cost.py CONFIG --spec spec.json --bits 16 --shape 32 32
    python tools/analysis/secure_cost.py CONFIG --protocol reference --pool-before-relu
    python tools/analysis/secure_cost.py CONFIG --shape 32 32 --steps   # where the bytes go
"""
import json
import sys

from block_relu_plugin.utils.cli import (ArgumentParser, compared_bits, check_files,
                                         positive_int, run_cli)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('--spec',
                        help='Block-ReLU spec file (default: the config\'s)')
    parser.add_argument('--bits', type=compared_bits, default=64,
                        help='compared bits of the Block-ReLU sites\' DReLUs, 2..64 (64: '
                        'exact); bytes do not depend on the pre-shift, so no calibration '
                        'is needed here')
    parser.add_argument('--relu-bits', type=compared_bits, default=64,
                        help='compared bits of plain ReLU sites, 2..64 (64: exact)')
    parser.add_argument('--pool-bits', type=compared_bits, default=64,
                        help='compared bits of MaxPool sites, 2..64 (64: exact)')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: from the config)')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='images per protocol run')
    parser.add_argument('--protocol', choices=('ours', 'reference'), default='ours',
                        help="cost formulas: ours (this runtime, what its meters record) or "
                        "reference (the authors' runtime)")
    parser.add_argument('--pool-before-relu', action='store_true',
                        help='run a MaxPool before the ReLU feeding it (authors\' R50 baseline)')
    parser.add_argument('--top', type=positive_int,
                        help='print only the N most expensive layers (default: all)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    parser.add_argument('--steps', action='store_true',
                        help='print the bytes per protocol step and link (where they go) '
                        'instead of per layer')
    args = parser.parse_args(argv)
    check_files(parser, args, 'config', 'spec')
    return args


def main(argv=None):
    args = parse_args(argv)
    from block_relu_plugin.mpc.costmodel import predict_costs
    from block_relu_plugin.utils.config import build_model, default_input_size, load_config
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
        print(report.format_steps() if args.steps else report.format(top=args.top))


if __name__ == '__main__':
    run_cli(main, 'secure_cost.py')
