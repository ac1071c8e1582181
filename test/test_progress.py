"""Progress output: a bar only on a terminal, a few plain lines in a log or under --no-progress."""
import io

import pytest

from diffopt_ros import progress as progress_module
from diffopt_ros.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, 'monotonic', clock)
    return clock


def test_a_log_gets_plain_lines_at_the_interval_not_bar_redraws(clock):
    log = io.StringIO()
    with Progress(1000, 'learn', unit='epoch', file=log, interval=10.0) as bar:
        for _ in range(1000):
            clock.now += 0.1            # 100 s in all: a line every 10 s
            bar.update(1)
            bar.set_postfix(loss='0.5')
    text = log.getvalue()
    assert '\r' not in text
    lines = text.splitlines()
    assert lines[0] == 'learn: 0/1000 epochs (0 %), 0 s'
    assert 10 <= len(lines) <= 12, lines
    assert lines[-1] == 'learn: 1000/1000 epochs (100 %), 100 s, loss=0.5'


def test_no_bar_on_a_terminal_still_prints_lines_and_a_bar_redraws_there(clock):
    term = Terminal()
    with Progress(3, 'drive', unit='s', bar=False, file=term) as bar:
        bar.update(3)
    assert term.getvalue().splitlines() == ['drive: 0/3 s (0 %), 0 s', 'drive: 3/3 s (100 %), 0 s']
    term = Terminal()
    with Progress(3, 'drive', unit='s', bar=True, file=term) as bar:
        assert bar.is_bar
        bar.update(3)
    assert '\r' in term.getvalue() and '3/3' in term.getvalue()


def test_show_false_writes_nothing():
    out = Terminal()
    with Progress(5, 'x', file=out, show=False) as bar:
        bar.update(5)
    assert out.getvalue() == ''
