from mmseg.models import EncoderDecoder
from mmseg.registry import MODELS

from .block_relu_cfg import apply_block_relu_cfg


@MODELS.register_module()
class BlockReLUEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` converted to Block-ReLU while it is built.

    Args:
        block_relu_cfg (dict, optional): see :mod:`block_relu_plugin.models.block_relu_cfg`.
        **kwargs: the arguments of ``EncoderDecoder``.

    Sites are the ReLUs of the inference path (backbone and decode head); the
    auxiliary head only serves training and keeps its ReLUs.
    """

    def __init__(self, *args, block_relu_cfg=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.block_relu_cfg = block_relu_cfg
        apply_block_relu_cfg(self, block_relu_cfg)
