"""The whole method on real data in one command (resumable): see README "Main job".

    python tools/run_main_job.py                       # Fashion-MNIST classification demo
    python tools/run_main_job.py --task fashion_mosaic # segmentation demo
    python tools/run_main_job.py --task CONFIG         # a paper task (needs its dataset)
"""
import argparse

from block_relu_plugin.pipeline.main_job import run_main_job, task_from_args


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', default='fashion_mnist',
                        help='fashion_mnist (default), fashion_mosaic, or a config file')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/main_job/<task>')
    parser.add_argument('--budgets', type=float, nargs='+', help='DReLU budgets, e.g. 0.03 0.06')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    args = parser.parse_args()
    task = task_from_args(args.task, args.budgets)
    name = args.task if '/' not in args.task else args.task.rsplit('/', 1)[-1][:-3]
    run_main_job(task, args.work_dir or f'work_dirs/main_job/{name}', args.threads)


if __name__ == '__main__':
    main()
