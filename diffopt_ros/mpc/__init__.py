"""Differentiable model-predictive control in plain PyTorch (no ROS).

Batched box-constrained iLQR (box-DDP) with implicit or unrolled gradients, learnable dynamics
models and costs, and a differentiable cross-entropy method. Shapes: states ``(B, T+1, n_x)``,
controls ``(B, T, n_u)``; device and dtype follow the inputs.

Example::

    from diffopt_ros.mpc import MPC, DiffDriveLag, TrackingCost, shift_one_step
    model = DiffDriveLag(dt=0.05)
    cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.1, 0.1], terminal_scale=5.,
                        rate_weight=[0.5, 0.5], angle_indices=model.angle_indices)
    mpc = MPC(model, cost, horizon=30, u_lower=[-0.5, -1.5], u_upper=[1.0, 1.5])
    sol = mpc(x, target=goal)                  # x (B, 5), goal (B, 5)
    sol = mpc(x, target=goal, u_init=shift_one_step(sol.controls), u_prev=sol.controls[:, 0])
"""
from .cem import CEM, CEMSolution, soft_top_k
from .costs import Cost, CostExpansion, PSDWeight, TrackingCost
from .dynamics import Dynamics, LinearDynamics, NeuralResidual, autodiff_jacobians, rollout
from .ilqr import BACKWARD_MODES, MPC, shift_one_step
from .models import Cartpole, DiffDriveLag, KinematicBicycle, Pendulum, Unicycle
from .quadratic_cost import QuadraticCost
from .residual_cost import ResidualCost
from .solution import MPCSolution

__all__ = [
    'BACKWARD_MODES', 'MPC', 'MPCSolution', 'rollout', 'shift_one_step', 'CEM', 'CEMSolution', 'soft_top_k',
    'Dynamics', 'LinearDynamics', 'NeuralResidual', 'autodiff_jacobians',
    'DiffDriveLag', 'Unicycle', 'KinematicBicycle', 'Pendulum', 'Cartpole',
    'Cost', 'CostExpansion', 'PSDWeight', 'TrackingCost', 'QuadraticCost', 'ResidualCost',
]
