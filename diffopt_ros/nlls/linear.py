"""Linear solvers for the (damped) Gauss-Newton normal equations ``H x = b``, batched over B.

* :class:`DenseCholesky`: ``H (B, n, n)``, batched ``torch.linalg.cholesky_ex`` on any device;
  the right choice for small problems (n up to ~1000) and large batches.
* :class:`SparseCholesky`: ``H`` stored as the values ``(B, nnz)`` of a fixed sparsity pattern
  computed once per problem structure, with the scatter map from factor blocks to it. Numeric
  factorization on the CPU by the supernodal Cholesky of :mod:`~diffopt_ros.nlls.supernodal`
  (batched torch kernels; fill-reducing ordering, elimination tree, supernodes and index maps
  computed once and re-used by every factorization), or by CHOLMOD
  through ``scikit-sparse`` (supernodal, symbolic analysis re-used), ``qdldl`` (simplicial
  LDL^T with AMD ordering; ordering and elimination tree kept, numeric refactorization only),
  ``cholespy`` (simplicial, re-orders on every factorization), or scipy's SuperLU;
  :func:`sparse_backend` chooses by what is installed and the problem's size and block size.
  CUDA tensors are factorized on the CPU and the solution is returned on the input's device.

Both are differentiable: the solution's gradient flows to the right-hand side and, when ``H``
requires grad (``unroll`` backward), to ``H`` by ``dH = -u x^T`` with ``u = H^-1 grad``.
"""
from __future__ import annotations

import numpy as np
import torch

try:  # supernodal CHOLMOD with re-usable symbolic analysis (needs SuiteSparse)
    import sksparse.cholmod as _cholmod
except ImportError:  # pragma: no cover - depends on the installation
    _cholmod = None
try:  # CHOLMOD (simplicial) through cholespy, a pip wheel
    import cholespy
except ImportError:  # pragma: no cover - depends on the installation
    cholespy = None
try:  # QDLDL (simplicial LDL^T, AMD ordering, re-usable symbolic factorization), a pip wheel
    import qdldl
except ImportError:  # pragma: no cover - depends on the installation
    qdldl = None

from diffopt_ros.nlls import supernodal
from diffopt_ros.nlls.objective import Objective, block_values


class FactorizationError(RuntimeError):
    """A matrix that should be positive definite could not be factorized."""


