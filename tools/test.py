"""mmpretrain's or mmseg's own tools/test.py, chosen by the config's default_scope.

Takes exactly the arguments of the codebase's tool, e.g.
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--launcher pytorch]
"""
import sys

import block_relu_plugin  # noqa: F401  (registers the plugin and the checkpoint loader)
from block_relu_plugin.utils.cli import run_cli
from block_relu_plugin.utils.stock_tools import run_stock_tool


def main():
    if not [a for a in sys.argv[1:] if not a.startswith('-')] and \
            {'-h', '--help'} & set(sys.argv[1:]):
        print(__doc__.rstrip() + '\n\nThe options are those of the codebase\'s own test.py; '
              'to list them:\n    python tools/test.py CONFIG --help\nUser errors (a missing '
              'file, a spec that does not fit) print one line;\nBLOCK_RELU_DEBUG=1 adds the '
              'traceback.')
        return
    run_stock_tool('test.py')


if __name__ == '__main__':
    run_cli(main, 'test.py')
