"""The MPC of ``mpc_node`` as a learnable module, and its node parameters.

Learning differentiates the very controller the node runs: :func:`node_mpc` builds it with
``receding.RecedingHorizonSolver`` from the node's parameters (``config/mpc.yaml`` and a learned
file on top), then switches on gradients. :class:`TiedWeight` gives the cost one learnable
weight per node parameter (``weights.position`` weighs both x and y); :func:`twist_bicycle` is
the Ackermann car to identify from Twist commands.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from diffopt_ros.modes import Backward, backward_mode
from diffopt_ros.mpc import BACKWARD_MODES, MPC, PSDWeight
from diffopt_ros.mpc.bases import Bicycle, TwistBicycle
from diffopt_ros.mpc.receding import MpcSettings, RecedingHorizonSolver
from diffopt_ros.params_file import read_params_file


def mpc_params(params_file: str | os.PathLike | None = None,
               learned_file: str | os.PathLike | None = None) -> dict:
    """The mpc_node parameters: ``config/mpc.yaml`` (or ``params_file``), then ``learned_file``."""
    from diffopt_ros.paths import config_path

    values = read_params_file(params_file or config_path('mpc.yaml'), 'mpc_node')
    if learned_file:
        values.update(read_params_file(learned_file, 'mpc_node'))
    return values


class TiedWeight(PSDWeight):
    """A diagonal cost weight with entries tied to shared learnable values.

    ``diagonal()[i] = exp(log_values[groups[i]])``; a group whose initial value is 0 stays 0.

    Args:
        values: initial value per group (>= 0).
        groups: group index of each diagonal entry.
    """

    def __init__(self, values, groups):
        nn.Module.__init__(self)
        self.full = False
        values = torch.as_tensor(values, dtype=torch.get_default_dtype())
        if (values < 0).any():
            raise ValueError(f'TiedWeight: weights must be >= 0, got {values.tolist()}')
        self.log_values = nn.Parameter(values.clamp_min(1e-300).log())
        self.register_buffer('groups', torch.as_tensor(groups, dtype=torch.long))
        self.register_buffer('present', (values > 0).to(values.dtype))

    @property
    def values(self) -> torch.Tensor:
        """The group values ``(G,)``."""
        return self.log_values.exp() * self.present

    @property
    def sqrt_diag(self) -> torch.Tensor:
        return (0.5 * self.log_values).exp()[self.groups] * self.present[self.groups]


def tie_cost_weights(mpc: MPC) -> None:
    """Replace the node cost's weights by :class:`TiedWeight` s, one value per node parameter.

    Groups: state ``(position: x, y; heading; v; omega)``, control ``(v_cmd; omega_cmd)``,
    rate ``(rate: both controls)``. The terminal scale stays the cost's own parameter.
    """
    cost = mpc.cost
    q = cost.state_weight.diagonal().detach()
    r = cost.control_weight.diagonal().detach()
    cost.state_weight = TiedWeight([q[0], q[2], q[3], q[4]], [0, 0, 1, 2, 3]).to(q)
    cost.control_weight = TiedWeight([r[0], r[1]], [0, 1]).to(r)
    if cost.rate_weight is not None:
        s = cost.rate_weight.diagonal().detach()
        cost.rate_weight = TiedWeight([s[0]], [0, 0]).to(s)


def cost_params(mpc: MPC) -> dict[str, float]:
    """The node's ``weights.*`` parameters of a (tied) node cost."""
    cost = mpc.cost
    q, r = cost.state_weight.diagonal(), cost.control_weight.diagonal()
    out = {'weights.position': float(q[0]), 'weights.heading': float(q[2]), 'weights.v': float(q[3]),
           'weights.omega': float(q[4]), 'weights.v_cmd': float(r[0]),
           'weights.omega_cmd': float(r[1]), 'weights.terminal_scale': float(cost.terminal_scale)}
    if cost.rate_weight is not None:
        out['weights.rate'] = float(cost.rate_weight.diagonal()[0])
    return out


def model_params(mpc: MPC) -> dict[str, float]:
    """The node's ``model.*`` parameters of the MPC's dynamics (a residual's base counts)."""
    model = getattr(mpc.dynamics, 'base', mpc.dynamics)
    return {f'model.{k}': v for k, v in model.parameter_values().items()}


def twist_bicycle(dt: float, params: dict) -> TwistBicycle:
    """The Ackermann model to identify from Twist data: :class:`~diffopt_ros.mpc.bases.Bicycle`
    with the ``model.*`` values of ``params`` (mpc_node parameters) where given, else its
    defaults; wheelbase frozen (from Twist commands it cancels except where the steering
    saturates); steering limited to ``bounds.max_steer`` (rad).

    Args:
        dt: step (s).
        params: mpc_node parameters (see :func:`mpc_params`).
    """
    given = {k: float(params[f'model.{k}']) for k in (*Bicycle.param_names, 'max_steer_rate')
             if f'model.{k}' in params}
    car = Bicycle(dt, **given)
    car.log_wheelbase.requires_grad_(False)
    return TwistBicycle(car, max_steer=float(params.get('bounds.max_steer', 0.6)))


def node_mpc(params: dict, backward: str | Backward = 'implicit', dtype: torch.dtype = torch.float64,
             device: torch.device | str = 'cpu', max_iterations: int | None = None,
             tolerance: float | None = None) -> MPC:
    """The node's MPC (``RecedingHorizonSolver``) with gradients, all parameters frozen.

    Args:
        params: mpc_node parameters (see :func:`mpc_params`).
        backward: one of :data:`diffopt_ros.mpc.BACKWARD_MODES` (``'implicit'``, ``'unroll'`` or
            ``'none'``).
        dtype: floating-point type of the solve.
        device: torch device of the solve.
        max_iterations: overrides the node's iteration cap.
        tolerance: overrides the node's tolerance (learning wants tightly converged solves:
            implicit gradients assume a stationary point).
    """

    mpc = RecedingHorizonSolver(MpcSettings.from_params(params), device=device, dtype=dtype).mpc
    mpc.backward = backward_mode(backward, BACKWARD_MODES, 'node_mpc')
    if max_iterations is not None:
        mpc.max_iterations = int(max_iterations)
    if tolerance is not None:
        mpc.tolerance = float(tolerance)
    for p in mpc.parameters():
        p.requires_grad_(False)
    return mpc

