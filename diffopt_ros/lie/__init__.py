"""Batched Lie groups SO(2), SE(2), SO(3), SE(3) on plain tensors (right-perturbation Jacobians).

Each group is a class of static methods (``exp, log, compose, inverse, between, retract, local,
act, adjoint, right_jacobian, right_jacobian_inv``, and ``compose_jacobians, inverse_jacobian,
between_jacobians``, ``act_jacobians`` for SE2/SE3) working on tensors with any leading batch
dimensions. Jacobians are with respect to right perturbations ``g exp(d)``; storage: SO2
angle ``(..., 1)``, SE2 ``(x, y, theta) (..., 3)``, SO3 matrix
``(..., 3, 3)``, SE3 ``[R | t] (..., 3, 4)``. Example::

    import torch
    from diffopt_ros.lie import SE2
    a = SE2.exp(torch.tensor([[1.0, 0.0, 0.5]]))        # (1, 3) pose
    b = SE2.compose(a, SE2.exp(torch.tensor([[0.2, 0.1, -0.3]])))
    d = SE2.local(a, b)                                   # tangent (1, 3): a exp(d) = b

:func:`wrap_angle` wraps angles to ``(-pi, pi]`` for tensors, numpy arrays and floats alike.
"""
from diffopt_ros.lie._util import wrap_angle
from diffopt_ros.lie.se2 import SE2
from diffopt_ros.lie.se3 import SE3
from diffopt_ros.lie.so2 import SO2
from diffopt_ros.lie.so3 import SO3

__all__ = ['SO2', 'SE2', 'SO3', 'SE3', 'wrap_angle']
