import torch
import torch.nn.functional as F
from mmseg.models import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

from .block_relu_cfg import BlockReLUModelMixin


@MODELS.register_module()
class BlockReLUEncoderDecoder(BlockReLUModelMixin, EncoderDecoder):
    """mmseg ``EncoderDecoder`` converted to Block-ReLU while it is built.

    Args:
        block_relu_cfg (dict, optional): see :mod:`block_relu_plugin.models.block_relu_cfg`.
        distill_cfg (dict, optional): distillation from the all-ReLU network while
            training, per pixel on the decode head's logits, see
            :mod:`block_relu_plugin.models.distill`.
        **kwargs: the arguments of ``EncoderDecoder``.

    Sites are the ReLUs of the inference path (backbone and decode head); the
    auxiliary head only serves training and keeps its ReLUs. The state-dict
    layout equals the plain segmentor's (with or without ``distill_cfg``).
    """

    def loss(self, inputs, data_samples):
        if self.distiller is None:
            return super().loss(inputs, data_samples)
        x = self.extract_feat(inputs)
        logits = self.decode_head(x)
        if not torch.is_tensor(logits):
            raise TypeError(f'distill_cfg needs a decode head that returns one logits tensor; '
                            f'{type(self.decode_head).__name__} returns {type(logits).__name__}')
        # What EncoderDecoder.loss does, with the decode head's forward done once.
        losses = add_prefix(self.decode_head.loss_by_feat(logits, data_samples), 'decode')
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        teacher = self.distiller.get_teacher(inputs)
        with torch.no_grad():
            teacher_logits = teacher.decode_head(teacher.extract_feat(inputs))
        labels = torch.stack([s.gt_sem_seg.data for s in data_samples]).squeeze(1)
        size = labels.shape[-2:]
        align = self.decode_head.align_corners
        logits = F.interpolate(logits, size, mode='bilinear', align_corners=align)
        teacher_logits = F.interpolate(teacher_logits, size, mode='bilinear', align_corners=align)
        ignore = self.decode_head.ignore_index
        valid = labels != ignore if ignore is not None else None
        losses['loss_distill'] = self.distiller.loss(logits, teacher_logits, valid)
        return losses
