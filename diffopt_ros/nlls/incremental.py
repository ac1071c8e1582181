"""Incremental smoothing of a growing pose graph (iSAM2-style: Bayes-tree re-elimination with
fluid relinearization), for online SLAM back-ends.

The graph's Gauss-Newton system is kept *eliminated*: every variable ``v`` holds a Gaussian
conditional ``delta_v = m_v - K_v delta_S(v)`` on its separator ``S(v)`` (the variables that
are eliminated after it and share a factor or fill with it) and the cached marginal it passed
on (the Schur complement of its subtree on ``S(v)``). The first variable of ``S(v)`` to be
eliminated is ``v``'s parent: variables and parents form the elimination tree, the
variable-level form of iSAM2's Bayes tree (Kaess et al., "iSAM2: Incremental smoothing and
mapping using the Bayes tree", IJRR 2012). One :meth:`IncrementalSmoother.update`

1. relinearizes the variables whose solution moved more than ``relinearize_threshold`` from
   their linearization point (fluid relinearization) and linearizes the new factors;
2. takes the variables of the new and relinearized factors and all their ancestors (the top
   of the tree), removes their conditionals, and re-eliminates exactly them: their own factors
   plus the cached marginals of the subtrees hanging below (the orphans, left untouched), in a
   fresh greedy minimum-degree order with the variables of the new factors last (newest last:
   so the next update only touches the top again, and loop closures do not refactor the past);
3. back-substitutes from the new top down, continuing into a subtree only while its solution
   changes by more than ``wildfire_threshold`` (iSAM2's partial back-substitution).

On a trajectory the top is a handful of variables per keyframe; a loop closure re-eliminates
the loop's path up the tree. The estimate after each update is one Gauss-Newton step on what
changed; :meth:`IncrementalSmoother.converge` iterates updates with every moved variable
relinearized until the steps vanish: then it is the batch Gauss-Newton / Levenberg-Marquardt
optimum (tested against :class:`~diffopt_ros.nlls.optimizer.Optimizer`).

Linear algebra runs in float64 numpy on the CPU on small dense blocks (a variable's
conditional is ``dof x dof(1 + |S|)``); factor residuals and Jacobians use
:mod:`diffopt_ros.lie` (any group: SE2, SE3). Not differentiable: learning differentiates the
batch solve (:class:`~diffopt_ros.nlls.optimizer.Optimizer`), which reaches the same estimate.
Errors follow GTSAM's convention ``sum rho(||r||^2_Sigma)`` with ``rho(s) = s / 2`` (or Huber).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.lie._util import SMALL_ANGLE


@dataclass(frozen=True)
class UpdateStats:
    """What one :meth:`IncrementalSmoother.update` did.

    Attributes:
        relinearized: variables relinearized (their factors re-linearized).
        eliminated: variables re-eliminated (the top of the tree).
        solved: conditionals back-substituted.
        max_step: largest ``|delta|`` component of the re-eliminated variables (m or rad).
    """

    relinearized: int
    eliminated: int
    solved: int
    max_step: float


class _Factor:
    """One factor: ``keys`` (1 for a prior, 2 for a between), measurement, square-root
    information ``S`` (``S^T S = Lambda``), Huber scale (0: plain least squares), and its
    linearization: ``hessian (D, D)``, ``eta (D,)`` (``-J^T W r``), ``error``."""

    __slots__ = ('keys', 'measurement', 'sqrt_info', 'huber', 'hessian', 'eta', 'error')

    def __init__(self, keys, measurement, sqrt_info, huber):
        self.keys, self.measurement, self.sqrt_info, self.huber = keys, measurement, sqrt_info, huber
        self.hessian = self.eta = None
        self.error = 0.0


class IncrementalSmoother:
    """An incrementally solved pose graph of one Lie group (default SE(2)).

    Args:
        group: a :mod:`diffopt_ros.lie` group (poses are ``(*group.shape)`` arrays).
        relinearize_threshold: relinearize a variable when a component of its solution moved
            more than this from the linearization point (m or rad; GTSAM's default 0.1).
        wildfire_threshold: back-substitution continues into a subtree while its solution
            changes by more than this (0: always, the exact linear solution).

    Example::

        smoother = IncrementalSmoother()
        smoother.add_variable(0, (0.0, 0.0, 0.0))
        smoother.add_prior(0, (0.0, 0.0, 0.0), 1e6 * np.eye(3))
        smoother.update()
        smoother.add_variable(1, (1.0, 0.0, 0.0))
        smoother.add_between(0, 1, (1.0, 0.0, 0.1), 100 * np.eye(3))
        smoother.update()
        smoother.estimate()          # (2, 3)
    """

    def __init__(self, group=SE2, relinearize_threshold: float = 0.1,
                 wildfire_threshold: float = 1e-3):
        self.group = group
        self.dof = group.dof
        self.relinearize_threshold = float(relinearize_threshold)
        self.wildfire_threshold = float(wildfire_threshold)
        d = self.dof
        self._theta = np.zeros((0, *group.shape))      # linearization points
        self._delta = np.zeros((0, d))                 # solution relative to them
        self._var_factors: list[list[int]] = []
        self._factors: list[_Factor] = []
        self._parent: list[int] = []                   # -1: a root, -2: not eliminated yet
        self._children: list[set[int]] = []
        self._separator: list[tuple[int, ...]] = []
        self._gain: list[np.ndarray | None] = []       # K_v (d, d |S|)
        self._mean: list[np.ndarray | None] = []       # m_v (d,)
        self._marginal: list[tuple | None] = []        # (hessian, eta) on the separator
        self._merged: list[bool] = []                  # in its parent's clique (no marginal kept)
        self._root_information: dict[int, np.ndarray] = {}
        self._new_factors: list[int] = []
        self._new_variables: list[int] = []

    # ------------------------------------------------------------------ building the graph
    @property
    def num_variables(self) -> int:
        """Variables added so far (ids ``0..N-1``)."""
        return len(self._theta)

    @property
    def num_factors(self) -> int:
        """Factors added so far."""
        return len(self._factors)

    def add_variable(self, key: int, initial) -> None:
        """Add variable ``key`` (the next id, ``num_variables``) at ``initial`` (group shape)."""
        if key != self.num_variables:
            raise ValueError(f'incremental smoother: variable {key} added, expected the next id '
                             f'{self.num_variables} (ids are consecutive from 0)')
        value = np.asarray(initial, dtype=np.float64).reshape(1, *self.group.shape)
        if not np.isfinite(value).all():
            raise ValueError(f'incremental smoother: variable {key}: non-finite initial value {value[0]}')
        if key == len(self._delta):
            grow = max(64, len(self._delta))
            self._delta = np.concatenate((self._delta, np.zeros((grow, self.dof))))
        self._theta = np.concatenate((self._theta, value)) if len(self._theta) else value
        for store, item in ((self._var_factors, []), (self._children, set()),
                            (self._separator, ()), (self._gain, None), (self._mean, None),
                            (self._marginal, None), (self._parent, -2), (self._merged, False)):
            store.append(item)
        self._new_variables.append(key)

    def add_prior(self, key: int, measurement, information) -> int:
        """Prior ``r = log(z^-1 x_key)`` with ``information (dof, dof)``; returns the factor id."""
        return self._add_factor((key,), measurement, information, 0.0)

    def add_between(self, i: int, j: int, measurement, information, huber: float = 0.0) -> int:
        """Between ``r = log(z^-1 x_i^-1 x_j)`` with ``information (dof, dof)`` and a Huber loss
        of scale ``huber`` (whitened units; 0: none); returns the factor id."""
        if i == j:
            raise ValueError(f'incremental smoother: between factor from variable {i} to itself')
        return self._add_factor((i, j), measurement, information, huber)

    def _add_factor(self, keys, measurement, information, huber) -> int:
        for key in keys:
            if not 0 <= key < self.num_variables:
                raise IndexError(f'incremental smoother: factor on variable {key}, but only '
                                 f'{self.num_variables} variables exist (add_variable first)')
        z = np.asarray(measurement, dtype=np.float64).reshape(self.group.shape)
        info = np.asarray(information, dtype=np.float64)
        if info.shape != (self.dof, self.dof):
            raise ValueError(f'incremental smoother: information of shape {info.shape} is not '
                             f'({self.dof}, {self.dof})')
        if not (np.isfinite(z).all() and np.isfinite(info).all()):
            raise ValueError(f'incremental smoother: factor on {keys}: non-finite measurement or information')
        try:
            sqrt_info = np.linalg.cholesky(0.5 * (info + info.T)).T
        except np.linalg.LinAlgError as exc:
            raise ValueError(f'incremental smoother: factor on {keys}: information is not '
                             'positive definite') from exc
        index = len(self._factors)
        self._factors.append(_Factor(tuple(int(k) for k in keys), z, sqrt_info, float(huber)))
        for key in keys:
            self._var_factors[key].append(index)
        self._new_factors.append(index)
        return index

    # ------------------------------------------------------------------ results
    def estimate(self) -> np.ndarray:
        """``(N, *group.shape)``: linearization points retracted by the current solution."""
        n = self.num_variables
        if n == 0:
            return self._theta.copy()
        return self._retract(self._theta, self._delta[:n])

    def estimate_of(self, key: int) -> np.ndarray:
        """``(*group.shape)``: the current estimate of one variable."""
        return self._retract(self._theta[key:key + 1], self._delta[key:key + 1])[0]

    def error(self, values: np.ndarray | None = None) -> float:
        """Objective ``sum rho(||r||^2_Sigma)`` at ``values`` (default: :meth:`estimate`)."""
        values = self.estimate() if values is None else np.asarray(values, dtype=np.float64)
        total = 0.0
        for group in self._by_arity(range(len(self._factors))):
            total += float(self._linearize(group, values, jacobians=False).sum())
        return total

    def marginal_covariance(self, key: int) -> np.ndarray:
        """``(dof, dof)`` marginal covariance of a variable that is a root of the elimination tree
        (the newest variable after an update that added factors on it: it is eliminated last),
        in its right (body-frame) tangent space at the current linearization."""
        if key not in self._root_information:
            raise ValueError(f'incremental smoother: variable {key} is not a root of the '
                             'elimination tree (only the newest variable\'s marginal is kept)')
        return _spd_inverse(self._root_information[key])

    # ------------------------------------------------------------------ linearization
    def _by_arity(self, indices):
        priors = [f for f in indices if len(self._factors[f].keys) == 1]
        betweens = [f for f in indices if len(self._factors[f].keys) == 2]
        return [group for group in (priors, betweens) if group]

    def _linearize(self, indices: list[int], values: np.ndarray, jacobians: bool = True):
        """Linearize factors ``indices`` (all of one arity) at ``values``; stores the Hessian
        blocks and returns the errors ``(E,)``."""
        G = self.group
        factors = [self._factors[f] for f in indices]
        keys = np.array([f.keys for f in factors])                       # (E, arity)
        z = np.stack([f.measurement for f in factors])
        S = np.stack([f.sqrt_info for f in factors])                     # (E, d, d)
        if G is SE2:
            if keys.shape[1] == 1:
                r, J = _se2_prior_factor(z, values[keys[:, 0]], jacobians)
            else:
                r, J = _se2_between_factor(z, values[keys[:, 0]], values[keys[:, 1]], jacobians)
        else:
            r, J = self._linearize_torch(torch.from_numpy(z), torch.from_numpy(values), keys, jacobians)
        r = np.einsum('eij,ej->ei', S, r)                        # whitened
        s = np.einsum('ei,ei->e', r, r)
        huber = np.array([f.huber for f in factors])
        robust = huber > 0
        root = np.sqrt(s)
        outside = robust & (root > huber)
        error = np.where(outside, huber * root - 0.5 * huber * huber, 0.5 * s)
        if not jacobians:
            return error
        weight = np.where(outside, huber / np.maximum(root, 1e-300), 1.0)
        Jw = np.einsum('eij,ejk->eik', S, np.concatenate(J, axis=2))
        hessian = weight[:, None, None] * np.einsum('eki,ekj->eij', Jw, Jw)
        eta = -weight[:, None] * np.einsum('eki,ek->ei', Jw, r)
        for f, h, e, err in zip(factors, hessian, eta, error):
            f.hessian, f.eta, f.error = h, e, float(err)
        return error

    def _retract(self, values: np.ndarray, delta: np.ndarray) -> np.ndarray:
        if self.group is SE2:
            return _se2_retract(values, delta)
        with torch.no_grad():
            return self.group.retract(torch.from_numpy(values), torch.from_numpy(delta)).numpy()

    def _linearize_torch(self, z, x, keys, jacobians):
        """Residuals and Jacobians of any :mod:`diffopt_ros.lie` group (as numpy arrays)."""
        G = self.group
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

    # ------------------------------------------------------------------ the update
    def update(self, relinearize: bool = True) -> UpdateStats:
        """Fold in the factors and variables added since the last update, relinearize what
        moved (if ``relinearize``), re-eliminate the affected top of the tree and solve."""
        n = self.num_variables
        relinearized = []
        if relinearize and n:
            moved = np.abs(self._delta[:n]).max(axis=1) > self.relinearize_threshold
            moved[self._new_variables] = False
            relinearized = np.nonzero(moved)[0].tolist()
        if relinearized:
            self._theta[relinearized] = self._retract(self._theta[relinearized],
                                                      self._delta[relinearized])
            self._delta[relinearized] = 0.0
        touched = set(self._new_factors)
        for v in relinearized:
            touched.update(self._var_factors[v])
        for group in self._by_arity(sorted(touched)):
            self._linearize(group, self._theta)
        changed = set(self._new_variables)
        for f in touched:
            changed.update(self._factors[f].keys)
        last = [v for f in self._new_factors for v in self._factors[f].keys]
        if 2 * len(set(last)) > n:     # a batch start: constrain only the newest variable
            last = []
        last.append(n - 1)
        self._new_factors, self._new_variables = [], []
        if not changed:
            return UpdateStats(0, 0, 0, 0.0)
        top = self._top(changed)
        order = self._order(top, last)
        self._eliminate(order)
        solved = self._solve(order)
        step = float(np.abs(self._delta[order]).max()) if order else 0.0
        return UpdateStats(len(relinearized), len(order), solved, step)

    def converge(self, max_updates: int = 50, tolerance: float = 1e-9) -> int:
        """Relinearize every variable that moved and update, until the largest step is below
        ``tolerance`` (Gauss-Newton on the whole graph, re-eliminating only what moved);
        returns the number of updates run."""
        threshold, wildfire = self.relinearize_threshold, self.wildfire_threshold
        self.relinearize_threshold = self.wildfire_threshold = 0.0
        try:
            self.update()
            for count in range(1, max_updates + 1):
                n = self.num_variables
                if not n or float(np.abs(self._delta[:n]).max()) < tolerance:
                    return count
                self.update()
            return max_updates
        finally:
            self.relinearize_threshold, self.wildfire_threshold = threshold, wildfire

    def _top(self, changed: set[int]) -> set[int]:
        """``changed``, all their ancestors in the elimination tree, and the members of their
        cliques below them (variables merged into a parent keep no cached marginal, so they
        are re-eliminated with it, as iSAM2 re-eliminates whole cliques)."""
        top: set[int] = set()
        for v in changed:
            while v >= 0 and v not in top:
                top.add(v)
                v = self._parent[v]
        stack = list(top)
        while stack:
            for u in self._children[stack.pop()]:
                if self._merged[u] and u not in top:
                    top.add(u)
                    stack.append(u)
        return top

    def _order(self, top: set[int], last: list[int]) -> list[int]:
        """Greedy minimum-degree elimination order of ``top`` on the graph of its factors and
        of the orphans' separators, with the variables in ``last`` after all others (in the
        order given: the newest variable, added last, is eliminated last)."""
        adjacent: dict[int, set[int]] = {v: set() for v in top}
        for v in top:
            for f in self._var_factors[v]:
                keys = self._factors[f].keys
                if len(keys) == 2 and keys[0] in top and keys[1] in top:
                    adjacent[keys[0]].add(keys[1])
                    adjacent[keys[1]].add(keys[0])
            for u in self._children[v]:
                if u not in top:
                    separator = self._separator[u]
                    for a in separator:
                        adjacent[a].update(separator)
        for v in top:
            adjacent[v].discard(v)
        constrained = list(reversed(dict.fromkeys(v for v in reversed(last) if v in top)))
        late = set(constrained)
        heap = [(len(adjacent[v]), v) for v in top if v not in late]
        heapq.heapify(heap)
        order, done = [], set()
        while heap:
            degree, v = heapq.heappop(heap)
            if v in done or degree != len(adjacent[v]):
                continue
            order.append(v)
            done.add(v)
            neighbours = adjacent.pop(v)
            for a in neighbours:     # eliminating v joins its neighbours into a clique
                adjacent[a].update(neighbours)
                adjacent[a].discard(a)
                adjacent[a].discard(v)
                if a not in late:
                    heapq.heappush(heap, (len(adjacent[a]), a))
        return order + constrained

    def _eliminate(self, order: list[int]) -> None:
        """Re-eliminate the variables of ``order`` (the top), in that order."""
        d = self.dof
        rank = {v: k for k, v in enumerate(order)}
        pending: dict[int, list[tuple]] = {v: [] for v in order}
        seen = set()
        for v in order:
            self._root_information.pop(v, None)
            for f in self._var_factors[v]:
                if f in seen:
                    continue
                keys = self._factors[f].keys
                if all(k in rank for k in keys):
                    seen.add(f)
                    factor = self._factors[f]
                    pending[min(keys, key=rank.__getitem__)].append((keys, factor.hessian, factor.eta))
        orphans = []
        for v in order:
            kept = set()
            for u in self._children[v]:
                if u not in rank:
                    orphans.append(u)
                    kept.add(u)
            self._children[v] = kept
        for u in orphans:
            separator = self._separator[u]
            first = min(separator, key=rank.__getitem__)
            self._children[self._parent[u]].discard(u)
            self._parent[u] = first
            self._children[first].add(u)
            hessian, eta = self._marginal[u]
            pending[first].append((separator, hessian, eta))
        span = np.arange(d)
        for v in order:
            items = pending.pop(v)
            others = {k for keys, _, _ in items for k in keys}
            others.discard(v)
            separator = tuple(sorted(others, key=rank.__getitem__))
            slot = {v: 0}
            for k, key in enumerate(separator, 1):
                slot[key] = k
            size = d * (1 + len(separator))
            M = np.zeros((size, size))
            e = np.zeros(size)
            for keys, hessian, eta in items:
                if len(keys) == 1:
                    a = d * slot[keys[0]]
                    M[a:a + d, a:a + d] += hessian
                    e[a:a + d] += eta
                elif len(keys) == 2:        # a between factor: four blocks
                    a, b = d * slot[keys[0]], d * slot[keys[1]]
                    M[a:a + d, a:a + d] += hessian[:d, :d]
                    M[a:a + d, b:b + d] += hessian[:d, d:]
                    M[b:b + d, a:a + d] += hessian[d:, :d]
                    M[b:b + d, b:b + d] += hessian[d:, d:]
                    e[a:a + d] += eta[:d]
                    e[b:b + d] += eta[d:]
                else:
                    index = (d * np.array([slot[k] for k in keys])[:, None] + span).ravel()
                    M[np.ix_(index, index)] += hessian
                    e[index] += eta
            own, cross = M[:d, :d], M[:d, d:]
            inverse = _spd_inverse(own)
            solved = inverse @ np.concatenate((cross, e[:d, None]), axis=1)
            gain, mean = solved[:, :-1], solved[:, -1]
            self._gain[v], self._mean[v] = gain, mean
            self._separator[v] = separator
            if separator:
                marginal = (M[d:, d:] - cross.T @ gain, e[d:] - cross.T @ mean)
                self._marginal[v] = marginal
                parent = separator[0]
                pending[parent].append((separator, *marginal))
            else:
                self._marginal[v] = None
                parent = -1
                self._root_information[v] = own.copy()
            self._parent[v] = parent
            if parent >= 0:
                self._children[parent].add(v)
        for v in order:      # supernodes: v and its parent share all but the parent itself
            parent = self._parent[v]
            merged = parent >= 0 and len(self._separator[v]) == len(self._separator[parent]) + 1
            self._merged[v] = merged
            if merged:
                self._marginal[v] = None

    def _solve(self, order: list[int]) -> int:
        """Back-substitute the re-eliminated variables (top down), then into the subtrees
        below while their solution changes by more than ``wildfire_threshold``."""
        delta = self._delta
        for v in reversed(order):
            separator = self._separator[v]
            delta[v] = self._mean[v] - (self._gain[v] @ delta[list(separator)].ravel()
                                        if separator else 0.0)
        solved = len(order)
        top = set(order)
        stack = [u for v in order for u in self._children[v] if u not in top]
        threshold = self.wildfire_threshold
        while stack:
            u = stack.pop()
            new = self._mean[u] - self._gain[u] @ delta[list(self._separator[u])].ravel()
            solved += 1
            change = max(map(abs, (new - delta[u]).tolist()))
            delta[u] = new
            if change > threshold or threshold == 0:
                stack.extend(self._children[u])
        return solved


def _spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a small symmetric positive (semi-)definite ``(d, d)`` matrix: closed form for
    d = 3 (a LAPACK call costs far more than the arithmetic at this size), else
    ``numpy.linalg.inv``; a singular one (an unconstrained variable: a gauge freedom) gets a
    relative damping of 1e-9 of its trace."""
    if matrix.shape[0] != 3:
        try:
            return np.linalg.inv(matrix)
        except np.linalg.LinAlgError:
            damped = matrix + 1e-9 * max(float(np.trace(matrix)), 1.0) * np.eye(len(matrix))
            return np.linalg.inv(damped)
    (a, b, c), (_, e, f), (_, _, i) = matrix.tolist()
    scale = max(a + e + i, 1.0)
    for damp in (0.0, 1e-9 * scale):
        a_, e_, i_ = a + damp, e + damp, i + damp
        cofactor_a, cofactor_b, cofactor_c = e_ * i_ - f * f, c * f - b * i_, b * f - c * e_
        det = a_ * cofactor_a + b * cofactor_b + c * cofactor_c
        if det > 1e-15 * scale ** 3:
            break
    return np.array([[cofactor_a, cofactor_b, cofactor_c],
                     [cofactor_b, a_ * i_ - c * c, b * c - a_ * f],
                     [cofactor_c, b * c - a_ * f, a_ * e_ - b * b]]) / det


