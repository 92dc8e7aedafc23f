"""The authors' segmentation lr schedule, which mmengine's stock schedulers only approximate.

The authors' mmcv 1.x configs use ``lr_config=dict(policy='poly', power=0.9, min_lr=1e-4,
warmup='linear', warmup_iters=1000, warmup_ratio=0.01)``: the lr is the poly curve (down to
``min_lr``) times a warmup factor. mmengine's ``LinearLR`` + ``PolyLR(eta_min=...)`` chain
instead (each rescales the value the other left), and the warmup's small values then meet
``eta_min``'s additive pull: the lr runs about 3 % high for most of a 20k-iteration run.
:class:`WarmupPolyLR` computes the product in closed form.

(The step schedules' ``min_lr`` needs no new scheduler: the configs express it exactly with
a second ``MultiStepLR`` whose gamma lands on the floor; see the ResNet configs.)
"""
from typing import Optional

from mmengine.optim import _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class WarmupPolyLR(_ParamScheduler):
    """Poly decay to ``eta_min`` with a linear warmup, as mmcv 1.x's poly ``lr_config``.

    At iteration ``t`` (counted from ``begin``), with ``T = end - begin`` and ``lr0`` the
    optimizer's initial lr::

        lr(t) = ((lr0 - eta_min) * (1 - t / T) ** power + eta_min) * w(t)
        w(t) = 1 - (1 - t / warmup_iters) * (1 - warmup_ratio)   if t < warmup_iters, else 1

    Args:
        optimizer: The optimizer or optimizer wrapper.
        eta_min (float): The floor of the poly curve (mmcv's ``min_lr``).
        power (float): The poly power.
        warmup_iters (int): Iterations of linear warmup (0: none).
        warmup_ratio (float): Warmup factor at iteration 0.
        begin (int): First iteration.
        end (int): Iteration after the last (the runner fills in ``max_iters``).
        last_step (int): For resuming without a state dict; -1 to start.
        by_epoch (bool): Must be False: the schedule is per iteration.
        verbose (bool): Print each update.

    Examples:
        >>> param_scheduler = [dict(type='WarmupPolyLR', eta_min=1e-4, power=0.9,
        ...                         warmup_iters=1000, warmup_ratio=0.01, end=20000)]
    """

    def __init__(self, optimizer, eta_min: float = 0., power: float = 1.,
                 warmup_iters: int = 0, warmup_ratio: float = 0.1, begin: int = 0,
                 end: Optional[int] = None, last_step: int = -1, by_epoch: bool = False,
                 verbose: bool = False):
        if by_epoch:
            raise ValueError('WarmupPolyLR is per iteration: set by_epoch=False')
        if end is None:
            raise ValueError('WarmupPolyLR needs end (the iteration after the last)')
        if warmup_iters < 0 or not 0 < warmup_ratio <= 1:
            raise ValueError(f'WarmupPolyLR needs warmup_iters >= 0 and 0 < warmup_ratio <= 1, '
                             f'got {warmup_iters} and {warmup_ratio}')
        self.eta_min = eta_min
        self.power = power
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.total_iters = end - begin
        super().__init__(optimizer, 'lr', begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    def _get_value(self):
        t = self.last_step
        factor = 1.
        if t < self.warmup_iters:
            factor = 1 - (1 - t / self.warmup_iters) * (1 - self.warmup_ratio)
        decay = (1 - t / self.total_iters) ** self.power
        return [((base - self.eta_min) * decay + self.eta_min) * factor
                for base in self.base_values]
