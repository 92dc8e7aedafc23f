"""Every tool's ``--help``: exit 0, text for every option, defaults shown, ``--debug``.

The parsers are taken from the tool modules in-process (no start-up per tool):
``ArgumentParser.parse_args`` is intercepted to hand back the parser itself.
"""
import argparse
import importlib.util
import os
import runpy
import sys

import pytest

from block_relu_plugin.utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: tool -> the function that builds and parses its parser
TOOLS = {
    'secure_infer': 'parse_args', 'mpc_party': 'parse_args', 'make_spec': 'parse_args',
    'solve_budget': 'parse_args', 'extract_distortion': 'parse_args', 'mpc_certs': 'main',
    'run_main_job': 'main', 'analysis/secure_cost': 'parse_args',
    'analysis/count_drelus': 'parse_args',
    'dataset_converters/fashion_mosaic_export': 'parse_args',
    'model_converters/mobilenetv2_deepsort': 'parse_args',
}


def load_tool(name):
    path = os.path.join(REPO, 'tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location('tool_' + name.replace('/', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Parser(Exception):
    pass


def tool_parser(name, monkeypatch) -> argparse.ArgumentParser:
    def capture(self, args=None, namespace=None):
        raise _Parser(self)
    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    with pytest.raises(_Parser) as e:
        getattr(load_tool(name), TOOLS[name])([])
    return e.value.args[0]


@pytest.mark.parametrize('name', sorted(TOOLS))
def test_every_option_has_help_and_defaults_are_shown(name, monkeypatch):
    parser = tool_parser(name, monkeypatch)
    assert issubclass(parser.formatter_class, cli.HelpFormatter), name
    actions = [a for a in parser._actions if a.help is not argparse.SUPPRESS]
    assert '--debug' in {s for a in actions for s in a.option_strings}
    no_help = [a.option_strings or a.dest for a in actions if not (a.help or '').strip()]
    assert not no_help, f'{name}: options without help: {no_help}'
    text = ' '.join(parser.format_help().split())  # unwrapped
    for a in actions:
        if a.option_strings and a.default not in (None, False, [], (), argparse.SUPPRESS) \
                and not isinstance(a.default, bool):
            shown = ' '.join(map(str, a.default)) if isinstance(a.default, (list, tuple)) \
                else str(a.default)
            assert f'default: {shown})' in text or f'(default {shown}' in text, \
                f'{name} {a.option_strings}: default {a.default!r} not in --help'


@pytest.mark.parametrize('name', sorted(TOOLS))
def test_help_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as e:
        getattr(load_tool(name), TOOLS[name])(['--help'])
    assert e.value.code == 0
    assert 'options:' in capsys.readouterr().out


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_stock_tool_help_without_config(tool, capsys, monkeypatch):
    """Without a config there is no codebase to ask: the tool says how to list the options."""
    monkeypatch.setattr(sys, 'argv', [f'tools/{tool}.py', '--help'])
    runpy.run_path(os.path.join(REPO, 'tools', f'{tool}.py'), run_name='__main__')
    assert f'python tools/{tool}.py CONFIG --help' in capsys.readouterr().out