# ---------------------------------------------------------------------- SE(2) in numpy
# The closed forms of diffopt_ros.lie.SE2 (same conventions: tangent (v_x, v_y, omega), right
# perturbations, Taylor series below SMALL_ANGLE) on float64 arrays: an update linearizes a
# few factors, where torch's per-call overhead would cost ten times the arithmetic.
def _wrap(theta: np.ndarray) -> np.ndarray:
    return theta - 2 * np.pi * np.ceil((theta - np.pi) / (2 * np.pi))


def _coefficients(theta: np.ndarray):
    """``sin t / t, (1 - cos t) / t, (1 - cos t) / t^2, (t - sin t) / t^2``."""
    small = np.abs(theta) < SMALL_ANGLE
    t = np.where(small, 1.0, theta)
    s, c, t2 = np.sin(t), np.cos(t), theta * theta
    return (np.where(small, 1 - t2 / 6 + t2 * t2 / 120, s / t),
            np.where(small, theta / 2 - theta * t2 / 24, (1 - c) / t),
            np.where(small, 0.5 - t2 / 24, (1 - c) / (t * t)),
            np.where(small, theta / 6 - theta * t2 / 120, (t - s) / (t * t)))


def _se2_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^-1 b`` for ``(E, 3)`` poses."""
    c, s = np.cos(a[:, 2]), np.sin(a[:, 2])
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    return np.stack((c * dx + s * dy, -s * dx + c * dy, _wrap(b[:, 2] - a[:, 2])), axis=1)


def _se2_log(g: np.ndarray) -> np.ndarray:
    w = _wrap(g[:, 2])
    small = np.abs(w) < SMALL_ANGLE
    t = np.where(small, 1.0, w)
    alpha = np.where(small, 1 - w * w / 12, t * np.sin(t) / (2 * (1 - np.cos(t))))
    beta = w / 2
    return np.stack((alpha * g[:, 0] + beta * g[:, 1], -beta * g[:, 0] + alpha * g[:, 1], w), axis=1)


def _se2_retract(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``g exp(d)`` for ``(E, 3)`` poses and tangents."""
    sinc, cosc, _, _ = _coefficients(d[:, 2])
    x, y = sinc * d[:, 0] - cosc * d[:, 1], cosc * d[:, 0] + sinc * d[:, 1]
    c, s = np.cos(g[:, 2]), np.sin(g[:, 2])
    return np.stack((g[:, 0] + c * x - s * y, g[:, 1] + s * x + c * y, _wrap(g[:, 2] + d[:, 2])), axis=1)


