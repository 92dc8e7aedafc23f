"""Solve patch sizes under a budget from a distortion directory and write a spec.

    python tools/solve_budget.py --distortion DIR --budget 0.06 --out SPEC.json \\
        [--bits 16] [--solver exact|dense|uniform] [--candidates paper|all_pairs] \\
        [--plots PLOT_DIR]

--budget forms: 0.06 (a fraction of the ReLUs, in (0, 1]), 6% (percent),
drelus=33423 (DReLUs per image), bytes=20MB (bytes per image of the ReLU
sites, online + offline; units B, kB, MB, GB, KiB, MiB, GiB or a plain number
such as 20e6), online_bytes=20MB (online only). A bare number above 1 is
refused. Byte budgets assume --bits compared bits per DReLU (or ',bits=16'
inside the budget; default 64): run secure inference with the same --bits.
--candidates restricts the choice to one candidate set (default: every measured
candidate); e.g. extract once with --candidates paper+all_pairs, solve with either.
"""
import argparse
import os

from block_relu_plugin.budget.budget_spec import BudgetError, check_bits, parse_budget
from block_relu_plugin.budget.solve import SOLVERS, solve_budget
from block_relu_plugin.utils.cli import ArgumentParser, run_cli


def _budget(text):
    try:
        parse_budget(text)  # checked early; read again with --bits below
        return text
    except BudgetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bits(text):
    try:
        return check_bits(text)
    except BudgetError:
        raise argparse.ArgumentTypeError(f'--bits must be a whole number in 2..64, '
                                         f'got {text!r}') from None


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('--distortion', required=True, help='distortion directory')
    parser.add_argument('--budget', type=_budget, required=True,
                        help="0.06, 6%%, drelus=33423, bytes=20MB or online_bytes=20MB "
                        '(forms above; a bare number above 1 is refused)')
    parser.add_argument('--bits', type=_bits, default=None,
                        help='compared bits per DReLU that byte budgets assume '
                        '(default 64; DReLU budgets ignore it)')
    parser.add_argument('--out', required=True, help='spec file to write')
    parser.add_argument('--solver', choices=SOLVERS, default='exact',
                        help='exact and dense reach the same optimum; uniform: one '
                        'patch size everywhere')
    parser.add_argument('--candidates', help='candidate set to choose from (paper, all_pairs, '
                        "or a '+' union); default: every measured candidate")
    parser.add_argument('--plots', help='directory for distortion_curves.png and patch_sizes.png '
                        '(default: no plots)')
    args = parser.parse_args(argv)
    try:  # a byte budget naming other bits than --bits: refused before any work
        args.budget = parse_budget(args.budget, args.bits)
    except BudgetError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    from block_relu_plugin.budget.distortion import load_distortion
    # user errors (missing directory, infeasible budget, unmeasured set): one line (run_cli)
    distortion = load_distortion(args.distortion)
    spec = solve_budget(distortion, args.budget, args.solver, args.candidates)
    spec.save(args.out)
    m = spec.metadata
    if 'budget_bytes' in m:
        spent = (f'{m["bytes"]:,} of {m["budget_bytes"]:,} budgeted bytes per image '
                 f'({m["bytes_phase"]}, bits={m["bits"]}), {m["drelus"]:,} DReLUs')
    else:
        spent = f'{m["drelus"]:,} of {m["budget_drelus"]:,} budgeted DReLUs'
    print(f'wrote {args.out}: {spent} ({100 * m["drelus"] / m["relus"]:.2f} % of '
          f'{m["relus"]:,} ReLUs), objective {m["objective"]}, lower bound '
          f'{m["lower_bound"]}, solver {m["solver"]}')
    if args.plots:
        from block_relu_plugin.budget.plots import plot_distortion_curves, plot_patch_map
        curves = os.path.join(args.plots, 'distortion_curves.png')
        patches = os.path.join(args.plots, 'patch_sizes.png')
        print(f'wrote {plot_distortion_curves(distortion, curves)}')
        print(f'wrote {plot_patch_map(spec, distortion.sites, patches)}')


if __name__ == '__main__':
    run_cli(main, 'solve_budget.py')
