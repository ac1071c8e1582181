"""The factors of an incrementally solved pose graph and their linearizations, in growing arrays.

Priors ``r = log(z^-1 x_i)`` and betweens ``r = log(z^-1 x_i^-1 x_j)`` of one Lie group, each
with a square-root information ``S`` (``S^T S = Lambda``) and a Huber scale (whitened units; 0:
plain least squares). A factor ``f`` keeps its Gauss-Newton linearization in information form,
``hessian[f] (2 dof, 2 dof)`` and ``eta[f] (2 dof,)`` (``J^T W J`` and ``-J^T W r``; a prior
fills only the first ``dof`` rows and columns, its second key is -1), so that a clique of the
Bayes tree assembles its factors with one scatter. Both are views of one array ``system (F,
2 dof + 1, 2 dof + 1)``, ``[J -r]^T W [J -r]``, which one batched product fills. Errors
follow GTSAM's convention ``sum rho(||r||^2_Sigma)`` with ``rho(s) = s / 2`` (or Huber).
SE(2) is linearized in numpy (:mod:`~diffopt_ros.nlls.se2_numpy`), other groups through
:mod:`diffopt_ros.lie` in torch.
"""
from __future__ import annotations

import numpy as np
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import se2_numpy


class FactorStore:
    """Factors on variables ``0..N-1`` of ``group``; ids are consecutive from 0.

    Attributes:
        keys: ``(F, 2)`` variable ids (-1: none, a prior's second key).
        hessian: ``(F, 2 dof, 2 dof)`` and ``eta: (F, 2 dof)``: the linearizations (views
            of ``system``).
        of_variable: per variable, the ids of its factors.
    """

    def __init__(self, group):
        self.group = group
        d = group.dof
        self.count = 0
        self.keys = np.zeros((0, 2), dtype=np.int64)
        self.measurement = np.zeros((0, *group.shape))
        self.sqrt_info = np.zeros((0, d, d))
        self.huber = np.zeros(0)
        self._set_system(np.zeros((0, 2 * d + 1, 2 * d + 1)))
        self.of_variable: list[list[int]] = []

    def add(self, keys: tuple[int, ...], measurement: np.ndarray, sqrt_info: np.ndarray,
            huber: float) -> int:
        """Append a factor (keys already checked); returns its id."""
        index = self.count
        if index == len(self.keys):
            grow = max(256, index)
            d = self.group.dof
            self.keys = np.concatenate((self.keys, np.full((grow, 2), -1, dtype=np.int64)))
            self.measurement = np.concatenate((self.measurement, np.zeros((grow, *self.group.shape))))
            self.sqrt_info = np.concatenate((self.sqrt_info, np.zeros((grow, d, d))))
            self.huber = np.concatenate((self.huber, np.zeros(grow)))
            self._set_system(np.concatenate((self.system, np.zeros((grow, 2 * d + 1, 2 * d + 1)))))
        self.keys[index, :len(keys)] = keys
        self.measurement[index] = measurement
        self.sqrt_info[index] = sqrt_info
        self.huber[index] = huber
        self.count += 1
        for key in keys:
            self.of_variable[key].append(index)
        return index

    def _set_system(self, system: np.ndarray) -> None:
        width = system.shape[1] - 1
        self.system, self.hessian, self.eta = system, system[:, :width, :width], system[:, :width, width]

    def linearize(self, indices: np.ndarray, values: np.ndarray, jacobians: bool = True) -> np.ndarray:
        """Linearize factors ``indices (E,)`` at ``values (N, *group.shape)``: stores their
        Hessian blocks and returns their errors ``(E,)``."""
        indices = np.asarray(indices, dtype=np.int64)
        keys = self.keys[indices]
        prior = keys[:, 1] < 0
        if not prior.any() or prior.all():
            return self._linearize(indices, keys, values, jacobians) if len(indices) else np.zeros(0)
        error = np.zeros(len(indices))
        for mask in (prior, ~prior):
            error[mask] = self._linearize(indices[mask], keys[mask], values, jacobians)
        return error

    def error(self, values: np.ndarray) -> float:
        """Objective ``sum rho(||r||^2_Sigma)`` of all factors at ``values``."""
        return float(self.linearize(np.arange(self.count), values, jacobians=False).sum())

    def _linearize(self, indices: np.ndarray, keys: np.ndarray, values: np.ndarray,
                   jacobians: bool) -> np.ndarray:
        """Factors ``indices`` with ``keys (E, 2)`` of one arity (all priors or all betweens)."""
        z, S = self.measurement[indices], self.sqrt_info[indices]
        unary = keys[0, 1] < 0
        if self.group is SE2 and jacobians and len(indices) <= se2_numpy.FEW:
            system = se2_numpy.linearize_few(z, values[keys[:, 0]], None if unary else values[keys[:, 1]])
        else:
            if self.group is SE2 and unary:
                r, J = se2_numpy.prior_factor(z, values[keys[:, 0]], jacobians)
            elif self.group is SE2:
                r, J = se2_numpy.between_factor(z, values[keys[:, 0]], values[keys[:, 1]], jacobians)
            else:
                r, J = self._linearize_torch(z, values, keys[:, :1] if unary else keys, jacobians)
            if not jacobians:
                r = (S @ r[:, :, None])[:, :, 0]                             # whitened
                return self._robust(indices, (r * r).sum(axis=1))[0]
            system = np.concatenate((*J, -r[:, :, None]), axis=2)
        width = system.shape[2] - 1
        system = S @ system                                              # whitened [J -r]
        system = system.transpose(0, 2, 1) @ system                      # [[J'J, -J'r], [., r'r]]
        error, weight = self._robust(indices, system[:, width, width])
        if weight is not None:
            system *= weight[:, None, None]
        if width == self.hessian.shape[1]:
            self.system[indices] = system
        else:                                                            # priors: the first key
            self.hessian[indices, :width, :width] = system[:, :width, :width]
            self.eta[indices, :width] = system[:, :width, width]
        return error

    def _robust(self, indices: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Errors ``rho(s)`` of factors ``indices`` with whitened squared residuals ``s (E,)``,
        and the weights of their Gauss-Newton blocks (None: all 1, no Huber loss active)."""
        huber = self.huber[indices]
        root = np.sqrt(s)
        outside = (huber > 0) & (root > huber)
        if not outside.any():
            return 0.5 * s, None
        return (np.where(outside, huber * root - 0.5 * huber * huber, 0.5 * s),
                np.where(outside, huber / np.maximum(root, 1e-300), 1.0))

    def _linearize_torch(self, z, values, keys, jacobians):
        """Residuals and Jacobians of any :mod:`diffopt_ros.lie` group (as numpy arrays)."""
        G = self.group
        z, x = torch.from_numpy(z), torch.from_numpy(values)
        with torch.no_grad():
            if keys.shape[1] == 1:
                r = G.log(G.between(z, x[keys[:, 0]]))
                J = [G.right_jacobian_inv(r)] if jacobians else []
            else:
                rel = G.between(x[keys[:, 0]], x[keys[:, 1]])
                r = G.log(G.between(z, rel))
                J = []
                if jacobians:
                    J_inv = G.right_jacobian_inv(r)
                    J = [-(J_inv @ G.adjoint(G.inverse(rel))), J_inv]
        return r.numpy(), [j.numpy() for j in J]


def retract(group, values: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``values (E, *group.shape)`` retracted by ``delta (E, dof)`` (``x exp(delta)``)."""
    if group is SE2:
        return se2_numpy.retract(values, delta)
    with torch.no_grad():
        return group.retract(torch.from_numpy(values), torch.from_numpy(delta)).numpy()
