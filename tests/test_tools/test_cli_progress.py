"""The progress line of secure inference (``cli.Progress``): in place on a terminal,
a line per further 10 % in a log."""
import io

from block_relu_plugin.utils.cli import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_a_line_per_ten_percent():
    log = io.StringIO()
    bar = Progress(200, 'client: secure inference', stream=log)
    for done in range(201):
        bar.update(done)
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and '\r' not in log.getvalue()
    assert lines[0].startswith('client: secure inference: 0/200 images, 0 s elapsed')
    assert lines[5].startswith('client: secure inference: 100/200 images')
    assert 's left' in lines[5]
    assert lines[-1].startswith('client: secure inference: 200/200 images')


def test_terminal_line_is_rewritten_in_place():
    term = _Terminal()
    bar = Progress(3, 'x', stream=term)
    for done in range(4):
        bar.update(done)
    text = term.getvalue()
    assert text.count('\r') == 4 and text.count('\n') == 1 and text.endswith('\n')
    assert '\r' + 'x: 3/3 images' in text
