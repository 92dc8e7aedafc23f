"""Count ReLUs and DReLUs per site of a config's model, optionally under a spec.

Example:
    python tools/analysis/count_drelus.py configs/resnet18_cifar/... --spec spec.json --shape 32 32
"""
import argparse
import json
import sys

from block_relu_plugin.conversion import NoSitesError, SiteError, TraceError, find_relu_sites
from block_relu_plugin.models.block_relu_cfg import set_default_input_size
from block_relu_plugin.spec import BlockReLUSpec, SpecError, drelu_report, format_report
from block_relu_plugin.utils.config import build_model, default_input_size, load_config


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('--spec',
                        help="Block-ReLU spec file (default: the config's, else all ReLU)")
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: from the config)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    return parser.parse_args()


def count_drelus(args) -> str:
    cfg = load_config(args.config)
    shape = tuple(args.shape) if args.shape else default_input_size(cfg)
    set_default_input_size(cfg)
    model = build_model(cfg)
    sites = find_relu_sites(model, shape)  # NoSitesError: nothing to count is an error
    spec_path = args.spec or (cfg.model.get('block_relu_cfg') or {}).get('spec')
    spec = BlockReLUSpec.load(spec_path) if spec_path else None
    report = drelu_report(sites, spec)
    report['input_size'] = list(shape)
    return json.dumps(report, indent=1) if args.json else format_report(report)


def main():
    args = parse_args()
    try:
        print(count_drelus(args))
    except (NoSitesError, SiteError, TraceError, SpecError) as e:
        if args.debug:
            raise
        sys.exit(f'count_drelus.py: error: {e}')


if __name__ == '__main__':
    main()
