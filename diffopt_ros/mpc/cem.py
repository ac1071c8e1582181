"""Differentiable cross-entropy method (DCEM; Amos & Yarats, ICML 2020), written from the paper.

A sampling-based solver for non-convex costs over control sequences: each iteration samples
``u = mu + sigma * eps`` (reparameterised, clipped to the bounds), rolls all samples out in one
batch, weights them with a *soft* top-k (the limited multi-label projection, LML: the
entropy-regularised selection of ``k`` of ``N`` samples, solved by bisection and differentiated
implicitly) and refits ``mu`` and ``sigma`` to the weighted samples. Gradients flow through the
iterations to ``x_init``, ``target`` and every parameter of the dynamics and cost.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .costs import Cost
from .dynamics import Dynamics


class CEMSolution(NamedTuple):
    """Result of :class:`CEM`: ``states (B, T+1, n_x)``, ``controls (B, T, n_u)`` (the final mean),
    ``costs (B,)`` and ``std (B, T, n_u)`` (the final sampling spread)."""

    states: torch.Tensor
    controls: torch.Tensor
    costs: torch.Tensor
    std: torch.Tensor


def soft_top_k(scores: torch.Tensor, k: int, temperature: float, iterations: int = 50) -> torch.Tensor:
    """LML projection: weights ``y (..., N)`` in ``[0, 1]`` summing to ``k``, high for high scores.

    ``y = sigmoid(scores / temperature + nu)`` with ``nu`` such that ``sum(y) = k`` (bisection).
    The gradient is the implicit one: ``nu`` is re-attached through one Newton step on ``sum(y) = k``
    (value unchanged, derivative exact).

    Args:
        scores: ``(..., N)`` (higher is better).
        k: number of samples to select softly (``0 < k < N``).
        temperature: > 0; small values approach the hard top-k.
        iterations: bisection steps.
    """
    z = scores / temperature
    with torch.no_grad():
        lo = -z.amax(-1, keepdim=True) - 40.0
        hi = -z.amin(-1, keepdim=True) + 40.0
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = torch.sigmoid(z + mid).sum(-1, keepdim=True) > k
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        nu = 0.5 * (lo + hi)
    y = torch.sigmoid(z + nu)
    slope = (y * (1 - y)).sum(-1, keepdim=True).clamp_min(1e-12)
    correction = (k - y.sum(-1, keepdim=True)) / slope               # carries d nu / d z (implicit)
    return torch.sigmoid(z + nu + (correction - correction.detach()))


class CEM(nn.Module):
    """Differentiable cross-entropy method over control sequences.

    Args:
        dynamics: the model (``nn.Module``, any :class:`~diffopt_ros.mpc.dynamics.Dynamics`).
        cost: any :class:`~diffopt_ros.mpc.costs.Cost` (only ``total`` is used: no convexity needed).
        horizon: ``T`` steps.
        u_lower: lower control bound: float or ``(n_u,)`` (required: it scales the first samples).
        u_upper: upper control bound.
        samples: samples per iteration ``N``.
        elites: soft elite count ``k``.
        iterations: CEM iterations.
        temperature: LML temperature on standardised scores (small: close to hard top-k).
        min_std: floor of the sampling spread, as a fraction of the bound range.
    """

    def __init__(self, dynamics: Dynamics, cost: Cost, horizon: int, u_lower, u_upper, *, samples: int = 100,
                 elites: int = 10, iterations: int = 10, temperature: float = 0.5, min_std: float = 1e-3):
        super().__init__()
        if not 0 < elites < samples:
            raise ValueError(f'CEM: need 0 < elites < samples, got elites={elites}, samples={samples}')
        self.dynamics, self.cost, self.horizon = dynamics, cost, int(horizon)
        self.u_lower, self.u_upper = u_lower, u_upper
        self.samples, self.elites, self.iterations = int(samples), int(elites), int(iterations)
        self.temperature, self.min_std = float(temperature), float(min_std)

    def forward(self, x_init: torch.Tensor, target: torch.Tensor | None = None,
                u_init: torch.Tensor | None = None, u_prev: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> CEMSolution:
        """Optimise; ``x_init (B, n_x)``, ``target`` as for the cost, ``u_init (B, T, n_u)`` the initial
        mean (default: the middle of the box), ``generator`` for reproducible sampling.
        """
        batch, T, n_u, N = x_init.shape[0], self.horizon, self.dynamics.n_u, self.samples
        like = dict(dtype=x_init.dtype, device=x_init.device)
        lower = torch.as_tensor(self.u_lower, **like).expand(n_u)
        upper = torch.as_tensor(self.u_upper, **like).expand(n_u)
        mean = (0.5 * (lower + upper)).expand(batch, T, n_u) if u_init is None else u_init
        std = (0.5 * (upper - lower)).expand(batch, T, n_u)
        floor = self.min_std * (upper - lower)
        roll_out = self.dynamics.rollout_fn()
        x_rep = x_init.repeat_interleave(N, 0)
        target_rep = None if target is None or target.ndim < 2 else target.repeat_interleave(N, 0)
        target_rep = target if target_rep is None else target_rep
        prev_rep = None if u_prev is None else u_prev.repeat_interleave(N, 0)
        for _ in range(self.iterations):
            noise = torch.randn(batch, N, T, n_u, generator=generator, **like)
            u = mean.unsqueeze(1) + std.unsqueeze(1) * noise
            u = torch.maximum(torch.minimum(u, upper), lower).reshape(batch * N, T, n_u)
            J = self.cost.total(roll_out(x_rep, u), u, target_rep, prev_rep).view(batch, N)
            scores = -(J - J.mean(-1, keepdim=True)) / J.std(-1, keepdim=True).clamp_min(1e-12)
            w = soft_top_k(scores, self.elites, self.temperature).view(batch, N, 1, 1) / self.elites
            u = u.view(batch, N, T, n_u)
            mean = (w * u).sum(1)
            std = ((w * (u - mean.unsqueeze(1)).square()).sum(1) + 1e-12).sqrt().clamp_min(floor)
        states = roll_out(x_init, mean)
        return CEMSolution(states, mean, self.cost.total(states, mean, target, u_prev), std)
