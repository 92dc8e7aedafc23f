from .block_relu_cfg import apply_block_relu_cfg

__all__ = ['apply_block_relu_cfg']
# The codebase-specific model types register themselves when their codebase
# imports; block_relu_plugin/__init__.py imports them.
