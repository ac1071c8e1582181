"""The result of an MPC solve: :class:`MPCSolution`."""
from __future__ import annotations

from typing import NamedTuple

import torch

from diffopt_ros.status import Status


class MPCSolution(NamedTuple):
    """Result of :class:`MPC` for a batch of ``B`` problems.

    Attributes:
        states: ``(B, T+1, n_x)`` optimal states, ``states[:, 0] = x_init``.
        controls: ``(B, T, n_u)`` optimal controls.
        costs: ``(B,)`` objective values.
        iterations: ``(B,)`` int64, iterations each sample used.
        converged: ``(B,)`` bool, whether the sample met the tolerance within the iteration cap.
        gains: ``(B, T, n_u, n_x)`` state-feedback gains of the last Riccati pass (detached), or
            ``None`` when the condensed solver ran.
        clamped: ``(B, T, n_u)`` bool, controls held at a bound (the active set).
        kkt_residual: ``(B,)`` first-order optimality certificate of the returned controls
            (:mod:`~diffopt_ros.mpc.kkt`): the largest violation of stationarity (free controls) and
            complementarity (controls on a bound) of the reduced gradient ``dJ/du``, relative to
            ``1 +`` the magnitude of its terms; ``nan`` for a non-finite solution. Exact for linear
            dynamics with a quadratic cost and for the Riccati solver; with the condensed solver on a
            nonlinear problem it is the last quadratic model's gradient at the returned controls
            (first order in the last step). ``converged`` requires it ``<= kkt_tolerance``.
        status: per sample, a :class:`~diffopt_ros.status.Status` (the convention of
            :class:`diffopt_ros.nlls.SolveResult`): ``'converged'``; ``'time_limit'`` (the
            ``deadline`` passed before it converged); ``'max_iterations'``; ``'failed'`` (stopped
            earlier without converging: no cost decrease left, regularization exhausted, or the
            certificate above ``kkt_tolerance``). Set by :meth:`MPC.forward` (and :meth:`MPC.plan`).
    """

    states: torch.Tensor
    controls: torch.Tensor
    costs: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    gains: torch.Tensor | None
    clamped: torch.Tensor
    kkt_residual: torch.Tensor | None = None
    status: list[Status] | None = None
