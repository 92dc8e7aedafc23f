"""mmpretrain's or mmseg's own tools/train.py, chosen by the config's default_scope.

Takes exactly the arguments of the codebase's tool, e.g.
    python tools/train.py CONFIG [--work-dir DIR] [--launcher pytorch]
"""
import block_relu_plugin  # noqa: F401  (registers the plugin and the checkpoint loader)
from block_relu_plugin.utils.stock_tools import run_stock_tool

if __name__ == '__main__':
    run_stock_tool('train.py')
