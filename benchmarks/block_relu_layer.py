"""BlockReLU layer speed: forward+backward against ReLU and a paper-style layer.

Prints, per ResNet18-CIFAR stage shape (batch 64, random mixed patch sizes):
BlockReLU / ReLU and paper-style / BlockReLU time ratios; then a whole
ResNet18-CIFAR training step with every site converted against the plain
network. Targets: <= 2x ReLU per stage, >= 3x faster than paper-style,
<= 1.2x for the training step. Ratios are measured in one run (medians of
interleaved repeats), so a loaded machine slows both sides alike.

    python benchmarks/block_relu_layer.py [--repeats 15] [--threads 2]
"""
import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from block_relu_plugin import BlockReLU, BlockReLUSpec, convert_block_relu, find_relu_sites
from block_relu_plugin.conversion import split_reused_relus

STAGES = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


class PaperStyleBlockReLU(nn.Module):
    """The authors' formulation: a loop over distinct patch sizes, avg-pool with
    ceil mode, threshold, nearest upsample, crop, multiply, scatter back."""

    def __init__(self, block_sizes):
        super().__init__()
        sizes = np.asarray(block_sizes)
        self.groups = [(tuple(int(v) for v in s),
                        torch.as_tensor(np.flatnonzero((sizes == s).all(1))))
                       for s in np.unique(sizes, axis=0)]

    def forward(self, x):
        out = x.clone()
        H, W = x.shape[2:]
        for (bh, bw), idx in self.groups:
            if (bh, bw) == (0, 1):
                continue
            if (bh, bw) == (1, 0):
                out[:, idx] = 0
                continue
            part = x[:, idx]
            mean = F.avg_pool2d(part, (bh, bw), stride=(bh, bw), ceil_mode=True)
            gate = (mean > 0).to(x.dtype)
            gate = gate.repeat_interleave(bh, dim=2).repeat_interleave(bw, dim=3)[:, :, :H, :W]
            out[:, idx] = part * gate.detach()
        return out


def random_sizes(rng, C, H, W):
    sides = [1, 2, 3, 4, 5, 6, 7, 8, H]
    sizes = np.stack([rng.choice(sides, C), rng.choice(sides, C)], 1).clip(max=[H, W])
    sizes[rng.random(C) < 0.1] = (0, 1)
    return sizes


def time_fwd_bwd(fn, x, grad):
    xi = x.detach().requires_grad_()
    t0 = time.perf_counter()
    fn(xi).backward(grad)
    return time.perf_counter() - t0


def compare(fns, args, repeats):
    """Median seconds per fn, with the fns interleaved in every repeat."""
    times = {name: [] for name in fns}
    for _ in range(2):  # warm-up: plans, allocator
        for name, fn in fns.items():
            fn(*args)
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn(*args))
    return {name: statistics.median(v) for name, v in times.items()}


def bench_stages(repeats):
    rng = np.random.default_rng(0)
    ok = True
    for C, H, W in STAGES:
        x = torch.randn(64, C, H, W)
        grad = torch.randn_like(x)
        sizes = random_sizes(rng, C, H, W)
        block, paper = BlockReLU(sizes), PaperStyleBlockReLU(sizes)
        assert torch.equal(block(x), paper(x)), 'paper-style layer disagrees'
        t = compare({'relu': lambda a, g: time_fwd_bwd(torch.relu, a, g),
                     'block': lambda a, g: time_fwd_bwd(block, a, g),
                     'paper': lambda a, g: time_fwd_bwd(paper, a, g)}, (x, grad), repeats)
        vs_relu, vs_paper = t['block'] / t['relu'], t['paper'] / t['block']
        ok &= vs_relu <= 2.0 and vs_paper >= 3.0
        print(f'stage {C}x{H}x{W}: relu {1e3 * t["relu"]:.2f} ms, block {1e3 * t["block"]:.2f} ms, '
              f'paper {1e3 * t["paper"]:.2f} ms | block/relu {vs_relu:.2f} (target <= 2.0), '
              f'paper/block {vs_paper:.2f} (target >= 3.0)')
    return ok


def bench_training_step(repeats):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='ImageClassifier',
                              backbone=dict(type='ResNet_CIFAR', depth=18),
                              neck=dict(type='GlobalAveragePooling'),
                              head=dict(type='LinearClsHead', num_classes=100, in_channels=512)))
    plain = split_reused_relus(plain)
    sites = find_relu_sites(plain, 32)
    rng = np.random.default_rng(1)
    spec = BlockReLUSpec({s.name: random_sizes(rng, s.channels, s.height, s.width)
                          for s in sites})
    converted = convert_block_relu(copy.deepcopy(plain), spec)
    x = torch.randn(64, 3, 32, 32)
    target = torch.randint(0, 100, (64, ))

    def step(model):
        def run(inputs, labels):
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(inputs, mode='tensor'), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - t0
        return run

    plain.train()
    converted.train()
    t = compare({'plain': step(plain), 'block': step(converted)}, (x, target), max(3, repeats // 3))
    ratio = t['block'] / t['plain']
    print(f'ResNet18-CIFAR training step (batch 64, {len(sites)} sites converted): plain '
          f'{t["plain"]:.3f} s, block {t["block"]:.3f} s | ratio {ratio:.2f} (target <= 1.2)')
    return ratio <= 1.2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ok = bench_stages(args.repeats)
    ok &= bench_training_step(args.repeats)
    print('ALL TARGETS MET' if ok else 'SOME TARGETS MISSED')


if __name__ == '__main__':
    main()
