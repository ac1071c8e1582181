"""Progress of long steps (training epochs, demo drives, SLAM replays): a tqdm bar on a
terminal, a few plain lines in a log.

:class:`Progress` draws a tqdm bar only when asked for (``bar=True``) *and* its stream is a
terminal. Otherwise, in a log file or a pipe, or under ``--no-progress``, it writes one plain
line when it starts, then at most one every ``interval`` seconds, and one when it closes::

    learn dynamics (system identification): 12/30 epochs (40 %), 10 s, loss=0.0123

so that a log holds a few lines a minute instead of thousands of ``\\r`` redraws, and a quiet
run still says what it is doing. ``show=False`` writes nothing at all.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

DEFAULT_INTERVAL = 10.0   # s between plain lines


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (a bar can redraw itself there)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # closed or replaced streams (pytest's capture)
        return False


def say(message: str, file: TextIO | None = None) -> None:
    """One status line on ``file`` (default stderr), flushed: what a command does next."""
    stream = sys.stderr if file is None else file
    print(message, file=stream, flush=True)


class Progress:
    """Count ``total`` steps of ``unit`` under the label ``desc``.

    Args:
        total: number of steps (0 or None: unknown, no percentage).
        desc: label, also the start of every plain line.
        unit: what a step is (``'epoch'``, ``'s'``, ``'scan'``).
        bar: draw a tqdm bar when ``file`` is a terminal; False (``--no-progress``): plain
            lines even there.
        interval: seconds between plain lines.
        file: the stream (default stderr).
        initial: steps already done (a resumed run).
        leave: keep the finished bar on screen.
        show: False writes nothing.
    """

    def __init__(self, total: int | None, desc: str, unit: str = 'it', bar: bool = True,
                 interval: float = DEFAULT_INTERVAL, file: TextIO | None = None,
                 initial: int = 0, leave: bool = True, show: bool = True) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.interval = interval
        self._file = sys.stderr if file is None else file
        self._postfix = ''
        self._began = self._last = time.monotonic()
        self._printed_n = None
        self._bar = None
        self._show = show
        if show and bar and is_terminal(self._file):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self._file,
                             leave=leave, dynamic_ncols=True, mininterval=0.5)
        elif show:
            self._line()

    @property
    def is_bar(self) -> bool:
        """Whether a tqdm bar is drawn (else plain lines, or nothing)."""
        return self._bar is not None

    def _line(self) -> None:
        if self.total:
            plural = 's' if self.total != 1 and len(self.unit) > 1 else ''
            count = f'{self.n}/{self.total} {self.unit}{plural} ({100 * self.n / self.total:.0f} %)'
        else:
            count = f'{self.n} {self.unit}'
        elapsed = time.monotonic() - self._began
        postfix = f', {self._postfix}' if self._postfix else ''
        print(f'{self.desc}: {count}, {elapsed:.0f} s{postfix}', file=self._file, flush=True)
        self._last, self._printed_n = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        """``n`` more steps done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._show and time.monotonic() - self._last >= self.interval:
            self._line()

    def set_postfix(self, **values: object) -> None:
        """Values shown after the count (``loss='0.012'``), replacing earlier ones."""
        self.set_postfix_str(', '.join(f'{k}={v}' for k, v in values.items()))

    def set_postfix_str(self, text: str) -> None:
        """Free text shown after the count."""
        self._postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        """Finish: close the bar, or write the last line (if the count moved since the last)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._show and self._printed_n != self.n:
            self._line()
        self._show = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
