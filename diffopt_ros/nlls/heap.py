"""Handing memory the process freed back to the operating system.

glibc's ``malloc`` keeps what a process frees in its heap for later allocations: mid-sized
numpy arrays freed between arrays still held (the cliques of a re-eliminated Bayes tree top,
or of a whole tree ordered afresh) stay resident, and in a long-running node the heap seldom
shrinks by itself. ``malloc_trim(0)`` returns the free pages of every arena (2-11 ms measured
with a heap of a few hundred MiB). Where the C library has no ``malloc_trim`` (musl, macOS)
:func:`trim` does nothing.
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
