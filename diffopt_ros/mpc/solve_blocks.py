"""Blocks of a cost that depend only on its parameters, formed once per MPC solve.

Within a solve (:meth:`~diffopt_ros.mpc.ilqr.MPC.forward` runs its iterations in inference mode)
every iteration and trial step sees the same weights, so what is formed from them alone (weight
matrices, scales, margins) is the same each time. :class:`SolveBlocks` keeps such blocks by a key
(sizes, dtypes, devices) and the state of the module's parameters (identity, version counter and
storage of each: an in-place change, an assignment or a conversion gives a new state); outside
inference mode (autograd through the parameters) they are formed on every call.
"""
from __future__ import annotations

import torch
from torch import nn

#: keys (with their parameter states) held at a time per module
SOLVE_BLOCK_KEYS = 8


class SolveBlocks(nn.Module):
    """Mixin for costs with parameter-only blocks (see the module docstring)."""

    def solve_blocks(self, key: tuple, make):
        """``make()`` for ``key`` (a tuple of hashables), formed once per key and parameter state
        in inference mode, on every call otherwise."""
        if not torch.is_inference_mode_enabled():
            return make()
        key = key + tuple((id(p), p._version, p.data_ptr()) for p in self.parameters())
        blocks = self.__dict__.setdefault('_solve_blocks', {})
        kept = blocks.get(key)
        if kept is None:
            if len(blocks) >= SOLVE_BLOCK_KEYS:
                blocks.clear()
            kept = blocks[key] = make()
        return kept

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop('_solve_blocks', None)        # tensors of this object's parameters: not copied along
        return state
