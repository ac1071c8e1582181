"""Training objectives for the controller: system identification and imitation through the MPC.

Each objective is an ``nn.Module`` whose ``forward(batch)`` returns per-item losses ``(b,)``
for :func:`diffopt_ros.learn.trainer.train`, and whose ``report()`` returns the learned values
by their mpc_node parameter names.

- :class:`PredictionObjective` (system identification): roll the model out from each window's
  start state under the recorded commands and compare with the recorded states, one step or
  several (multi-step prediction error).
- :class:`ImitationObjective` (end to end, Amos et al. 2018): solve the MPC from each window's
  start state towards the reference the node tracked, and compare the MPC's first control with
  the command that was recorded there. Gradients reach the dynamics and cost parameters
  through the solve (``implicit`` or ``unroll``).
"""
from __future__ import annotations

import torch
from torch import nn

from diffopt_ros.learn.controller import cost_params, model_params
from diffopt_ros.lie import wrap_angle
from diffopt_ros.mpc import MPC, Dynamics
from diffopt_ros.mpc.receding import receding_step

#: Scale of each state error in the prediction loss: m, m, rad, m/s, rad/s.
STATE_SCALE = (0.1, 0.1, 0.1, 0.1, 0.1)
#: Scale of each control error in the imitation loss: m/s, rad/s.
CONTROL_SCALE = (0.1, 0.1)


class PredictionObjective(nn.Module):
    """Mean squared, scaled multi-step prediction error of a dynamics model.

    Args:
        model: the model (``DiffDriveLag`` or a ``NeuralResidual`` around it); its ``dt`` must be
            the windows' step.
        steps: how many steps of each window to predict (1 = one-step prediction).
        state_scale: error scale per state entry ``(5,)`` (m, m, rad, m/s, rad/s).
        robust: None for squared errors, or ``c`` for the Cauchy loss ``c^2 log(1 + e^2 / c^2)``
            of each scaled error ``e`` (outliers such as collisions weigh less).
    """

    def __init__(self, model: Dynamics, steps: int, state_scale=STATE_SCALE,
                 robust: float | None = None):
        super().__init__()
        if steps < 1:
            raise ValueError(f'PredictionObjective: steps must be >= 1, got {steps}')
        self.model, self.steps, self.robust = model, int(steps), robust
        self.register_buffer('scale', torch.as_tensor(state_scale, dtype=torch.get_default_dtype()),
                             persistent=False)

    def predict(self, x0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """States ``(B, H, 5)`` after each of the commands ``u (B, H, 2)`` from ``x0 (B, 5)``."""
        return self.model.rollout_fn()(x0, u)[:, 1:]

    def forward(self, batch: dict) -> torch.Tensor:
        """Per-window loss ``(b,)`` from ``x0 (b, 5)``, ``u (b, H, 2)``, ``x_next (b, H, 5)``."""
        H = min(self.steps, batch['u'].shape[1])
        predicted = self.predict(batch['x0'], batch['u'][:, :H])
        error = predicted - batch['x_next'][:, :H]
        error = torch.cat((error[..., :2], wrap_angle(error[..., 2:3]), error[..., 3:]), -1)
        squared = (error / self.scale.to(error)).square()
        if self.robust is not None:
            squared = self.robust ** 2 * torch.log1p(squared / self.robust ** 2)
        return squared.sum(-1).mean(-1)

    @torch.no_grad()
    def report(self) -> dict[str, float]:
        model = getattr(self.model, 'base', self.model)
        return {f'model.{k}': v for k, v in model.parameter_values().items()}


class ImitationObjective(nn.Module):
    """Squared, scaled difference between the MPC's first control and the recorded command.

    The MPC is solved by :func:`~diffopt_ros.mpc.receding.receding_step`, the call mpc_node
    makes: from each window's start state ``x0`` towards its ``reference``, with the command
    recorded before the window ``u_prev`` (the node's last command, for the rate penalty),
    warm-started from the item's previous solution, which is kept per item (``index``) in a
    buffer.

    Args:
        mpc: the node's MPC (:func:`~diffopt_ros.learn.controller.node_mpc`) with the
            parameters to learn set trainable.
        n_items: number of items (size of the warm-start buffer).
        control_scale: error scale per control ``(2,)`` (m/s, rad/s).
        report_cost: include the cost weights in :meth:`report`.
        warm_start: start each solve from the item's previous solution; without it every
            solve starts from zero controls, so the loss is a function of the parameters alone
            (what a line search, e.g. L-BFGS, needs).
    """

    def __init__(self, mpc: MPC, n_items: int, control_scale=CONTROL_SCALE,
                 report_cost: bool = False, warm_start: bool = True):
        super().__init__()
        self.mpc = mpc
        self.report_cost, self.warm_start = report_cost, warm_start
        dtype = next(iter(mpc.parameters())).dtype
        self.register_buffer('warm', torch.zeros(n_items, mpc.horizon, mpc.dynamics.n_u, dtype=dtype))
        self.register_buffer('scale', torch.as_tensor(control_scale, dtype=dtype), persistent=False)

    def solve(self, batch: dict):
        """The MPC solution for a batch (and the warm starts updated)."""
        index = batch['index']
        solution = receding_step(self.mpc, batch['x0'], batch['reference'], batch['u_prev'],
                                 self.warm[index])
        if self.warm_start:
            self.warm[index] = solution.controls.detach()
        return solution

    def forward(self, batch: dict) -> torch.Tensor:
        """Per-window loss ``(b,)``; needs ``x0``, ``reference``, ``u``, ``u_prev``, ``index``."""
        controls = self.solve(batch).controls
        return ((controls[:, 0] - batch['u'][:, 0]) / self.scale.to(controls)).square().sum(-1)

    @torch.no_grad()
    def report(self) -> dict[str, float]:
        values = model_params(self.mpc)
        if self.report_cost:
            values.update(cost_params(self.mpc))
        return values
