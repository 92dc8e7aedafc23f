"""Choosing patch sizes under a budget (METHOD.md, "Choosing patch sizes under a budget").

- :mod:`.candidates`: candidate patch sizes per site, equal-cost pruning.
- :mod:`.distortion`: channel distortions, the paper's simulation (``exact``),
  resumable and distributed extraction into a distortion directory.
- :mod:`.sketch`: the same distortions to first order in one forward and a
  few backward passes per batch (``sketch``), and its check against ``exact``.
- :mod:`.knapsack`: the multiple-choice knapsack solvers.
- :mod:`.budget_spec`: the budget forms (``0.06``, ``'6%'``, ``'drelus=N'``,
  ``'bytes=20MB'``, ``'online_bytes=...'``, ``',bits=16'``) and their costs.
- :mod:`.solve`: distortion directory + budget -> :class:`BlockReLUSpec`.
- :mod:`.plots`: distortion curves and patch-size maps.
"""
from .budget_spec import Budget, parse_budget
from .candidates import default_candidates, prune_equal_cost
from .distortion import (Distortion, DistortionError, distortion_fingerprint, exact_distortion,
                         extract_distortion, find_expansion_point, load_distortion)
from .knapsack import BudgetError, KnapsackSolution, solve_dense, solve_exact
from .sketch import rank_agreement, sketch_distortion, validate_sketch
from .solve import budget_drelus, cached_budget_spec, solve_budget, solve_uniform, spec_cost

__all__ = [
    'Budget', 'parse_budget', 'spec_cost', 'default_candidates', 'prune_equal_cost',
    'Distortion', 'DistortionError',
    'distortion_fingerprint', 'exact_distortion', 'extract_distortion', 'find_expansion_point',
    'load_distortion', 'BudgetError', 'KnapsackSolution', 'solve_dense', 'solve_exact',
    'rank_agreement', 'sketch_distortion', 'validate_sketch', 'budget_drelus',
    'cached_budget_spec', 'solve_budget', 'solve_uniform'
]
