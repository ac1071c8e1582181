"""Full garbage collections at idle time (diffopt_ros.idle_gc)."""
from __future__ import annotations

import gc
import sys
import weakref

import pytest

from diffopt_ros import idle_gc
from diffopt_ros.idle_gc import IdleCollector


class Clock:
    """A settable clock (s)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Cycle:
    """An object in a reference cycle: only a collection frees it."""

    def __init__(self):
        self.me = self


def test_started_collectors_turn_automatic_full_collections_off_until_the_last_stops():
    before = gc.get_threshold()
    first, second = IdleCollector(1.0), IdleCollector(2.0)
    first.start()
    try:
        assert gc.get_threshold() == (before[0], before[1], idle_gc._NEVER)
        second.start()
        first.start()                       # a second start of the same collector counts once
        first.stop()
        assert gc.get_threshold()[2] == idle_gc._NEVER      # the other one still runs
        first.stop()                        # a second stop too
        assert gc.get_threshold()[2] == idle_gc._NEVER
    finally:
        second.stop()
        first.stop()
    assert gc.get_threshold() == before


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14's incremental collector ignores "
                    'the third threshold (diffopt_ros.idle_gc documents it)')
def test_young_collections_go_on_and_no_full_one_runs_while_started():
    full = []

    def count(phase, info):
        if phase == 'start':
            full.append(info['generation'])
    collector = IdleCollector(1.0)
    collector.start()
    gc.callbacks.append(count)
    try:
        # enough container allocations for about a hundred generation-1 collections, ten
        # times CPython's default threshold of a full one
        keep = [[i] for i in range(700 * 10 * 100)]
        assert 0 in full and 1 in full
        assert 2 not in full
        del keep
    finally:
        gc.callbacks.remove(count)
        collector.stop()


def test_idle_collects_once_per_period_and_frees_cyclic_garbage():
    clock = Clock()
    collector = IdleCollector(10.0, clock=clock, backstop=3.0)
    gc.disable()                            # only the collector's own collections free it
    try:
        garbage = Cycle()
        alive = weakref.ref(garbage)
        del garbage
        clock.now += 9.9
        assert collector.idle() is None and alive() is not None
        clock.now += 0.2
        took = collector.idle()
        assert took is not None and took >= 0.0 and alive() is None
        assert collector.collections == 1 and collector.longest == took
        # not idle: put off until the backstop (3 periods), then collected anyway
        clock.now += 20.0
        assert collector.idle(idle=False) is None
        assert collector.idle() is not None
        clock.now += 29.0
        assert collector.idle(idle=False) is None
        clock.now += 1.0
        assert collector.idle(idle=False) is not None
        assert collector.collections == 3
    finally:
        gc.enable()


@pytest.mark.parametrize('period, backstop', [(0.0, 4.0), (-1.0, 4.0), (1.0, 0.5)])
def test_bad_settings_are_refused(period, backstop):
    with pytest.raises(ValueError, match='IdleCollector'):
        IdleCollector(period, backstop=backstop)
