"""The MPC of ``mpc_node`` as a learnable module, and its node parameters.

Learning differentiates the very controller the node runs: :func:`node_mpc` builds it with
``mpc_loop.RecedingHorizonSolver`` from the node's parameters (``config/mpc.yaml`` and a learned
file on top), then switches on gradients. :class:`TiedWeight` gives the cost one learnable
weight per node parameter (``weights.position`` weighs both x and y).
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import torch
import yaml
from torch import nn

from diffopt_ros.mpc import MPC, PSDWeight

#: MpcSettings field -> mpc_node parameter (docs/CONTRACTS.md).
SETTINGS_PARAMS = {
    'gain_v': 'model.gain_v', 'gain_omega': 'model.gain_omega', 'tau_v': 'model.tau_v',
    'tau_omega': 'model.tau_omega', 'horizon': 'horizon', 'dt': 'dt',
    'w_position': 'weights.position', 'w_heading': 'weights.heading', 'w_v': 'weights.v',
    'w_omega': 'weights.omega', 'w_v_cmd': 'weights.v_cmd', 'w_omega_cmd': 'weights.omega_cmd',
    'w_rate': 'weights.rate', 'terminal_scale': 'weights.terminal_scale',
    'v_min': 'bounds.v_min', 'v_max': 'bounds.v_max', 'omega_max': 'bounds.omega_max',
    'max_iterations': 'max_iterations', 'tolerance': 'tolerance',
}


def node_params(path: str | os.PathLike, node: str) -> dict:
    """``<node>.ros__parameters`` of a ROS params YAML file (flat dotted names).

    Raises:
        ValueError: the file has no such section (file and node named).
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    section = data.get(node) if isinstance(data, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get('ros__parameters'), dict):
        raise ValueError(f'{path}: no "{node}: ros__parameters:" section')
    flat, stack = {}, [('', section['ros__parameters'])]
    while stack:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            if isinstance(value, dict):
                stack.append((f'{prefix}{key}.', value))
            else:
                flat[f'{prefix}{key}'] = value
    return flat


def mpc_params(params_file: str | os.PathLike | None = None,
               learned_file: str | os.PathLike | None = None) -> dict:
    """The mpc_node parameters: ``config/mpc.yaml`` (or ``params_file``), then ``learned_file``."""
    from diffopt_ros.paths import config_path

    values = node_params(params_file or config_path('mpc.yaml'), 'mpc_node')
    if learned_file:
        values.update(node_params(learned_file, 'mpc_node'))
    return values


def mpc_settings(params: dict):
    """``MpcSettings`` of a dict of mpc_node parameters (missing ones keep their defaults)."""
    from diffopt_ros.nodes.mpc_loop import MpcSettings

    kinds = {f.name: f.type for f in fields(MpcSettings)}
    values = {}
    for name, param in SETTINGS_PARAMS.items():
        if param in params:
            values[name] = int(params[param]) if kinds[name] in ('int', int) else float(params[param])
    return MpcSettings(**values)


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


def node_mpc(params: dict, grad_mode: str = 'implicit', dtype: torch.dtype = torch.float64,
             device: torch.device | str = 'cpu', max_iterations: int | None = None,
             tolerance: float | None = None) -> MPC:
    """The node's MPC (``RecedingHorizonSolver``) with gradients, all parameters frozen.

    Args:
        params: mpc_node parameters (see :func:`mpc_params`).
        grad_mode: ``'implicit'`` or ``'unroll'``.
        dtype: floating-point type of the solve.
        device: torch device of the solve.
        max_iterations: overrides the node's iteration cap.
        tolerance: overrides the node's tolerance (learning wants tightly converged solves:
            implicit gradients assume a stationary point).
    """
    from diffopt_ros.nodes.mpc_loop import RecedingHorizonSolver

    mpc = RecedingHorizonSolver(mpc_settings(params), device=device, dtype=dtype).mpc
    mpc.grad_mode = grad_mode
    if max_iterations is not None:
        mpc.max_iterations = int(max_iterations)
    if tolerance is not None:
        mpc.tolerance = float(tolerance)
    for p in mpc.parameters():
        p.requires_grad_(False)
    return mpc

