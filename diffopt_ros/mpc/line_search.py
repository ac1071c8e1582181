"""The parallel step-size search of the MPC iterations: trial steps rolled out together.

:func:`search_steps` picks, per sample, the longest step size whose cost is within round-off of
the best; the roll-outs it calls are :func:`closed_loop_search` (Riccati policies, box-DDP),
:func:`open_loop_search` (condensed step, nonlinear dynamics) and :func:`linear_search`
(condensed step, linear dynamics: one product, no roll-out). :func:`exact_step` is the full
condensed step of a linear-quadratic problem (no search needed).
"""
from __future__ import annotations

import torch

from .costs import Cost
from .dynamics import RolloutFn, StepFn
from .tensors import repeat_rows

SEARCH_ELEMENTS = 2 ** 16         # trial trajectories of the step-size search held at a time


def search_steps(roll, batched: tuple, cost: Cost, alphas: torch.Tensor, target, u_prev,
            roundoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step-size search: the longest step whose cost is within round-off of the best one.

    The step sizes are rolled out in parallel groups, as many at a time as keep the trial
    trajectories under ``SEARCH_ELEMENTS`` elements (all of them for small batches, one at a
    time for large ones); in each group the longest step within round-off of the group's best
    cost (the earlier groups' pick first) is kept. A NaN cost counts as infinite.

    Args:
        roll: ``roll(alphas (S,), *batched)`` -> states ``(B, S, T+1, n_x)`` and controls
            ``(B, S, T, n_u)`` of the trial steps.
        batched: the per-sample arguments of ``roll`` (``(B, ...)`` tensors or ``None``), the
            first with the state as its last axis, the second the controls ``(B, T, n_u)``.
        cost: the trajectory cost.
        alphas: ``(S,)`` step sizes, longest first.
        target: cost target of the batch (or ``None``).
        u_prev: ``(B, n_u)`` previous controls (or ``None``).
        roundoff: relative round-off of a cost.

    Returns:
        states ``(B, T+1, n_x)``, controls ``(B, T, n_u)``, their costs ``(B,)`` and whether the
        first step size was taken ``(B,)`` bool.
    """
    n_alpha, (batch, T, n_u) = alphas.shape[0], batched[1].shape
    group = max(1, min(n_alpha, SEARCH_ELEMENTS // (batch * ((T + 1) * batched[0].shape[-1] + T * n_u))))
    x = u = J_sel = first = None
    for i in range(0, n_alpha, group):
        x_try, u_try = roll(alphas[i:i + group], *batched)
        n_try = x_try.shape[1]
        trial_cost = cost.take(torch.arange(batch, device=alphas.device).repeat_interleave(n_try)) \
            if cost.batched else cost
        J_try = trial_cost.total(x_try.flatten(0, 1), u_try.flatten(0, 1), repeat_rows(target, n_try),
                           repeat_rows(u_prev, n_try)).view(-1, n_try).nan_to_num(nan=float('inf'))
        if x is not None:                     # the pick of the earlier groups competes first
            x_try, u_try = torch.cat((x.unsqueeze(1), x_try), 1), torch.cat((u.unsqueeze(1), u_try), 1)
            J_try = torch.cat((J_sel.unsqueeze(1), J_try), 1)
        J_min = J_try.amin(1, keepdim=True)
        pick = (J_try <= J_min + roundoff * J_min.abs()).to(torch.uint8).argmax(1)   # first such
        # gather, not advanced indexing: its backward (unrolled gradients) is a scatter-add, not an
        # accumulating index_put (1.5x slower end-to-end learning at batch 192)
        x = torch.take_along_dim(x_try, pick.view(-1, 1, 1, 1), 1).squeeze(1)
        u = torch.take_along_dim(u_try, pick.view(-1, 1, 1, 1), 1).squeeze(1)
        J_sel = torch.take_along_dim(J_try, pick.view(-1, 1), 1).squeeze(1)
        first = pick == 0 if first is None else first & (pick == 0)
    return x, u, J_sel, first


def trial_controls(alphas: torch.Tensor, u: torch.Tensor, du: torch.Tensor, lower, upper) -> torch.Tensor:
    """``clip(u + a du)`` per step size ``a``: ``(B, S, T, n_u)``."""
    trial = u.unsqueeze(1) + alphas.view(1, -1, 1, 1) * du.unsqueeze(1)
    if lower is not None:
        trial = torch.maximum(torch.minimum(trial, upper.unsqueeze(1)), lower.unsqueeze(1))
    return trial


def linear_search(S: torch.Tensor, alphas: torch.Tensor, x: torch.Tensor, u: torch.Tensor,
                   du: torch.Tensor, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`open_loop_search` for linear dynamics: the trial states are ``x + S (trial - u)``
    with the condensed sensitivity ``S (B, T n_x, T n_u)`` (float64) and the nominal ``x (B, T+1, n_x)``,
    one product instead of a roll-out."""
    n_alpha, (batch, T, n_u), n_x = alphas.shape[0], u.shape, x.shape[-1]
    trial = trial_controls(alphas, u, du, lower, upper)
    d = (trial - u.unsqueeze(1)).reshape(batch, n_alpha, T * n_u).double()
    dx = (d @ S.mT).to(x.dtype).view(batch, n_alpha, T, n_x)
    x_try = torch.cat((x[:, None, :1].expand(batch, n_alpha, 1, n_x), x[:, None, 1:] + dx), 2)
    return x_try, trial


def open_loop_search(roll_out: RolloutFn, alphas: torch.Tensor, x_init: torch.Tensor, u: torch.Tensor,
                      du: torch.Tensor, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-loop roll-outs of ``clip(u + a du)`` per step size: ``(B, S, T+1, n_x)``, ``(B, S, T, n_u)``."""
    n_alpha, (batch, T, n_u) = alphas.shape[0], u.shape
    trial = trial_controls(alphas, u, du, lower, upper)
    x = roll_out(x_init.repeat_interleave(n_alpha, 0), trial.reshape(batch * n_alpha, T, n_u))
    return x.view(batch, n_alpha, T + 1, -1), trial


def closed_loop_search(step: StepFn, augmented: bool, timed: bool, alphas: torch.Tensor, x: torch.Tensor,
                 u: torch.Tensor, G: torch.Tensor, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-loop roll-outs ``u_t = clip(u_t + a k_t + K_t dz_t)`` for every step size ``a``.

    ``x (B, T+1, n_x)``, ``u (B, T, n_u)`` nominal, ``G (B, T, n_u, n_z + 1)`` policies,
    ``alphas (S,)``, bounds ``(B, T, n_u)`` or ``None``. Returns states ``(B, S, T+1, n_x)`` and
    controls ``(B, S, T, n_u)``; the step sizes share each sample's gains (no copies per step size).
    """
    n_alpha, (batch, T, n_u), n_x = alphas.shape[0], u.shape, x.shape[-1]
    feeds = (u.unsqueeze(1) + alphas.view(1, -1, 1, 1) * G[..., -1].unsqueeze(1)).unbind(2)
    KxT, xs_nom = G[..., :n_x].mT.unbind(1), x.unsqueeze(1).unbind(2)
    if augmented:
        KuT, us_nom = G[..., n_x:-1].mT.unbind(1), u.unsqueeze(1).unbind(2)
    if lower is not None:
        lows, highs = lower.unsqueeze(1).unbind(2), upper.unsqueeze(1).unbind(2)
    xt = xs_nom[0].expand(batch, n_alpha, n_x)
    xs, us = [xt], []
    for t in range(T):
        ut = torch.baddbmm(feeds[t], xt - xs_nom[t], KxT[t])
        if augmented and t > 0:
            ut = torch.baddbmm(ut, us[-1] - us_nom[t - 1], KuT[t])
        if lower is not None:
            ut = torch.maximum(torch.minimum(ut, highs[t]), lows[t])
        args = (xt.reshape(-1, n_x), ut.reshape(-1, n_u)) + ((t,) if timed else ())
        xt = step(*args).view(batch, n_alpha, n_x)
        xs.append(xt)
        us.append(ut)
    return torch.stack(xs, 2), torch.stack(us, 2)


def exact_step(S: torch.Tensor, x: torch.Tensor, u: torch.Tensor, J: torch.Tensor, du: torch.Tensor,
                predicted: torch.Tensor, lower, upper, roundoff: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The full condensed step of a linear-quadratic problem, where it is the exact optimum.

    For linear dynamics and a quadratic cost the condensed model is exact: the step ``du (B, T, n_u)``
    from the nominal ``x (B, T+1, n_x)``, ``u (B, T, n_u)`` (cost ``J (B,)``) is the box-QP optimum,
    its states are ``x + S du`` and its cost is ``J - predicted``, with no roll-out or cost evaluation.
    Returns those states, controls and costs, or ``None`` where a sample's predicted decrease is
    not finite or below ``-roundoff |J|`` (an indefinite Hessian: the caller then searches and
    regularizes as for any other step).
    """
    if not bool(((predicted >= -roundoff * J.abs()) & torch.isfinite(predicted)).all()):
        return None
    x_new, u_new = linear_search(S, du.new_ones(1), x, u, du, lower, upper)
    return x_new[:, 0], u_new[:, 0], J - predicted
