"""The command-line layer shared by every tool: help format, argument types, user errors.

A user error (bad input: a spec that does not match the model, a budget that
cannot be met, a missing file, a layer the secure compiler refuses, ...) is
printed as ONE line ``prog: error: <message>`` on stderr, exit status 1; an
option argparse or :func:`check_files` refuses (before any work starts) gives
argparse's usage line plus ``prog: error: argument --x: ...``, exit status 2.
The traceback is printed only with ``--debug`` (or ``BLOCK_RELU_DEBUG=1``).
Any other exception is a bug and keeps its traceback. The classes counted as
user errors are listed once, in :data:`USER_ERRORS`. :class:`Progress` is the
progress line of long loops.

Usage in a tool::

    from block_relu_plugin.utils.cli import ArgumentParser, run_cli

    def parse_args(argv=None):
        parser = ArgumentParser(description=__doc__)   # --debug, defaults in --help
        parser.add_argument('config', help='...')
        parser.add_argument('--bits', type=compared_bits, default=64, help='...')
        args = parser.parse_args(argv)
        check_files(parser, args, 'config')            # after the other options
        return args

    def main(argv=None):
        args = parse_args(argv)
        ...

    if __name__ == '__main__':
        run_cli(main)
"""
import argparse
import os
import sys
import time
import traceback
from typing import Callable, Optional, Sequence

__all__ = ['USER_ERRORS', 'DEBUG_ENV', 'ArgumentParser', 'HelpFormatter', 'add_debug_flag',
           'is_user_error', 'one_line', 'run_cli', 'check_files', 'compared_bits', 'positive_int',
           'nonnegative_int', 'existing_file', 'existing_dir', 'Progress']

#: Environment variable that turns on tracebacks like ``--debug``.
DEBUG_ENV = 'BLOCK_RELU_DEBUG'

#: Exceptions that mean "the input is wrong", not "the tool is broken". The
#: plugin's own classes are named as ``module:Class`` and matched only when
#: their module is already imported (an exception of a class can only exist
#: then), so this list costs no imports. The plugin's ValueError subclasses
#: (SpecError, TraceError, NoSitesError, BudgetError, UnsupportedLayerError,
#: IDXError, DistortionError) are covered by ValueError; they are named anyway
#: so that the list says what is expected.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    'block_relu_plugin.spec.spec:SpecError',
    'block_relu_plugin.conversion.sites:SiteError',
    'block_relu_plugin.conversion.sites:TraceError',
    'block_relu_plugin.conversion.sites:NoSitesError',
    'block_relu_plugin.budget.knapsack:BudgetError',
    'block_relu_plugin.budget.distortion:DistortionError',
    'block_relu_plugin.mpc.compiler:UnsupportedLayerError',
    'block_relu_plugin.mpc.launch:PartyError',
    'block_relu_plugin.mpc.transport:PeerError',
    'block_relu_plugin.datasets.idx:IDXError',
    'block_relu_plugin.datasets.pretrained:DeepSortWeightsError',
    'block_relu_plugin.utils.checkpoint:CheckpointError',
)