def _se2_right_jacobian_inv(xi: np.ndarray) -> np.ndarray:
    vx, vy, w = xi[:, 0], xi[:, 1], xi[:, 2]
    sinc, cosc, k1, k2 = _coefficients(w)
    det = sinc * sinc + cosc * cosc
    a, b = sinc / det, cosc / det
    c13, c23 = vx * k2 - vy * k1, vx * k1 + vy * k2
    out = np.zeros((len(xi), 3, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = a, -b, -(a * c13 - b * c23)
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = b, a, -(b * c13 + a * c23)
    out[:, 2, 2] = 1.0
    return out


def _se2_between_factor(z: np.ndarray, xi: np.ndarray, xj: np.ndarray, jacobians: bool):
    """Residual ``log(z^-1 x_i^-1 x_j)`` ``(E, 3)`` and its Jacobians ``[(E, 3, 3)] * 2``
    (those of :class:`~diffopt_ros.nlls.factors.Between`)."""
    rel = _se2_between(xi, xj)
    r = _se2_log(_se2_between(z, rel))
    if not jacobians:
        return r, []
    j_inv = _se2_right_jacobian_inv(r)
    # Ad(rel^-1) = [[c, s, y'], [-s, c, -x'], [0, 0, 1]], (x', y') the translation of rel^-1
    c, s = np.cos(rel[:, 2]), np.sin(rel[:, 2])
    inv_x, inv_y = -(c * rel[:, 0] + s * rel[:, 1]), -(-s * rel[:, 0] + c * rel[:, 1])
    adjoint = np.zeros_like(j_inv)
    adjoint[:, 0, 0], adjoint[:, 0, 1], adjoint[:, 0, 2] = c, s, inv_y
    adjoint[:, 1, 0], adjoint[:, 1, 1], adjoint[:, 1, 2] = -s, c, -inv_x
    adjoint[:, 2, 2] = 1.0
    return r, [-(j_inv @ adjoint), j_inv]


def _se2_prior_factor(z: np.ndarray, x: np.ndarray, jacobians: bool):
    r = _se2_log(_se2_between(z, x))
    return r, ([_se2_right_jacobian_inv(r)] if jacobians else [])
