"""Benchmark the multiple-choice knapsack solvers on network-shaped instances.

(a) ResNet18 (CIFAR stem) at 32x32, 6 % budget: ``solve_exact`` against the
    paper's dense dynamic program ``solve_dense`` in the same run; both must
    reach the same objective, and the exact solver should be >= 50x faster.
(b) ResNet50 at 224x224, 6 % budget: ``solve_exact`` alone; targets <= 5 s
    and <= 1 GB peak traced memory.

Distortions are synthetic: per channel a log-normal scale times a power of
the log of the patch area (0 for the plain ReLU, largest for identity), with
multiplicative noise so that the per-channel curves are not convex.

Usage:
    PYTHONPATH=. python benchmarks/knapsack.py --seed 0
"""
import argparse
import tracemalloc
from typing import List, Tuple

import numpy as np

from block_relu_plugin.budget.candidates import default_candidates
from block_relu_plugin.budget.knapsack import solve_dense, solve_exact
from block_relu_plugin.layers.block_relu import num_drelus

# (channels, map side) per ReLU site.
Sites = List[Tuple[int, int]]


def resnet18_cifar_sites() -> Sites:
    """Stem and 4 stages of 2 basic blocks (2 sites each) on 32x32 inputs."""
    sites = [(64, 32)]
    for width, side in ((64, 32), (128, 16), (256, 8), (512, 4)):
        sites += [(width, side)] * 4
    return sites


def resnet50_sites() -> Sites:
    """Stem and bottlenecks on 224x224 inputs, stride on conv2 (style='pytorch').

    The first block of stages 2-4 runs its first ReLU at the input resolution.
    """
    sites = [(64, 112)]
    side = 56
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        out_side = side if stage == 0 else side // 2
        for block in range(blocks):
            sites += [(width, side if block == 0 else out_side),
                      (width, out_side), (4 * width, out_side)]
        side = out_side
    return sites


def build_instance(sites: Sites, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, int]:
    """Padded ``(costs, distortions)`` over all channels, and the ReLU count."""
    blocks = []
    for channels, side in sites:
        cand = default_candidates(side, side)
        cost = num_drelus(cand, side, side)
        area = side * side
        log_area = np.log(area / np.maximum(cost, 1))  # 0 for the plain ReLU
        scale = np.exp(rng.normal(0.0, 1.0) + rng.normal(0.0, 1.5, (channels, 1)))
        power = rng.uniform(1.0, 2.0, (channels, 1))
        dist = scale * log_area ** power * np.exp(rng.normal(0.0, 0.2, (channels, len(cost))))
        identity = cost == 0
        dist[:, identity] = dist.max(axis=1, keepdims=True) * (
            1 + rng.exponential(0.5, (channels, 1)))
        blocks.append((np.broadcast_to(cost, dist.shape), dist))
    width = max(c.shape[1] for c, _ in blocks)
    costs = np.concatenate([np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c, _ in blocks])
    dists = np.concatenate([np.pad(d, ((0, 0), (0, width - d.shape[1])),
                                   constant_values=np.inf) for _, d in blocks])
    relus = sum(channels * side * side for channels, side in sites)
    return costs.astype(np.int64), dists, relus


def report(name: str, value: float, target: str, passed: bool) -> None:
    print(f'{name}: {value:.3g} (target {target}) {"PASS" if passed else "FAIL"}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--fraction', type=float, default=0.06,
                        help='budget as a fraction of the ReLU count')
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    costs, dists, relus = build_instance(resnet18_cifar_sites(), rng)
    budget = int(args.fraction * relus)
    print(f'ResNet18-CIFAR: {costs.shape[0]} channels, {relus} ReLUs, budget {budget}')
    exact = solve_exact(costs, dists, budget)
    dense = solve_dense(costs, dists, budget)
    agree = abs(exact.objective - dense.objective) <= 1e-9 * abs(dense.objective)
    ratio = dense.seconds / exact.seconds
    print(f'  exact {exact.seconds:.3f} s objective {exact.objective:.10g} cost {exact.cost} '
          f'(LP bound {exact.lower_bound:.10g})')
    print(f'  dense {dense.seconds:.3f} s objective {dense.objective:.10g} cost {dense.cost}')

    costs, dists, relus = build_instance(resnet50_sites(), rng)
    budget = int(args.fraction * relus)
    print(f'ResNet50-ImageNet: {costs.shape[0]} channels, {relus} ReLUs, budget {budget}')
    tracemalloc.start()
    big = solve_exact(costs, dists, budget)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f'  exact {big.seconds:.3f} s objective {big.objective:.10g} cost {big.cost} '
          f'(LP bound {big.lower_bound:.10g})')

    report('R18 exact == dense objective (relative difference)',
           abs(exact.objective - dense.objective) / abs(dense.objective), '<= 1e-9', agree)
    report('R18 dense / exact time ratio', ratio, '>= 50', ratio >= 50)
    report('R50 ReLU count', relus, '== 9608704', relus == 9_608_704)
    report('R50 exact seconds', big.seconds, '<= 5', big.seconds <= 5)
    report('R50 exact peak traced memory (GB)', peak / 2**30, '<= 1', peak <= 2**30)


if __name__ == '__main__':
    main()
