"""The whole method on real data in one command (resumable): see README "Main job".

    python tools/run_main_job.py                       # Fashion-MNIST classification demo
    python tools/run_main_job.py --task fashion_mosaic # segmentation demo
    python tools/run_main_job.py --task CONFIG         # a paper task (needs its dataset)
"""
import argparse

from block_relu_plugin.budget.budget_spec import BudgetError, parse_budget
from block_relu_plugin.pipeline.main_job import run_main_job, task_from_args
from block_relu_plugin.utils.cli import ArgumentParser, positive_int, run_cli


def _fraction(text: str) -> float:
    try:
        b = parse_budget(text)
    except BudgetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if b.kind != 'fraction':
        raise argparse.ArgumentTypeError('the main job compares DReLU fractions (0.06 or 6%); '
                                         'use tools/solve_budget.py for drelus=/bytes= budgets')
    return b.value


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('--task', default='fashion_mnist',
                        help='fashion_mnist, fashion_mosaic, or a config file')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/main_job/<task>')
    parser.add_argument('--budgets', type=_fraction, nargs='+',
                        help='DReLU budgets as fractions or percentages, e.g. 0.03 6%% '
                        '(default: the task\'s, 3 6 12 %% for fashion_mnist)')
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='torch threads (default: torch\'s)')
    parser.add_argument('--secure-images', type=positive_int, default=None,
                        help='test images run securely for the 6 %% knapsack network '
                        '(default: the task\'s, 500 for fashion_mnist)')
    parser.add_argument('--secure-images-other', type=positive_int, default=None,
                        help='test images run securely for every other network (default 100)')
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (('secure_images', args.secure_images),
                                   ('secure_images_other', args.secure_images_other))
                 if v is not None}
    task = task_from_args(args.task, args.budgets, **overrides)
    name = args.task if '/' not in args.task else args.task.rsplit('/', 1)[-1][:-3]
    run_main_job(task, args.work_dir or f'work_dirs/main_job/{name}', args.threads)


if __name__ == '__main__':
    run_cli(main, 'run_main_job.py')
