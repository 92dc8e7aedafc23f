"""Run mmpretrain's or mmseg's own tools/train.py and tools/test.py for a config.

Both codebases ship their tools inside the installed package (``.mim/tools``);
the plugin's tools pick the one that matches the config's ``default_scope``
and run it unmodified with the same arguments.
"""
import importlib
import os
import runpy
import sys
from typing import List, Optional

from .config import codebase, load_config


def stock_tool_path(scope: str, tool: str) -> str:
    """Path of ``tools/<tool>`` shipped inside the installed ``scope`` package."""
    package = importlib.import_module(scope)
    path = os.path.join(os.path.dirname(package.__file__), '.mim', 'tools', tool)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{scope} does not ship {tool} at {path}')
    return path


def run_stock_tool(tool: str, argv: Optional[List[str]] = None) -> None:
    """Run the stock ``tool`` (e.g. ``'train.py'``) of the codebase of the config in ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = next((a for a in argv if not a.startswith('-')), None)
    if config is None:
        raise SystemExit(f'usage: {tool} CONFIG [options of the codebase\'s own {tool}]')
    path = stock_tool_path(codebase(load_config(config)), tool)
    sys.argv = [path] + argv
    runpy.run_path(path, run_name='__main__')
