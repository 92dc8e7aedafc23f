"""Count ReLUs and DReLUs per site of a config's model, optionally under a spec.

The model is built as every tool builds it, so a spec is checked against the
model's sites by model building itself (a missing or unknown site, or a wrong
channel count, is the same error here as in training and testing), and the
count is of the patch sizes the built model applies: the config's spec or
budget, or the --spec given.

Example:
    python tools/analysis/count_drelus.py configs/demo/resnet18-w16_fashion-mnist.py --spec spec.json
"""
import json

from block_relu_plugin.conversion import find_relu_sites
from block_relu_plugin.models.block_relu_cfg import set_default_input_size
from block_relu_plugin.spec import BlockReLUSpec, drelu_report, format_report
from block_relu_plugin.utils.cli import ArgumentParser, positive_int, run_cli
from block_relu_plugin.utils.config import build_model, default_input_size, load_config


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('--spec',
                        help="Block-ReLU spec file (default: the config's spec or budget, "
                             'else all ReLU)')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help="input size the maps are counted at (default: the config's "
                             'own input size)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    return parser.parse_args(argv)


def count_drelus(args) -> str:
    cfg = load_config(args.config)
    shape = tuple(args.shape) if args.shape else default_input_size(cfg)
    set_default_input_size(cfg)
    model = build_model(cfg, spec=args.spec)  # SpecError: the spec does not fit the model
    sites = find_relu_sites(model, shape)  # NoSitesError: nothing to count is an error
    report = drelu_report(sites, BlockReLUSpec.from_model(model, sites))
    report['input_size'] = list(shape)
    return json.dumps(report, indent=1) if args.json else format_report(report)


def main():
    print(count_drelus(parse_args()))


if __name__ == '__main__':
    run_cli(main)
