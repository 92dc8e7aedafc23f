"""Extract the channel distortions of a config's network into a distortion directory.

Resumable: run the same command again after a stop. Distributed like the
OpenMMLab tools (each process takes its share of the work items):

    python tools/extract_distortion.py CONFIG CHECKPOINT --out DIR [--method exact|sketch]
    python -m torch.distributed.run --nproc_per_node=2 tools/extract_distortion.py \\
        CONFIG CHECKPOINT --out DIR --launcher pytorch

CHECKPOINT may be 'none' (initial weights, seeded by --seed).
"""
import json
import os

import torch

import block_relu_plugin  # noqa: F401  (registers the plugin)
from block_relu_plugin.budget.candidates import candidate_set, candidates_from_cfg
from block_relu_plugin.budget.distortion import (METHODS, build_plain_model, extract_distortion,
                                                 load_distortion, load_samples)
from block_relu_plugin.utils.cli import (ArgumentParser, check_files, nonnegative_int,
                                         positive_int, run_cli)
from block_relu_plugin.utils.config import default_input_size, load_config


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('config', help='mmpretrain or mmseg config')
    parser.add_argument('checkpoint', help="weights, or 'none' for the initial weights")
    parser.add_argument('--out', required=True, help='distortion directory')
    parser.add_argument('--method', choices=METHODS, default='exact',
                        help='exact: every candidate of every channel simulated; sketch: '
                        'first-order estimate from a few backward passes (budget/sketch.py)')
    parser.add_argument('--candidates', help="candidate set: paper, all_pairs or a '+' union "
                        '(default: the config\'s block_relu_cfg.candidates, else paper)')
    parser.add_argument('--num-samples', type=positive_int, default=512,
                        help='training samples (paper: 2048 CIFAR, 512 ImageNet, 48 ADE20K)')
    parser.add_argument('--batch-size', type=positive_int, default=8,
                        help='samples per forward')
    parser.add_argument('--forward-batch', type=positive_int, default=512,
                        help='exact: perturbed copies x samples per forward')
    parser.add_argument('--num-probes', type=positive_int, default=8,
                        help='sketch: probes per sample')
    parser.add_argument('--chunk-channels', type=positive_int, default=16,
                        help='channels per value file')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the sample choice, the probes and (checkpoint none) the '
                        'initial weights')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: from the config)')
    parser.add_argument('--validate-channels', type=nonnegative_int, default=0,
                        help='sketch: check against exact on this many channels per site')
    parser.add_argument('--max-items', type=positive_int,
                        help='stop after this many work items (default: all)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='pytorch: one share of the work items per torch.distributed '
                        'process')
    args = parser.parse_args(argv)
    check_files(parser, args, 'config')
    if args.checkpoint.lower() != 'none':
        check_files(parser, args, 'checkpoint')
    return args


def main(argv=None):
    args = parse_args(argv)
    device, rank = 'cuda' if torch.cuda.is_available() else 'cpu', 0
    if args.launcher == 'pytorch':
        import torch.distributed as dist
        dist.init_process_group('nccl' if device == 'cuda' else 'gloo')
        rank = dist.get_rank()
        if device == 'cuda':
            device = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
            torch.cuda.set_device(device)
    cfg = load_config(args.config)
    shape = tuple(args.shape) if args.shape else default_input_size(cfg)
    candidates = args.candidates or candidates_from_cfg(cfg)  # before build_plain_model drops it
    model = build_plain_model(cfg, args.checkpoint, device, args.seed)
    inputs, indices = load_samples(cfg, model, args.num_samples, args.seed, shape)
    info = dict(config=os.path.abspath(args.config), sample_indices=indices, candidates=candidates,
                checkpoint=(os.path.abspath(args.checkpoint)
                            if args.checkpoint.lower() != 'none' else None))
    done = extract_distortion(model, inputs, args.out, args.method, args.batch_size,
                              args.forward_batch, args.num_probes, args.chunk_channels,
                              args.seed, candidate_set(candidates), info=info,
                              max_items=args.max_items, progress=True)
    if rank == 0:
        print(f'{args.out}: {"complete" if done else "incomplete (run again to resume)"}')
    if done and args.method == 'sketch' and args.validate_channels > 0 and rank == 0:
        from block_relu_plugin.budget.sketch import validate_sketch
        report = validate_sketch(model, inputs, load_distortion(args.out), args.validate_channels,
                                 args.seed, args.batch_size, args.forward_batch, progress=True)
        for name, rho in report['sites'].items():
            flag = '  <- disagrees' if name in report['disagree'] else ''
            print(f'  {name:<48} spearman {rho:6.3f}{flag}')
        print(f'  pooled spearman {report["pooled"]:.3f}, per-site median {report["median"]:.3f}')
        with open(os.path.join(args.out, 'sketch_validation.json'), 'w') as f:
            json.dump({k: report[k] for k in ('sites', 'pooled', 'median', 'min', 'channels',
                                              'disagree')}, f, indent=1)


if __name__ == '__main__':
    run_cli(main, 'extract_distortion.py')
