import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from .block_relu_cfg import BlockReLUModelMixin


@MODELS.register_module()
class BlockReLUImageClassifier(BlockReLUModelMixin, ImageClassifier):
    """mmpretrain ``ImageClassifier`` converted to Block-ReLU while it is built.

    Args:
        block_relu_cfg (dict, optional): see :mod:`block_relu_plugin.models.block_relu_cfg`.
        distill_cfg (dict, optional): distillation from the all-ReLU network while
            training, see :mod:`block_relu_plugin.models.distill`.
        **kwargs: the arguments of ``ImageClassifier``.

    The state-dict layout equals the plain classifier's, so checkpoints load
    in both directions (with or without ``distill_cfg``).
    """

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
