from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from .block_relu_cfg import apply_block_relu_cfg


@MODELS.register_module()
class BlockReLUImageClassifier(ImageClassifier):
    """mmpretrain ``ImageClassifier`` converted to Block-ReLU while it is built.

    Args:
        block_relu_cfg (dict, optional): see :mod:`block_relu_plugin.models.block_relu_cfg`.
        **kwargs: the arguments of ``ImageClassifier``.

    The state-dict layout equals the plain classifier's, so checkpoints load
    in both directions.
    """

    def __init__(self, *args, block_relu_cfg=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.block_relu_cfg = block_relu_cfg
        apply_block_relu_cfg(self, block_relu_cfg)
