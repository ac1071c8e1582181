"""How a batched solve ended, per problem: one convention for the MPC and the NLLS optimizer.

:class:`diffopt_ros.mpc.MPCSolution` and :class:`diffopt_ros.nlls.SolveResult` both expose
``converged`` ``(B,)`` bool, ``iterations`` ``(B,)`` int64 and ``status``, a list of ``B``
:class:`Status` members (``str`` enum: ``status == ['converged']`` holds for a converged batch of one).
"""
from __future__ import annotations

import torch

from diffopt_ros.modes import StrEnum


class Status(StrEnum):
    """Why one problem of a batch stopped; compares equal to its string value."""

    #: Met the solver's tolerance.
    CONVERGED = 'converged'
    #: Used all ``max_iterations`` without meeting the tolerance.
    MAX_ITERATIONS = 'max_iterations'
    #: The time budget (NLLS ``max_time``, MPC ``deadline``) ran out first.
    TIME_LIMIT = 'time_limit'
    #: Stopped early without meeting the tolerance: no decrease possible (damping or
    #: regularization exhausted, factorization failed, or an optimality certificate above it).
    FAILED = 'failed'


def batch_status(converged: torch.Tensor, failed: torch.Tensor, timed_out: bool) -> list[Status]:
    """Per-problem status from ``converged`` and ``failed`` ``(B,)`` bool: converged first,
    then failed, then :attr:`Status.TIME_LIMIT` if the budget ran out, else
    :attr:`Status.MAX_ITERATIONS`."""
    rest = Status.TIME_LIMIT if timed_out else Status.MAX_ITERATIONS
    return [Status.CONVERGED if c else Status.FAILED if f else rest
            for c, f in zip(converged.tolist(), failed.tolist())]
