"""Differentiable nonlinear least squares on Lie groups (the SLAM back-end's solver).

Variables hold ``N`` elements of a group for ``B`` problems; factors are vectorized over
edges; an :class:`Objective` sums them; an :class:`Optimizer` runs Gauss-Newton or
Levenberg-Marquardt with a dense or sparse Cholesky solver and a selectable backward mode.
Errors follow GTSAM's convention ``0.5 sum ||r||^2_Sigma``. A 2D pose graph::

    import torch
    from diffopt_ros.lie import SE2
    from diffopt_ros.nlls import Between, Objective, Optimizer, Prior, Variable

    init = torch.zeros(4, 3, dtype=torch.float64)                    # 4 poses (x, y, theta)
    poses = Variable(SE2, init, name='poses')
    odom = torch.tensor([[1.0, 0, 1.5708]] * 4, dtype=torch.float64)  # a square, closing the loop
    weight = torch.tensor([100.0, 100.0, 400.0], dtype=torch.float64, requires_grad=True)
    edges = Between(poses, [0, 1, 2, 3], [1, 2, 3, 0], odom, information=torch.diag(weight))
    prior = Prior(poses, [0], init[:1], information=1e6 * torch.eye(3, dtype=torch.float64))
    result = Optimizer(Objective([prior, edges])).solve(backward='implicit')
    result['poses'][0, 2].sum().backward()                          # d/d(weight) via implicit diff
"""
from diffopt_ros.nlls.factors import (
                                      AutoDiffFactor,
                                      BearingRangeFactor,
                                      Between,
                                      Factor,
                                      Prior,
                                      RangeFactor,
                                      diagonal_information,
)
from diffopt_ros.nlls.linear import DenseCholesky, FactorizationError, SparseCholesky
from diffopt_ros.nlls.losses import Cauchy, GemanMcClure, Huber, RobustLoss
from diffopt_ros.nlls.objective import Objective
from diffopt_ros.nlls.optimizer import BACKWARD_MODES, Optimizer, SolveResult
from diffopt_ros.nlls.variables import Variable, Vector

__all__ = ['AutoDiffFactor', 'BearingRangeFactor', 'Between', 'Factor', 'Prior', 'RangeFactor',
           'diagonal_information', 'DenseCholesky', 'SparseCholesky', 'FactorizationError',
           'Cauchy', 'GemanMcClure', 'Huber', 'RobustLoss', 'Objective', 'Optimizer',
           'SolveResult', 'BACKWARD_MODES', 'Variable', 'Vector']
