"""The tools' one home for errors (``block_relu_plugin/utils/cli.py``).

A user error is one line ``prog: error: <message>`` (status 1), the traceback
only with ``--debug``; a bug keeps its traceback; the list of user-error
classes covers every error class the plugin defines.
"""
import importlib
import inspect
import os
import pkgutil
import runpy
import subprocess
import sys

import pytest

import block_relu_plugin
from block_relu_plugin.spec import SpecError
from block_relu_plugin.utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _raiser(exc):
    def main():
        raise exc
    return main


def test_user_error_is_one_line_without_traceback(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run_cli(_raiser(SpecError('site a: 3 channels,\nthe spec has 4')), 'tool.py', argv=[])
    assert e.value.code == 'tool.py: error: site a: 3 channels, the spec has 4'
    assert 'Traceback' not in capsys.readouterr().err


def test_debug_prints_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as e:
        cli.run_cli(_raiser(FileNotFoundError(2, 'No such file or directory', 'x.json')),
                    'tool.py', argv=['cfg.py', '--debug'])
    assert e.value.code == 'tool.py: error: No such file or directory: x.json'
    err = capsys.readouterr().err
    assert 'Traceback' in err and 'FileNotFoundError' in err
    # the environment variable does the same (for tools that keep a stock parser)
    monkeypatch.setenv(cli.DEBUG_ENV, '1')
    with pytest.raises(SystemExit):
        cli.run_cli(_raiser(ValueError('bad')), 'tool.py', argv=[])
    assert 'Traceback' in capsys.readouterr().err


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        cli.run_cli(_raiser(KeyError('internal')), 'tool.py', argv=[])


def test_every_plugin_error_class_is_a_user_error():
    """A new error class must be added to USER_ERRORS (or this list says why not)."""
    for info in pkgutil.walk_packages(block_relu_plugin.__path__, 'block_relu_plugin.'):
        importlib.import_module(info.name)
    listed = cli._user_error_classes()
    assert len(listed) == len(cli.USER_ERRORS)  # every 'module:Class' entry resolves
    defined = {cls for name, mod in list(sys.modules.items())
               if name.startswith('block_relu_plugin.')
               for _, cls in inspect.getmembers(mod, inspect.isclass)
               if issubclass(cls, Exception) and cls.__module__ == name}
    assert defined, 'no error classes found'
    missing = sorted(c.__qualname__ for c in defined if not issubclass(c, listed))
    assert not missing, f'add these to cli.USER_ERRORS: {missing}'


def _solve_budget(*args):
    return [sys.executable, os.path.join(REPO, 'tools', 'solve_budget.py'), *args]


def test_tool_prints_one_line_then_a_traceback_with_debug(tmp_path, capsys, monkeypatch):
    """A real tool, a real user error (no distortion directory there)."""
    args = ['--distortion', str(tmp_path / 'none'), '--budget', '6%',
            '--out', str(tmp_path / 'spec.json')]
    env = {k: v for k, v in os.environ.items() if k not in (cli.DEBUG_ENV, 'PYTHONWARNINGS')}
    proc = subprocess.run(_solve_budget(*args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('solve_budget.py: error: ') and 'none' in lines[0]
    # --debug: the same last line, after the traceback (in-process: no second start-up)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(sys, 'argv', _solve_budget(*args, '--debug')[1:])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(sys.argv[0], run_name='__main__')
    assert e.value.code == lines[0]
    assert 'Traceback (most recent call last)' in capsys.readouterr().err
