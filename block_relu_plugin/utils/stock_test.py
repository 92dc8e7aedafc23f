"""The config's ordinary test path (what the stock ``tools/test.py`` computes), on chosen images.

The plugin's own paths (secure inference, its plaintext reference) are
checked against this one: mmengine's Runner builds the model, the test
dataloader and the evaluator from the config and runs ``Runner.test()``,
exactly as the codebases' ``tools/test.py`` does. Only the test dataset is
restricted to the given indices (``BaseDataset(indices=...)``).
"""
import copy
import os
import tempfile
import uuid
from typing import Dict, List, Optional, Sequence, Union

from mmengine.config import Config

from .config import load_config, model_config


def subset_indices(dataset_cfg: dict, indices: Sequence[int]) -> List[int]:
    """Dataset ``indices`` as the value of ``dataset_cfg``'s own ``indices=`` argument.

    A dataset config that already takes a subset (``indices=K`` or a list) has
    ``indices`` counted within that subset.
    """
    indices = [int(i) for i in indices]
    if any(i < 0 for i in indices):
        raise ValueError(f'negative test image index in {indices[:10]}')
    own = dataset_cfg.get('indices')
    if own is None:
        return indices
    if isinstance(own, int):
        if own < 0:
            raise ValueError(f'test dataset indices={own}: a negative subset is not supported')
        own = list(range(own))
    own = list(own)
    if indices and max(indices) >= len(own):
        raise ValueError(f'test image index {max(indices)} is outside the test dataset\'s '
                         f'{len(own)}-image subset')
    return [int(own[i]) for i in indices]


def stock_test(config: Union[str, Config], checkpoint: Optional[str] = None,
               spec: Optional[str] = None, indices: Optional[Sequence[int]] = None
               ) -> Dict[str, float]:
    """Metrics of the config's test loop (``Runner.test()``), optionally on a subset.

    Args:
        config: Config or its path.
        checkpoint: Weights (``load_from``); None tests the initial weights.
        spec: A spec file replacing the config's (as :func:`.config.build_model`).
        indices: Test dataset indices to evaluate (default: all).

    Returns:
        The evaluator's metrics, e.g. ``{'accuracy/top1': 92.0}`` or
        ``{'aAcc': ..., 'mIoU': ..., 'mAcc': ...}``.
    """
    from mmengine.runner import Runner
    cfg = copy.deepcopy(load_config(config))
    cfg.model = model_config(cfg, spec)
    if indices is not None:
        if not len(indices):
            raise ValueError('no test image indices given')
        dataset = cfg.test_dataloader.dataset
        dataset['indices'] = subset_indices(dataset, indices)
    cfg.load_from = checkpoint
    cfg.resume = False
    cfg.launcher = 'none'
    # A fresh name per call: the Runner's logger and visualizer are named
    # instances, and a second run in the same second would reuse the first's.
    cfg.experiment_name = f'stock_test_{uuid.uuid4().hex[:8]}'
    with tempfile.TemporaryDirectory(prefix='stock_test_') as work_dir:
        cfg.work_dir = os.path.join(work_dir, 'work')
        runner = Runner.from_cfg(cfg)
        metrics = runner.test()
    return {k: float(v) for k, v in metrics.items()}
