"""``distill_cfg``: knowledge distillation from the all-ReLU network while finetuning Block-ReLU.

A model key beside ``block_relu_cfg`` of ``BlockReLUImageClassifier`` and
``BlockReLUEncoderDecoder``::

    model = dict(
        type='BlockReLUImageClassifier',
        block_relu_cfg=dict(budget=0.06, distortion='work_dirs/.../distortion'),
        distill_cfg=dict(teacher_checkpoint='work_dirs/.../epoch_200.pth',
                         temperature=4.0, weight=1.0))

Keys:

- ``teacher_checkpoint`` (required): weights of the teacher, a path or URL.
- ``temperature`` (default 4.0, > 0): softmax temperature T.
- ``weight`` (default 1.0, >= 0): weight of the distillation loss.

The teacher is the student's own network with all ReLUs: the same model config
with only the architecture edits of ``block_relu_cfg`` (``maxpool_to_avgpool``,
``relu6_to_relu``; and its ``input_size``), no patch sizes. It is built and
loaded on the first training loss (so testing and inference with a distillation
config never load it), kept in eval mode with ``requires_grad=False``, and is
not a submodule: it is not in ``parameters()``, so not in the optimizer, nor in
``state_dict()``, so checkpoints of the student load into the plain model and back.
Use the config without ``distill_cfg`` (same weights layout) to test or deploy.

The loss adds ``loss_distill = weight * T^2 * KL(softmax(t / T) || softmax(s / T))``
to the task losses, with s, t the student's and teacher's logits: averaged over the
batch for classification (the head's logits); for segmentation per pixel on the
decode head's logits, both resized to the label size as the head resizes its own
(bilinear, the head's ``align_corners``), averaged over the pixels whose label is
not the head's ``ignore_index`` (this excludes the batch padding, as the task loss does).
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_KEYS = {'teacher_checkpoint', 'temperature', 'weight'}
#: ``block_relu_cfg`` keys the teacher keeps: the architecture edits and the size traced to
#: find the sites; the others choose patch sizes.
_TEACHER_KEYS = ('maxpool_to_avgpool', 'relu6_to_relu', 'input_size')


def check_distill_cfg(distill_cfg: Optional[dict]) -> Optional[dict]:
    """``distill_cfg`` with its defaults filled in (None stays None); one-line errors."""
    if distill_cfg is None:
        return None
    cfg = dict(distill_cfg)
    unknown = set(cfg) - _KEYS
    if unknown:
        raise KeyError(f'unknown distill_cfg key(s) {sorted(unknown)}; '
                       f'expected some of {sorted(_KEYS)}')
    if not cfg.get('teacher_checkpoint'):
        raise KeyError('distill_cfg needs teacher_checkpoint (weights of the all-ReLU network)')
    cfg.setdefault('temperature', 4.0)
    cfg.setdefault('weight', 1.0)
    if not float(cfg['temperature']) > 0:
        raise ValueError(f'distill_cfg temperature must be > 0, got {cfg["temperature"]}')
    if not float(cfg['weight']) >= 0:
        raise ValueError(f'distill_cfg weight must be >= 0, got {cfg["weight"]}')
    return cfg


def teacher_block_relu_cfg(block_relu_cfg: Optional[dict]) -> dict:
    """The teacher's ``block_relu_cfg``: the student's architecture edits, no patch sizes."""
    return {k: v for k, v in (block_relu_cfg or {}).items() if k in _TEACHER_KEYS}


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
            valid: Optional[Tensor] = None) -> Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))`` over dim 1, averaged over the rest.

    Args:
        student_logits, teacher_logits: ``N x C`` or ``N x C x H x W``.
        temperature: T.
        valid: boolean mask of the positions to average over (``N`` or ``N x H x W``).
    """
    t = temperature
    # at least float32: the softmax of logits / T loses too much in half precision
    dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher_logits.dtype),
                                torch.float32)
    log_s = F.log_softmax(student_logits.to(dtype) / t, dim=1)
    log_t = F.log_softmax(teacher_logits.to(dtype) / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    if valid is not None:
        kl = kl[valid]
    if kl.numel() == 0:  # nothing to match (all pixels ignored): a zero that keeps the graph
        return student_logits.sum() * 0
    return kl.mean() * (t * t)


class Distiller:
    """Holds the frozen teacher of one student; the student calls it from its ``loss``.

    Args:
        distill_cfg: checked ``distill_cfg``.
        build_teacher: builds the teacher network (all ReLU, initial weights).
    """

    def __init__(self, distill_cfg: dict, build_teacher: Callable[[], nn.Module]):
        self.cfg = distill_cfg
        self._build = build_teacher
        self.teacher: Optional[nn.Module] = None

    @property
    def temperature(self) -> float:
        return float(self.cfg['temperature'])

    @property
    def weight(self) -> float:
        return float(self.cfg['weight'])

    def get_teacher(self, like: Tensor) -> nn.Module:
        """The teacher on ``like``'s device (and floating dtype), built and loaded on first use."""
        if self.teacher is None:
            from mmengine.runner import load_checkpoint
            teacher = self._build()
            load_checkpoint(teacher, self.cfg['teacher_checkpoint'], map_location='cpu',
                            strict=True, logger='current')
            teacher.requires_grad_(False)
            self.teacher = teacher.eval()
        p = next(self.teacher.parameters(), None)
        if p is not None and (p.device != like.device
                              or (like.is_floating_point() and p.dtype != like.dtype)):
            # a student made .double() (or .half()) before the teacher existed gets a teacher
            # of its own precision
            self.teacher.to(like.device, like.dtype if like.is_floating_point() else None)
        return self.teacher

    def apply(self, fn):
        """Apply a module ``_apply`` function (``.to``, ``.cuda``, ``.half``) to the teacher too."""
        if self.teacher is not None:
            self.teacher._apply(fn)

    def loss(self, student_logits: Tensor, teacher_logits: Tensor,
             valid: Optional[Tensor] = None) -> Tensor:
        return self.weight * kd_loss(student_logits, teacher_logits, self.temperature, valid)

