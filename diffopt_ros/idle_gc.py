"""Full garbage collections at idle time, not inside a latency-critical update.

CPython runs a full (generation 2) collection from whichever allocation crosses its thresholds:
in a SLAM node that is often a keyframe update, which then takes 10-50 ms longer on a graph of
thousands of keyframes (the collection scans every container object made since start-up; the
Bayes tree's cliques and the graph's lists). :class:`IdleCollector` turns those automatic full
collections off (the young generations are still collected as usual) and runs them where the
caller says it is idle, at most once per ``period`` seconds: the worst-case SLAM soak's longest
keyframe steps at 4,500-5,000 keyframes were full collections (bench/RESULTS.md, "Full
garbage collections between keyframe steps"). The SLAM back end leaves no cyclic garbage of
its own, so deferring them holds no memory back there; other cyclic garbage waits at most
``backstop`` periods.

On Pythons whose collector ignores the third threshold (3.14's incremental collector), the
automatic collections go on as before and the idle ones are added.
"""
from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

#: Third threshold of the collector while an :class:`IdleCollector` is started: never reached.
_NEVER = 2 ** 30

# The thresholds are the process's: the first start saves them, the last stop restores them.
_lock = threading.Lock()
_running = 0          # collectors started and not stopped
_saved: tuple[int, int, int] | None = None


class IdleCollector:
    """Full garbage collections run by :meth:`idle`, not by CPython's thresholds.

    Args:
        period: least seconds (of ``clock``) between two full collections (> 0).
        clock: seconds now (default ``time.monotonic``; the SLAM benchmark passes simulated
            time, what a robot driving at real time would see).
        backstop: a caller that is never idle still gets a full collection after this many
            periods (>= 1).
    """

    def __init__(self, period: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 backstop: float = 4.0):
        if not period > 0:
            raise ValueError(f'IdleCollector: period {period} s must be positive')
        if not backstop >= 1:
            raise ValueError(f'IdleCollector: backstop {backstop} must be at least 1')
        self.period, self.backstop, self._clock = float(period), float(backstop), clock
        self._last = clock()
        self._started = False
        self.collections = 0
        self.seconds = 0.0      # thread CPU s of all of them
        self.longest = 0.0      # thread CPU s of the longest

    def start(self) -> None:
        """Turn CPython's automatic full collections off, in this process, until every
        started collector is stopped."""
        global _running, _saved
        with _lock:
            if self._started:
                return
            if _running == 0:
                _saved = gc.get_threshold()
                gc.set_threshold(_saved[0], _saved[1], _NEVER)
            _running += 1
            self._started = True

    def stop(self) -> None:
        """Stop this collector; the last one stopped gives CPython its automatic full
        collections back (the thresholds before the first start)."""
        global _running
        with _lock:
            if not self._started:
                return
            self._started = False
            _running -= 1
            if _running == 0:
                gc.set_threshold(*_saved)

    def idle(self, idle: bool = True) -> float | None:
        """Call between updates, ``idle`` when no work is waiting: runs a full collection if
        ``period`` has passed since the last one (``backstop`` periods when not ``idle``);
        returns its thread CPU seconds, or None when none ran."""
        elapsed = self._clock() - self._last
        if elapsed < self.period or (not idle and elapsed < self.backstop * self.period):
            return None
        started = time.thread_time()
        gc.collect()
        took = time.thread_time() - started
        self._last = self._clock()
        self.collections += 1
        self.seconds += took
        self.longest = max(self.longest, took)
        return took
