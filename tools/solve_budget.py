"""Solve patch sizes under a DReLU budget from a distortion directory and write a spec.

    python tools/solve_budget.py --distortion DIR --budget 0.06 --out SPEC.json \\
        [--solver exact|dense|uniform] [--plots PLOT_DIR]

--budget is a fraction of the all-ReLU count (<= 1) or a DReLU count (> 1).
"""
import argparse
import os

from block_relu_plugin.budget.distortion import load_distortion
from block_relu_plugin.budget.solve import SOLVERS, solve_budget


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--distortion', required=True, help='distortion directory')
    parser.add_argument('--budget', type=float, required=True,
                        help='fraction of the ReLUs (<= 1) or DReLU count (> 1)')
    parser.add_argument('--out', required=True, help='spec file to write')
    parser.add_argument('--solver', choices=SOLVERS, default='exact')
    parser.add_argument('--plots', help='directory for distortion_curves.png and patch_sizes.png')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    budget = int(args.budget) if args.budget > 1 and args.budget.is_integer() else args.budget
    distortion = load_distortion(args.distortion)
    spec = solve_budget(distortion, budget, args.solver)
    spec.save(args.out)
    m = spec.metadata
    print(f'wrote {args.out}: {m["drelus"]:,} of {m["budget_drelus"]:,} budgeted DReLUs '
          f'({100 * m["drelus"] / m["relus"]:.2f} % of {m["relus"]:,} ReLUs), '
          f'objective {m["objective"]}, lower bound {m["lower_bound"]}, solver {m["solver"]}')
    if args.plots:
        from block_relu_plugin.budget.plots import plot_distortion_curves, plot_patch_map
        curves = os.path.join(args.plots, 'distortion_curves.png')
        patches = os.path.join(args.plots, 'patch_sizes.png')
        print(f'wrote {plot_distortion_curves(distortion, curves)}')
        print(f'wrote {plot_patch_map(spec, distortion.sites, patches)}')


if __name__ == '__main__':
    main()
