"""Handing memory the process freed back to the operating system.

glibc's ``malloc`` keeps what a process frees in its heap for later allocations; many mid-sized
numpy arrays freed together (a Bayes tree eliminated afresh drops all its cliques' arrays at
once) stay resident until the heap's top happens to be free, which in a long-running node is
seldom. ``malloc_trim(0)`` returns the free pages of every arena (about 10 ms for a heap of a few
hundred MiB). Where the C library has no ``malloc_trim`` (musl, macOS) :func:`trim` does
nothing.
"""
from __future__ import annotations

import ctypes

try:
    _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim      # the C library this process runs on
    _MALLOC_TRIM.argtypes, _MALLOC_TRIM.restype = [ctypes.c_size_t], ctypes.c_int
except (AttributeError, OSError, TypeError):   # no such symbol, or no C library to open
    _MALLOC_TRIM = None


def trim() -> bool:
    """Return freed heap pages to the operating system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
