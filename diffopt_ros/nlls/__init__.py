"""Differentiable nonlinear least squares on Lie groups (the SLAM back-end's solver).

Variables hold ``N`` elements of a group for ``B`` problems; factors are vectorized over
edges; an :class:`Objective` sums them; an :class:`Optimizer` runs Gauss-Newton or
Levenberg-Marquardt with a dense or sparse Cholesky solver and a selectable backward mode.
Errors follow GTSAM's convention ``0.5 sum ||r||^2_Sigma``. A differentiable 2D pose graph
(a square driven twice; learn the odometry weights by backpropagating through the solve)::

    import torch
    from diffopt_ros.lie import SE2
    from diffopt_ros.nlls import Between, Objective, Optimizer, Prior, Variable

    torch.set_default_dtype(torch.float64)
    odom = SE2.compose(torch.tensor([1.0, 0.0, torch.pi / 2]).expand(8, 3), SE2.exp(0.05 * torch.randn(8, 3)))
    init = [SE2.identity()]
    for z in odom:                                                  # dead reckoning
        init.append(SE2.compose(init[-1], z))
    poses = Variable(SE2, torch.stack(init), name='poses')          # 9 poses (x, y, theta)
    log_w = torch.zeros(3, requires_grad=True)                      # learnable log-information
    edges = Between(poses, range(8), range(1, 9), odom, torch.diag(100 * log_w.exp()))
    loop = Between(poses, [0], [8], torch.zeros(1, 3), 1e3 * torch.eye(3))   # back at the start
    prior = Prior(poses, [0], SE2.identity(1), 1e6 * torch.eye(3))
    result = Optimizer(Objective([prior, edges, loop])).solve(backward='implicit')
    loss = (result['poses'][0, 4, :2] - torch.tensor([0.0, 0.0])).norm()    # pose 4 is at the origin
    loss.backward()                                                  # log_w.grad = d loss / d log_w
"""
from diffopt_ros.lazy_exports import lazy_exports

# the public names and their modules: imported on first use (PEP 562), so that ``diffopt-ros pgo``
# and ``diffopt_ros.nlls.io`` can answer a usage or file error without importing torch
_EXPORTS = {
    'AutoDiffFactor': 'factors', 'BearingRangeFactor': 'factors', 'Between': 'factors',
    'Factor': 'factors', 'PoseToPoint': 'factors', 'Prior': 'factors', 'RangeFactor': 'factors',
    'diagonal_information': 'factors', 'DenseCholesky': 'linear', 'SparseCholesky': 'linear',
    'FactorizationError': 'linear', 'Cauchy': 'losses', 'GemanMcClure': 'losses', 'Huber': 'losses',
    'RobustLoss': 'losses', 'Objective': 'objective', 'Optimizer': 'optimizer',
    'SolveResult': 'optimizer', 'BACKWARD_MODES': 'optimizer', 'Variable': 'variables',
    'Vector': 'variables',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
