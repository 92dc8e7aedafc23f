"""Choosing patch sizes under a DReLU budget (METHOD.md, "Choosing patch sizes under a budget").

- :mod:`.candidates`: candidate patch sizes per site, equal-cost pruning.
- :mod:`.distortion`: channel distortions, the paper's simulation (``exact``),
  resumable and distributed extraction into a distortion directory.
- :mod:`.sketch`: the same distortions to first order in one forward and a
  few backward passes per batch (``sketch``), and its check against ``exact``.
- :mod:`.knapsack`: the multiple-choice knapsack solvers.
- :mod:`.solve`: distortion directory + budget -> :class:`BlockReLUSpec`.
- :mod:`.plots`: distortion curves and patch-size maps.
"""
from .candidates import default_candidates, prune_equal_cost
from .distortion import (Distortion, DistortionError, distortion_fingerprint, exact_distortion,
                         extract_distortion, find_expansion_point, load_distortion)
from .knapsack import BudgetError, KnapsackSolution, solve_dense, solve_exact
from .sketch import rank_agreement, sketch_distortion, validate_sketch
from .solve import budget_drelus, cached_budget_spec, solve_budget, solve_uniform

__all__ = [
    'default_candidates', 'prune_equal_cost', 'Distortion', 'DistortionError',
    'distortion_fingerprint', 'exact_distortion', 'extract_distortion', 'find_expansion_point',
    'load_distortion', 'BudgetError', 'KnapsackSolution', 'solve_dense', 'solve_exact',
    'rank_agreement', 'sketch_distortion', 'validate_sketch', 'budget_drelus',
    'cached_budget_spec', 'solve_budget', 'solve_uniform'
]
