import copy
import functools

import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from .block_relu_cfg import apply_block_relu_cfg
from .distill import Distiller, check_distill_cfg, teacher_block_relu_cfg


@MODELS.register_module()
class BlockReLUImageClassifier(ImageClassifier):
    """mmpretrain ``ImageClassifier`` converted to Block-ReLU while it is built.

    Args:
        block_relu_cfg (dict, optional): see :mod:`block_relu_plugin.models.block_relu_cfg`.
        distill_cfg (dict, optional): distillation from the all-ReLU network while
            training, see :mod:`block_relu_plugin.models.distill`.
        **kwargs: the arguments of ``ImageClassifier``.

    The state-dict layout equals the plain classifier's, so checkpoints load
    in both directions (with or without ``distill_cfg``).
    """

    def __init__(self, *args, block_relu_cfg=None, distill_cfg=None, **kwargs):
        distill_cfg = check_distill_cfg(distill_cfg)
        # Copied before the base class edits them (it fills in defaults in place).
        teacher_args = copy.deepcopy((args, kwargs)) if distill_cfg else None
        super().__init__(*args, **kwargs)
        self.block_relu_cfg = block_relu_cfg
        apply_block_relu_cfg(self, block_relu_cfg)
        # A plain object, not a submodule: the teacher stays out of parameters(),
        # the optimizer and state_dict().
        self.distiller = None
        if distill_cfg:
            targs, tkwargs = teacher_args
            tbrc = teacher_block_relu_cfg(block_relu_cfg)
            self.distiller = Distiller(distill_cfg, functools.partial(
                BlockReLUImageClassifier, *targs, block_relu_cfg=tbrc, **tkwargs))

    def loss(self, inputs, data_samples):
        if self.distiller is None:
            return super().loss(inputs, data_samples)
        logits = self.head(self.extract_feat(inputs))
        # The rest of ClsHead.loss, so the student's logits are computed once.
        losses = self.head._get_loss(logits, data_samples)
        teacher = self.distiller.get_teacher(inputs)
        with torch.no_grad():
            teacher_logits = teacher.head(teacher.extract_feat(inputs))
        losses['loss_distill'] = self.distiller.loss(logits, teacher_logits)
        return losses

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if getattr(self, 'distiller', None) is not None:
            self.distiller.apply(fn)  # .to() / .cuda() / .half() move the teacher too
        return self
