"""Long computations split into steps, so that a caller can spread them over several calls.

A *steps* generator does its work between ``yield`` statements and yields, after each piece,
the units of work that piece did (a rough, deterministic measure: variables ordered, cliques
factorized); it returns its result (``StopIteration.value``). :func:`drain` runs one to the end
at once; :func:`advance` runs one until a budget of units is spent (the incremental smoother's
reordering runs a slice per update this way).
"""
from __future__ import annotations

from collections.abc import Generator
from typing import Any

Steps = Generator[int, None, Any]


def drain(steps: Steps) -> Any:
    """Run ``steps`` to the end; returns its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def advance(steps: Steps, budget: int) -> tuple[bool, Any]:
    """Run ``steps`` until it has done at least ``budget`` units (``budget <= 0``: to the end);
    returns ``(True, result)`` when it ended, else ``(False, None)``."""
    if budget <= 0:
        return True, drain(steps)
    spent = 0
    while spent < budget:
        try:
            spent += next(steps)
        except StopIteration as done:
            return True, done.value
    return False, None
