"""Waiting in the node tests: spin an executor until a condition holds or for a while, or wait for
one spinning elsewhere (a background thread, another process).

Every wait is bounded by a timeout in wall-clock seconds (``time.monotonic``) and returns the
condition's final value, so the test asserts with its own message; nothing here sleeps longer
than ``step`` past the condition becoming true.
"""
import subprocess
import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Sleep in steps of ``step`` s until ``condition()`` is true or ``timeout`` s have passed
    (for executors spun by a thread or another process); returns ``bool(condition())``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def spin_until(executor, condition: Callable[[], object], timeout: float = 10.0,
               step: float = 0.02, proc: subprocess.Popen | None = None) -> bool:
    """``executor.spin_once(step)`` until ``condition()`` is true or ``timeout`` s have passed, or
    ``proc`` (the node process waited for) has ended; returns ``bool(condition())``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            break
        executor.spin_once(timeout_sec=step)
    return bool(condition())


def spin_for(executor, seconds: float, step: float = 0.01,
             every: Callable[[], None] | None = None, period: float = 0.02) -> None:
    """``executor.spin_once(step)`` for ``seconds`` s; meanwhile call ``every()`` (publishing a
    state, a command) once per ``period`` s, first right away."""
    end = time.monotonic() + seconds
    next_call = 0.0
    while time.monotonic() < end:
        if every is not None and time.monotonic() >= next_call:
            every()
            next_call = time.monotonic() + period
        executor.spin_once(timeout_sec=step)
