"""Blocks of a cost or model that depend only on its parameters and buffers, formed once per MPC solve.

Within a solve (:meth:`~diffopt_ros.mpc.ilqr.MPC.forward`'s iterations, in inference mode) every
iteration and trial step sees the same weights, model parameters and maps, so what is formed
from them alone (weight matrices, scales, constants, converted buffers) is the same each time.
The solve runs inside :func:`solve_scope`; :class:`SolveBlocks` keeps such blocks by a key
(sizes, dtypes, devices) for the scope in progress in this thread. Outside a scope (autograd
through the parameters, the implicit backward, other callers) they are formed on every call.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from torch import nn

_current = threading.local()        # .scope: the token of the solve in progress in this thread


@contextmanager
def solve_scope():
    """The scope of one solve: blocks kept by :class:`SolveBlocks` within it are formed once."""
    outer = getattr(_current, 'scope', None)
    _current.scope = object()
    try:
        yield
    finally:
        _current.scope = outer


class SolveBlocks(nn.Module):
    """Mixin for modules with blocks of their parameters and buffers alone (see the module docstring)."""

    def solve_blocks(self, key: tuple, make):
        """``make()`` for ``key`` (a tuple of hashables), formed once per key within a
        :func:`solve_scope`, on every call outside one."""
        scope = getattr(_current, 'scope', None)
        if scope is None:
            return make()
        held = self.__dict__.get('_solve_blocks')
        if held is None or held[0] is not scope:           # the blocks of one scope at a time
            held = self.__dict__['_solve_blocks'] = (scope, {})
        kept = held[1].get(key)
        if kept is None:
            kept = held[1][key] = make()
        return kept

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop('_solve_blocks', None)        # tensors of this object's parameters: not copied along
        return state