class DenseCholesky:
    """Dense batched Cholesky on ``H (B, n, n)``."""

    kind = 'dense'

    def __init__(self, objective: Objective):
        n = objective.dim
        self.n = n
        self._edges_last = objective.edges_last
        rows, cols = objective.hessian_entries()
        self.scatter = rows * n + cols
        self.diag_index = torch.arange(n, device=rows.device) * (n + 1)

    def assemble(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """``H (B, n, n)`` from per-factor blocks ``(B, E, D, D)`` (any memory layout)."""
        flat = block_values(blocks, self._edges_last)
        B = flat.shape[0]
        H = flat.new_zeros(B, self.n * self.n).index_add(1, self.scatter, flat)
        return H.reshape(B, self.n, self.n)

    def diagonal(self, H: torch.Tensor) -> torch.Tensor:
        """``(B, n)``."""
        return H.diagonal(dim1=-2, dim2=-1)

    def add_diagonal(self, H: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``H + diag(d)``, ``d (B, n)``."""
        B = H.shape[0]
        return H.reshape(B, -1).index_add(1, self.diag_index, d).reshape(H.shape)

    def factorize(self, H: torch.Tensor):
        """Returns ``(L, ok (B,))``; L carries the graph of H (for unrolled gradients)."""
        L, info = torch.linalg.cholesky_ex(H)
        return L, info == 0

    def solve(self, H: torch.Tensor, factor, rhs: torch.Tensor) -> torch.Tensor:
        """``H^-1 rhs`` for ``rhs (B, n)``; differentiable in rhs and, through L, in H."""
        L, _ = factor
        return torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)

    def solve_detached(self, factor, rhs: torch.Tensor) -> torch.Tensor:
        """``H^-1 rhs`` with H held constant (differentiable in rhs only)."""
        L, _ = factor
        return torch.cholesky_solve(rhs.unsqueeze(-1), L.detach()).squeeze(-1)

    def solve_columns(self, factor, rhs: torch.Tensor) -> torch.Tensor:
        """``H^-1 rhs`` for several right-hand sides ``rhs (B, n, k)``."""
        return torch.cholesky_solve(rhs, factor[0])


SPARSE_BACKENDS = ('cholmod', 'supernodal', 'qdldl', 'cholespy', 'superlu')


# where the supernodal factorization beats the simplicial ones (measured with bench/nlls.py
# --crossover-only on subgraphs of gtsam/Data: sphere2500 loses at 300 poses, wins from 1000
# poses on; w10000, 2D, loses at every size)
SUPERNODAL_MIN_DIM, SUPERNODAL_MIN_DOF = 4000, 6


def sparse_backend(requested: str = 'auto', objective: Objective | None = None) -> str:
    """The CPU sparse factorization to use: ``'cholmod'`` (scikit-sparse, supernodal, when
    installed), ``'supernodal'`` (:mod:`~diffopt_ros.nlls.supernodal`, always there),
    ``'qdldl'``, ``'cholespy'`` or ``'superlu'``. ``'auto'`` takes CHOLMOD when installed; else,
    for an ``objective`` with at least ``SUPERNODAL_MIN_DIM`` unknowns in blocks of
    ``SUPERNODAL_MIN_DOF`` (3D poses), the supernodal factorization; else qdldl, else cholespy
    when installed (a simplicial factorization costs less than a supernodal analysis on small or
    2D problems), else the supernodal one. Without an objective, the first installed of
    ``SPARSE_BACKENDS``."""
    available = {'cholmod': _cholmod is not None, 'supernodal': True, 'qdldl': qdldl is not None,
                 'cholespy': cholespy is not None, 'superlu': True}
    if requested == 'auto':
        if objective is None or available['cholmod']:
            return next(name for name in SPARSE_BACKENDS if available[name])
        large_3d = (objective.dim >= SUPERNODAL_MIN_DIM
                    and int(objective.block_dof.max()) >= SUPERNODAL_MIN_DOF)
        if large_3d:
            return 'supernodal'
        return next((name for name in ('qdldl', 'cholespy') if available[name]), 'supernodal')
    if requested not in available:
        raise ValueError(f'sparse backend {requested!r}: choose auto or one of {", ".join(SPARSE_BACKENDS)}')
    if not available[requested]:
        raise ImportError(f'sparse backend {requested!r} is not installed')
    return requested


class _CPUFactor:
    """One problem's factorization with ``solve`` on numpy arrays ``(n,)`` or ``(n, k)``."""

    def __init__(self, system: SparseCholesky, values: np.ndarray):
        n = system.n
        self._chol = self._lu = self._factor = self._ldl = None
        if not np.isfinite(values).all():  # (cholespy would factorize NaN and solve to NaN)
            raise FactorizationError(f'matrix has {int(np.sum(~np.isfinite(values)))} non-finite entries')
        if system.backend == 'qdldl':
            self._factor_ldl(system, values)
            return
        if system.backend == 'supernodal':
            if system._symbolic is None:  # ordering, elimination tree, frontal maps: once
                system._symbolic = supernodal.SupernodalCholesky(
                    n, system._rows_np, system._cols_np, system._block_start, system._block_dof,
                    system._block_pairs)
            try:
                self._factor = system._symbolic.factorize(torch.from_numpy(values))
            except supernodal.NotPositiveDefiniteError as exc:
                raise FactorizationError(str(exc)) from exc
            return
        if system.backend in ('cholmod', 'cholespy'):
            lower = np.ascontiguousarray(values[system._csc_order])
        if system.backend == 'cholmod':  # CHOLMOD factorizes in float64 only
            from scipy.sparse import csc_matrix
            A = csc_matrix((lower.astype(np.float64, copy=False), system._csc_rows, system._csc_indptr),
                           shape=(n, n))
            if system._symbolic is None:  # ordering + symbolic analysis, once per structure
                system._symbolic = _cholmod.analyze(A, mode='auto')  # CHOLMOD picks supernodal or not
            self._factor = system._symbolic.copy()
            try:
                self._factor.cholesky_inplace(A)
            except _cholmod.CholmodError as exc:
                raise FactorizationError(str(exc)) from exc
        elif system.backend == 'cholespy':
            solver_cls = cholespy.CholeskySolverD if values.dtype == np.float64 else cholespy.CholeskySolverF
            try:
                self._chol = solver_cls(n, system._csc_indptr, system._csc_rows, lower,
                                        cholespy.MatrixType.CSC)
            except (RuntimeError, ValueError) as exc:
                raise FactorizationError(str(exc)) from exc
        else:
            import scipy.sparse.linalg as spla
            from scipy.sparse import csc_matrix
            A = csc_matrix((values, (system._rows_np, system._cols_np)), shape=(n, n))
            try:
                self._lu = spla.splu(A)
            except RuntimeError as exc:
                raise FactorizationError(str(exc)) from exc

    def _factor_ldl(self, system: SparseCholesky, values: np.ndarray) -> None:
        """QDLDL's ``L D L^T`` of the upper triangle. A solver whose factor is no longer
        referenced (``system._spare``) is refactorized in place: ordering and elimination tree are
        kept. ``D > 0`` is what makes it a Cholesky factorization."""
        from scipy.sparse import csc_matrix
        A = csc_matrix((values[system._csc_order].astype(np.float64, copy=False), system._csc_rows,
                        system._csc_indptr), shape=(system.n, system.n))
        spare = system._spare
        try:
            if spare:
                solver = spare.pop()
                solver.update(A, upper=True)
            else:
                solver = qdldl.Solver(A, upper=True)
        except RuntimeError as exc:  # a zero pivot (the solver is left out of the spares)
            raise FactorizationError(str(exc)) from exc
        d = solver.factors()[1]
        if not np.all(d > 0):  # also false for NaN
            spare.append(solver)
            raise FactorizationError(f'matrix not positive definite: {int(np.sum(~(d > 0)))} of '
                                     f'{d.size} pivots of its LDL^T are not positive')
        self._ldl, self._spare = solver, spare

    def __del__(self):
        if self._ldl is not None:  # the solver's symbolic factorization serves the next one
            self._spare.append(self._ldl)

    def solve(self, b: np.ndarray) -> np.ndarray:
        """Solve for ``b (n,)`` or ``(n, k)``."""
        if self._ldl is not None:
            if b.ndim == 1:
                return self._ldl.solve(b)
            return np.stack([self._ldl.solve(column) for column in b.T], 1)
        if self._factor is not None:
            return self._factor.solve(b) if isinstance(self._factor, supernodal.SupernodalFactor) \
                else self._factor(b)
        if self._chol is not None:
            b = np.ascontiguousarray(b)
            x = np.zeros_like(b)
            self._chol.solve(b, x)
            return x
        return self._lu.solve(b)


class SparseCholesky:
    """Sparse Cholesky on a fixed block-sparsity pattern; ``H`` is ``(B, nnz)`` pattern values.

    The pattern is built once from the objective's block structure: one dense block per pair of
    elements that share a factor (and every diagonal block), entries of a block stored
    contiguously, row-major. The lower triangle in compressed-column order (what CHOLMOD takes)
    is a fixed gather of the pattern values.
    """

    kind = 'sparse'

    def __init__(self, objective: Objective, backend: str = 'auto'):
        n, NB = objective.dim, objective.num_blocks
        self.n = n
        self._edges_last = objective.edges_last
        self.backend = sparse_backend(backend, objective)
        dof, bstart = objective.block_dof, objective.block_start
        keys, pairs = [], []
        for bidx in objective.block_index:
            E, S = bidx.shape
            k = bidx[:, :, None] * NB + bidx[:, None, :]  # (E, S, S) block-pair keys
            keys.append(k.reshape(-1))
            pairs.append((E, S))
        diag = torch.arange(NB)
        keys.append(diag * (NB + 1))
        blocks, inverse = torch.unique(torch.cat(keys), return_inverse=True)
        br, bc = blocks // NB, blocks % NB
        size = dof[br] * dof[bc]
        first = torch.cumsum(size, 0) - size  # position of each block's first entry
        self.nnz = int(size.sum())
        self.rows = torch.empty(self.nnz, dtype=torch.long)
        self.cols = torch.empty(self.nnz, dtype=torch.long)
        # coordinates of every entry, block by block: one broadcast per shape of block (a pose
        # graph has one or a few shapes), the divisions only over one block's entries
        rdof, cdof = dof[br], dof[bc]
        shape_key = rdof * (int(dof.max()) + 1) + cdof
        for key in torch.unique(shape_key).tolist():
            sel = torch.nonzero(shape_key == key).squeeze(1)
            dr, dc = int(rdof[sel[0]]), int(cdof[sel[0]])
            cell = torch.arange(dr * dc)
            at = (first[sel][:, None] + cell).reshape(-1)
            self.rows[at] = (bstart[br[sel]][:, None] + cell // dc).reshape(-1)
            self.cols[at] = (bstart[bc[sel]][:, None] + cell % dc).reshape(-1)
        # per factor, the pattern position of every entry of its Gauss-Newton blocks, in the
        # order of block_values ((D, D, E) with the edges last, else (E, D, D)), written into
        # one array
        self.scatter = torch.empty(sum(E * D * D for E, D in (idx.shape for idx in objective.dof_index)),
                                   dtype=torch.long)
        at = done = 0
        for (E, S), f, last in zip(pairs, objective.factors, objective.edges_last):
            inv = inverse[at:at + E * S * S].reshape(E, S, S)
            at += E * S * S
            dofs = [v.dof for v in f.variables]
            offs = [sum(dofs[:a]) for a in range(S)]
            D = sum(dofs)
            pos = self.scatter[done:done + E * D * D]
            pos = pos.view(D, D, E).permute(2, 0, 1) if last else pos.view(E, D, D)
            done += E * D * D
            for a in range(S):
                for b in range(S):
                    grid = torch.arange(dofs[a])[:, None] * dofs[b] + torch.arange(dofs[b])[None, :]
                    block = first[inv[:, a, b]][:, None, None] + grid
                    pos[:, offs[a]:offs[a] + dofs[a], offs[b]:offs[b] + dofs[b]] = block
        dev = objective.device
        diag_blocks = first[inverse[at:]]
        self.diag_index = (diag_blocks[:, None] + torch.arange(int(dof.max()))[None, :] * (dof[:, None] + 1))
        self.diag_index = self.diag_index[torch.arange(int(dof.max()))[None, :] < dof[:, None]].to(dev)
        self.scatter = self.scatter.to(dev)
        self.rows, self.cols = self.rows.to(dev), self.cols.to(dev)
        r, c = self.rows.cpu().numpy(), self.cols.cpu().numpy()
        if self.backend in ('cholmod', 'cholespy', 'qdldl'):  # a triangle in compressed-column order:
            half = np.nonzero(r <= c if self.backend == 'qdldl' else r >= c)[0]  # qdldl's the upper one
            # within a column the pattern has its rows in increasing order (blocks sorted by block
            # row, entries row-major within a block), so a stable sort by column gives the order;
            # with fewer than 2^16 columns numpy sorts 16-bit keys by radix (7 against 18 ms for
            # (column, row) keys on w10000's 638,799 entries)
            col = c[half]
            order = half[np.argsort(col.astype(np.uint16) if n <= 1 << 16 else col, kind='stable')]
            self._csc_order = order
            self._csc_rows = r[order].astype(np.int32)
            counts = np.bincount(c[order], minlength=n)
            self._csc_indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
        self._rows_np, self._cols_np = r, c
        self._block_start, self._block_dof = bstart.numpy(), dof.numpy()
        self._block_pairs = (br.numpy(), bc.numpy())
        self._symbolic = None  # symbolic factorization, computed at the first factorization
        self._spare = []  # qdldl solvers whose factor is no longer referenced, for refactorization

    def assemble(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """Pattern values ``(B, nnz)`` from per-factor blocks ``(B, E, D, D)`` (any memory layout)."""
        flat = block_values(blocks, self._edges_last)
        return flat.new_zeros(flat.shape[0], self.nnz).index_add(1, self.scatter, flat)

    def diagonal(self, H: torch.Tensor) -> torch.Tensor:
        """``(B, n)``."""
        return H[:, self.diag_index]

    def add_diagonal(self, H: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``H + diag(d)``, ``d (B, n)``."""
        return H.index_add(1, self.diag_index, d)

    def factorize(self, H: torch.Tensor):
        """Per-problem CPU factorizations of ``H.detach()``; returns ``(factors, ok (B,))``."""
        values = H.detach().cpu().numpy()
        factors, ok = [], []
        for b in range(values.shape[0]):
            try:
                factors.append(_CPUFactor(self, values[b]))
                ok.append(True)
            except FactorizationError:
                factors.append(None)
                ok.append(False)
        return factors, torch.tensor(ok, device=H.device)

    def _solve_numpy(self, factors, rhs: torch.Tensor) -> torch.Tensor:
        b = rhs.detach().cpu().numpy()
        x = np.zeros_like(b)
        for k, f in enumerate(factors):
            x[k] = f.solve(b[k]) if f is not None else np.nan
        return torch.from_numpy(x).to(rhs.device)

    def solve(self, H: torch.Tensor, factor, rhs: torch.Tensor) -> torch.Tensor:
        """``H^-1 rhs`` for ``rhs (B, n)``; differentiable in rhs and H."""
        return _SparseSolve.apply(H, rhs, self, factor[0])

    def solve_detached(self, factor, rhs: torch.Tensor) -> torch.Tensor:
        """``H^-1 rhs`` with H held constant (differentiable in rhs only)."""
        return _SparseSolve.apply(None, rhs, self, factor[0])

    def solve_columns(self, factor, rhs: torch.Tensor) -> torch.Tensor:
        """``H^-1 rhs`` for several right-hand sides ``rhs (B, n, k)`` (no gradient)."""
        b = rhs.detach().cpu().numpy()
        x = np.stack([f.solve(b[k]) for k, f in enumerate(factor[0])]).astype(b.dtype, copy=False)
        return torch.from_numpy(x).to(rhs.device)


class _SparseSolve(torch.autograd.Function):
    """``x = H^-1 b`` with a precomputed factorization; backward re-uses it (H is symmetric)."""

    @staticmethod
    def forward(ctx, H, rhs, system, factors):
        x = system._solve_numpy(factors, rhs)
        ctx.system, ctx.factors = system, factors
        ctx.has_H = H is not None
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        u = ctx.system._solve_numpy(ctx.factors, grad)
        grad_H = None
        if ctx.has_H and ctx.needs_input_grad[0]:
            grad_H = -(u[:, ctx.system.rows] * x[:, ctx.system.cols])
        return grad_H, u, None, None


def make_linear_solver(objective: Objective, kind: str = 'auto', dense_max: int | None = None,
                       sparse: str = 'auto'):
    """``'dense'``, ``'sparse'`` or ``'auto'``.

    ``'auto'`` picks dense when ``n <= dense_max``: by default 64 on the CPU (CHOLMOD beats a
    dense factorization above that even for a w100-sized pose graph) and, on CUDA, up to 4096
    unknowns while the batch of dense matrices stays under 2 GiB (batched cuSOLVER beats
    moving the system to the CPU). ``sparse`` names the CPU factorization (:func:`sparse_backend`).
    """
    if kind == 'auto':
        n, B = objective.dim, objective.batch_size
        if dense_max is None:
            on_gpu = objective.device.type == 'cuda'
            small = B * n * n * torch.finfo(objective.dtype).bits // 8 < 2 ** 31
            dense_max = 4096 if on_gpu and small else 64
        kind = 'dense' if n <= dense_max else 'sparse'
    if kind == 'dense':
        return DenseCholesky(objective)
    if kind == 'sparse':
        return SparseCholesky(objective, sparse)
    raise ValueError(f"linear solver {kind!r}: choose 'auto', 'dense' or 'sparse'")
