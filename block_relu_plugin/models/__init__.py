from .block_relu_cfg import apply_block_relu_cfg
from .distill import check_distill_cfg, kd_loss

__all__ = ['apply_block_relu_cfg', 'check_distill_cfg', 'kd_loss']
# The codebase-specific model types register themselves when their codebase
# imports; block_relu_plugin/__init__.py imports them.