def _user_error_classes() -> tuple:
    classes = []
    for entry in USER_ERRORS:
        if isinstance(entry, type):
            classes.append(entry)
            continue
        module, name = entry.split(':')
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`USER_ERRORS`."""
    return isinstance(exc, _user_error_classes())


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (file errors name the file)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f'{exc.strerror}: {exc.filename}'
    else:
        text = str(exc) or type(exc).__name__
    return ' '.join(text.split())


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the description's line breaks."""

    def _get_help_string(self, action):
        help_text = action.help or ''
        default = action.default
        # no '(default: None)' / '(default: False)' noise, nor a second default
        if default is None or default is False or default is argparse.SUPPRESS \
                or (isinstance(default, (list, tuple)) and not default) \
                or '%(default)' in help_text or '(default' in help_text:
            return help_text
        if not action.option_strings and action.nargs not in ('?', '*'):
            return help_text  # a required positional has no default
        shown = ' '.join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f'{help_text} (default: {str(shown).replace("%", "%%")})'


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (full traceback on user errors) to ``parser``."""
    parser.add_argument('--debug', action='store_true',
                        help=f'print the full traceback of errors (also: {DEBUG_ENV}=1)')
    return parser


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter` and ``--debug``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', HelpFormatter)
        super().__init__(*args, **kwargs)
        add_debug_flag(self)


def _debug_requested(argv: Sequence[str]) -> bool:
    if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
        return True
    for a in argv:
        if a == '--':
            return False
        if a == '--debug':
            return True
    return False


def run_cli(main: Callable, prog: Optional[str] = None, argv: Optional[Sequence[str]] = None):
    """Run ``main()`` (which parses ``sys.argv`` itself) as a tool's entry point.

    A user error (:func:`is_user_error`) ends the tool with
    ``SystemExit('prog: error: <message>')``: Python prints that one line on
    stderr and exits with status 1 (argparse's own errors, found before any
    work, exit with 2). With ``--debug`` on the command line the traceback is
    printed first. Ctrl-C ends with ``prog: interrupted`` (status 130). Any
    other exception propagates with its traceback. Returns what ``main`` returns.
    """
    prog = prog or os.path.basename(sys.argv[0]) or 'tool'
    argv = sys.argv[1:] if argv is None else argv
    try:
        return main()
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 -- anything but a user error is re-raised
        if not is_user_error(exc):
            raise
        if _debug_requested(argv):
            traceback.print_exc()
            for role, text in (getattr(exc, 'errors', None) or {}).items():
                print(f'--- {role}:\n{text}', file=sys.stderr)  # a PartyError's party tracebacks
        sys.stdout.flush()
        raise SystemExit(f'{prog}: error: {one_line(exc)}') from None


# ------------------------------------------------------------ argument types
def compared_bits(text: str) -> int:
    """An argparse type: compared DReLU bits, an integer in 2..64 (what the compiler accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer in 2..64, got {text!r}') from None
    if not 2 <= value <= 64:
        raise argparse.ArgumentTypeError(f'must be in 2..64, got {value}')
    return value


def _int(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
    if value < low:
        raise argparse.ArgumentTypeError(f'must be {what}, got {value}')
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _int(text, 1, 'an integer >= 1')


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int(text, 0, 'an integer >= 0')


def check_files(parser: argparse.ArgumentParser, args: argparse.Namespace, *dests: str,
                dirs: Sequence[str] = ()) -> None:
    """After parsing: every path in ``args.<dest>`` (a string or a list) must be an
    existing file (``dirs``: directory), else ``parser.error`` naming the option.

    Run after ``parse_args`` rather than as an argparse ``type`` so that the
    other options (e.g. ``--bits``) are checked first, whatever their order.
    """
    names = {}
    for action in parser._actions:  # noqa: SLF001 -- argparse has no public lookup
        names[action.dest] = '/'.join(action.option_strings) or action.metavar or action.dest
    for dest, want_dir in [(d, False) for d in dests] + [(d, True) for d in dirs]:
        value = getattr(args, dest)
        for path in ([] if value is None else [value] if isinstance(value, str) else value):
            check = existing_dir if want_dir else existing_file
            try:
                check(path)
            except argparse.ArgumentTypeError as e:
                parser.error(f'argument {names.get(dest, dest)}: {e}')


def existing_file(text: str) -> str:
    """An argparse type: a path to an existing file."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f'no such file: {text}')
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'is a directory, expected a file: {text}')
    return text


def existing_dir(text: str) -> str:
    """An argparse type: a path to an existing directory."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'no such directory: {text}')
    return text


# ------------------------------------------------------------------ progress
class Progress:
    """A progress line on stderr: ``label: done/total unit, elapsed, left``.

    On a terminal one line is rewritten in place (``\\r``); otherwise (a log
    file, a pipe) a line is written at every further 10 % and at the end.
    Stdlib only, so that party processes started without the package's
    ``__init__`` can use it.
    """

    def __init__(self, total: int, label: str = '', unit: str = 'images', stream=None):
        self.total, self.label, self.unit = int(total), label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())
        self.start = time.perf_counter()
        self._printed_tenths = -1

    def update(self, done: int) -> None:
        """Report ``done`` of ``total`` finished."""
        elapsed = time.perf_counter() - self.start
        text = f'{self.label}: ' if self.label else ''
        text += f'{done}/{self.total} {self.unit}, {elapsed:.0f} s elapsed'
        if 0 < done < self.total:
            text += f', ~{elapsed / done * (self.total - done):.0f} s left'
        if self.tty:
            end = '\n' if done >= self.total else ''
            self.stream.write(f'\r{text}\033[K{end}')
        else:
            tenths = 10 * done // max(1, self.total)
            if tenths <= self._printed_tenths:
                return
            self._printed_tenths = tenths
            self.stream.write(text + '\n')
        self.stream.flush()


def margin(text: str) -> float:
    """An argparse type: a calibration margin, a finite number >= 1."""
    import math
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f'must be a number >= 1, got {text!r}')
    return value
