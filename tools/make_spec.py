"""Write the all-ReLU spec (identity conversion) or a uniform spec for a config's model.

Examples:
    python tools/make_spec.py CONFIG --out all_relu.json
    python tools/make_spec.py CONFIG --uniform 2 2 --out uniform_2x2.json
"""
from block_relu_plugin.conversion import find_relu_sites
from block_relu_plugin.models.block_relu_cfg import set_default_input_size
from block_relu_plugin.spec import BlockReLUSpec
from block_relu_plugin.utils.cli import (ArgumentParser, check_files, nonnegative_int,
                                         positive_int, run_cli)
from block_relu_plugin.utils.config import build_model, default_input_size, load_config


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('--out', required=True, help='spec file to write')
    parser.add_argument('--uniform', type=nonnegative_int, nargs=2, metavar=('BH', 'BW'),
                        help='one patch size for every channel (default: 1 1, all ReLU; '
                        '0 1: identity, 1 0: zero)')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input size recorded in the spec (default: from the config)')
    args = parser.parse_args(argv)
    check_files(parser, args, 'config')
    return args


def make_spec(args) -> str:
    cfg = load_config(args.config)
    shape = tuple(args.shape) if args.shape else default_input_size(cfg)
    # The plain architecture: a spec describes sites, not a previous spec.
    model_cfg = cfg.model
    if 'block_relu_cfg' in model_cfg:
        brc = dict(model_cfg.get('block_relu_cfg') or {})
        for key in ('spec', 'budget', 'distortion', 'solver'):
            brc.pop(key, None)
        brc.setdefault('input_size', list(shape))
        model_cfg.block_relu_cfg = brc
    set_default_input_size(cfg)
    sites = find_relu_sites(build_model(cfg), shape)  # NoSitesError: never an empty spec
    block = tuple(args.uniform) if args.uniform else (1, 1)
    spec = BlockReLUSpec.uniform(sites, block, config=args.config, input_size=list(shape))
    spec.save(args.out)
    return (f'wrote {args.out}: {len(sites)} sites, {spec.metadata["drelus"]:,} DReLUs '
            f'of {spec.metadata["relus"]:,} ReLUs')


def main(argv=None):
    print(make_spec(parse_args(argv)))


if __name__ == '__main__':
    run_cli(main, 'make_spec.py')
