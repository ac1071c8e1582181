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

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import se2_numpy


class FactorStore:
    """Factors on variables ``0..N-1`` of ``group``; ids are consecutive from 0.

    A factor's data is kept as Python objects (what the few-factor path of an online update
    reads) and copied into the arrays ``keys``, ``measurement``, ``sqrt_info`` and ``huber``
    in bulk when one of them is next read (what the array code reads).

    Attributes:
        pairs: per factor, its keys ``(i, j)`` (-1: none, a prior's second key).
        measurements, sqrt_infos, hubers: per factor, its measurement (the group's shape
            flattened, a tuple of floats), square-root information ``(dof, dof)`` (shared
            between factors, never modified) and Huber scale.
        keys: ``(F, 2)``, ``measurement (F, *group.shape)``, ``sqrt_info (F, dof, dof)``,
            ``huber (F,)``: the same as arrays (with spare rows).
        hessian: ``(F, 2 dof, 2 dof)`` and ``eta: (F, 2 dof)``: the linearizations (views
            of ``system``).
        of_variable: per variable, the ids of its factors.
    """

    def __init__(self, group):
        self.group = group
        d = group.dof
        self.count = 0
        self.pairs: list[tuple[int, int]] = []
        self.measurements: list[tuple[float, ...]] = []
        self.sqrt_infos: list[np.ndarray] = []
        self.hubers: list[float] = []
        self.of_variable: list[list[int]] = []
        self._copied = 0                                # factors copied into the arrays
        self._keys = np.zeros((0, 2), dtype=np.int64)
        self._measurement = np.zeros((0, *group.shape))
        self._sqrt_info = np.zeros((0, d, d))
        self._huber = np.zeros(0)
        self._set_system(np.zeros((0, 2 * d + 1, 2 * d + 1)))

    def add(self, keys: tuple[int, ...], measurement: tuple[float, ...], sqrt_info: np.ndarray,
            huber: float) -> int:
        """Append a factor (all checked already); returns its id."""
        index = self.count
        if index == len(self.system):
            d = self.group.dof
            self._set_system(np.concatenate((self.system, np.zeros((max(256, index), 2 * d + 1, 2 * d + 1)))))
        self.count += 1
        self.pairs.append((keys[0], keys[1] if len(keys) > 1 else -1))
        self.measurements.append(measurement)
        self.sqrt_infos.append(sqrt_info)
        self.hubers.append(huber)
        for key in keys:
            self.of_variable[key].append(index)
        return index

    @property
    def keys(self) -> np.ndarray:
        self._copy()
        return self._keys

    @property
    def measurement(self) -> np.ndarray:
        self._copy()
        return self._measurement

    @property
    def sqrt_info(self) -> np.ndarray:
        self._copy()
        return self._sqrt_info

    @property
    def huber(self) -> np.ndarray:
        self._copy()
        return self._huber

    def _copy(self) -> None:
        """Copy the factors added since the last call into the arrays."""
        first, count = self._copied, self.count
        if first == count:
            return
        if count > len(self._keys):
            grow = len(self.system) - len(self._keys)
            self._keys = np.concatenate((self._keys, np.zeros((grow, 2), dtype=np.int64)))
            self._measurement = np.concatenate((self._measurement, np.zeros((grow, *self.group.shape))))
            self._sqrt_info = np.concatenate((self._sqrt_info, np.zeros((grow, *self._sqrt_info.shape[1:]))))
            self._huber = np.concatenate((self._huber, np.zeros(grow)))
        self._keys[first:count] = self.pairs[first:count]
        self._measurement[first:count] = np.reshape(self.measurements[first:count], (-1, *self.group.shape))
        self._sqrt_info[first:count] = self.sqrt_infos[first:count]
        self._huber[first:count] = self.hubers[first:count]
        self._copied = count

    def snapshot(self, count: int) -> Linearization:
        """The first ``count`` factors as linearized now (their systems copied; later
        relinearizations and factors do not show in it)."""
        keys = self.keys         # rows below count are never written again (the array may be replaced)
        of_variable = [[f for f in ids if f < count] if ids and ids[-1] >= count else list(ids)
                       for ids in self.of_variable]
        system = self.system[:count].copy()
        width = system.shape[1] - 1
        hessian, eta = system[:, :width, :width], system[:, :width, width]
        return Linearization(self.pairs, of_variable, keys, hessian, eta)

    def _set_system(self, system: np.ndarray) -> None:
        width = system.shape[1] - 1
        self.system, self.hessian, self.eta = system, system[:, :width, :width], system[:, :width, width]

    def linearize(self, indices, values: np.ndarray, jacobians: bool = True) -> np.ndarray:
        """Linearize factors ``indices (E,)`` (ids: an array or a list) at ``values (N,
        *group.shape)``: stores their Hessian blocks and returns their errors ``(E,)``."""
        if not len(indices):
            return np.zeros(0)
        if self.group is SE2 and jacobians and len(indices) <= se2_numpy.FEW:
            return self._linearize_few(indices, values)
        indices = np.asarray(indices, dtype=np.int64)
        keys = self.keys[indices]
        prior = keys[:, 1] < 0
        if not prior.any() or prior.all():
            return self._linearize(indices, keys, values, jacobians)
        error = np.zeros(len(indices))
        for mask in (prior, ~prior):
            error[mask] = self._linearize(indices[mask], keys[mask], values, jacobians)
        return error

    def _linearize_few(self, indices, values: np.ndarray) -> np.ndarray:
        """:meth:`linearize` of at most ``se2_numpy.FEW`` SE(2) factors (priors and betweens
        together) on Python floats (:func:`~diffopt_ros.nlls.se2_numpy.linearize_few`): a
        prior's system is that of a between with ``J_j = 0``."""
        pairs, hubers, z, xi, xj, S = self.pairs, self.hubers, [], [], [], []
        for f in indices:
            a, b = pairs[f]
            z.append(self.measurements[f])
            xi.append(values[a].tolist())
            xj.append(values[b].tolist() if b >= 0 else None)
            S.append(self.sqrt_infos[f])
        system = np.array(S) @ se2_numpy.linearize_few(z, xi, xj)         # whitened [J -r]
        system = system.transpose(0, 2, 1) @ system                        # [[J'J, -J'r], [., r'r]]
        errors, weights = [], None
        for e, (f, s) in enumerate(zip(indices, system[:, -1, -1].tolist())):
            k = hubers[f]
            root = math.sqrt(s)
            if k > 0 and root > k:
                errors.append(k * root - 0.5 * k * k)
                if weights is None:
                    weights = [1.0] * len(indices)
                weights[e] = k / root
            else:
                errors.append(0.5 * s)
        if weights is not None:
            system *= np.array(weights)[:, None, None]
        self.system[indices] = system
        return np.array(errors)

    def error(self, values: np.ndarray) -> float:
        """Objective ``sum rho(||r||^2_Sigma)`` of all factors at ``values``."""
        return float(self.linearize(np.arange(self.count), values, jacobians=False).sum())

    def _linearize(self, indices: np.ndarray, keys: np.ndarray, values: np.ndarray,
                   jacobians: bool) -> np.ndarray:
        """Factors ``indices`` with ``keys (E, 2)`` of one arity (all priors or all betweens)."""
        z, S = self.measurement[indices], self.sqrt_info[indices]
        unary = keys[0, 1] < 0
        if self.group is SE2 and unary:
            r, J = se2_numpy.prior_factor(z, values[keys[:, 0]], jacobians)
        elif self.group is SE2:
            r, J = se2_numpy.between_factor(z, values[keys[:, 0]], values[keys[:, 1]], jacobians)
        else:
            r, J = self._linearize_torch(z, values, keys[:, :1] if unary else keys, jacobians)
        if not jacobians:
            r = (S @ r[:, :, None])[:, :, 0]                                 # whitened
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
                J = list(G.between_log_jacobians(rel, r)) if jacobians else []
        return r.numpy(), [j.numpy() for j in J]


def retract(group, values: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``values (E, *group.shape)`` retracted by ``delta (E, dof)`` (``x exp(delta)``)."""
    if group is SE2:
        return se2_numpy.retract(values, delta)
    with torch.no_grad():
        return group.retract(torch.from_numpy(values), torch.from_numpy(delta)).numpy()


@dataclass(frozen=True)
class Linearization:
    """What a :class:`FactorStore` held at one moment, as the Bayes tree reads it: ``pairs``
    (shared with the store: appended to, never changed), ``of_variable`` (per variable, its
    factors then), ``keys (F', 2)`` (rows of later factors may follow) and the systems
    ``hessian (F, 2 dof, 2 dof)`` and ``eta (F, 2 dof)`` (a copy)."""

    pairs: list[tuple[int, int]]
    of_variable: list[list[int]]
    keys: np.ndarray
    hessian: np.ndarray
    eta: np.ndarray
