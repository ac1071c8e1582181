"""SparseCholesky's CPU factorizations as the optimizer uses them: a factor stays valid while it
is referenced (LM keeps the previous one through a retry; the implicit backward solves with it
after the forward), a matrix that is not positive definite is reported, and float32 values are
solved in float64 and returned as float32."""
import numpy as np
import pytest
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Between, Objective, Variable
from diffopt_ros.nlls.linear import SparseCholesky, sparse_backend

BACKENDS = ['supernodal', 'qdldl', 'cholespy', 'superlu', 'cholmod']


def _system(backend: str) -> SparseCholesky:
    try:
        sparse_backend(backend)
    except ImportError:
        pytest.skip(f'{backend} is not installed here')
    N = 40
    poses = Variable(SE2, SE2.identity(N, dtype=torch.float64), name='poses')
    i = torch.cat((torch.arange(N - 1), torch.tensor([0, 5, 12])))
    j = torch.cat((torch.arange(1, N), torch.tensor([N - 1, 30, 27])))
    return SparseCholesky(Objective([Between(poses, i, j, SE2.identity(len(i), dtype=torch.float64))]),
                          backend)


def _spd(system: SparseCholesky, seed: int, shift: float = 0.0) -> np.ndarray:
    """A symmetric matrix on the system's pattern, diagonally dominant (+ ``shift`` on the
    diagonal), dense ``(n, n)``."""
    rng = np.random.default_rng(seed)
    r, c = system.rows.numpy(), system.cols.numpy()
    H = np.zeros((system.n, system.n))
    H[r, c] = rng.uniform(-1, 1, len(r))
    H = np.triu(H, 1)
    H = H + H.T
    return H + np.diag(np.abs(H).sum(1) + 1.0 + shift)


def _values(system: SparseCholesky, H: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(H[system.rows.numpy(), system.cols.numpy()])[None].to(dtype)


@pytest.mark.parametrize('backend', BACKENDS)
def test_a_referenced_factor_survives_later_factorizations(backend):
    system = _system(backend)
    b = torch.from_numpy(np.random.default_rng(0).standard_normal((1, system.n)))
    H1 = _spd(system, 1)
    first = system.factorize(_values(system, H1))  # (per-problem factors, ok (B,))
    assert bool(first[1].all())
    for seed in range(2, 6):  # refactorizations, with the factors of the earlier ones dropped
        H = _spd(system, seed)
        factor = system.factorize(_values(system, H))
        assert bool(factor[1].all())
        x = system.solve_detached(factor, b)[0].numpy()
        assert np.abs(H @ x - b[0].numpy()).max() < 1e-10
        del factor
    x1 = system.solve_detached(first, b)[0].numpy()
    assert np.abs(H1 @ x1 - b[0].numpy()).max() < 1e-10


@pytest.mark.parametrize('backend', [b for b in BACKENDS if b != 'superlu'])  # LU: no definiteness
def test_not_positive_definite_is_reported_and_the_next_factorization_works(backend):
    system = _system(backend)
    H = _spd(system, 7)
    bad = H.copy()
    bad[10, 10] = -5.0
    _, ok = system.factorize(_values(system, bad))
    assert not bool(ok.any())
    nan = H.copy()
    nan[3, 3] = np.nan
    _, ok = system.factorize(_values(system, nan))
    assert not bool(ok.any())
    factor = system.factorize(_values(system, H))
    assert bool(factor[1].all())
    b = torch.ones(1, system.n, dtype=torch.float64)
    assert np.abs(H @ system.solve_detached(factor, b)[0].numpy() - 1).max() < 1e-10


@pytest.mark.parametrize('backend', BACKENDS)
def test_float32_values_and_several_right_hand_sides(backend):
    system = _system(backend)
    H = _spd(system, 11)
    factor = system.factorize(_values(system, H, torch.float32))
    assert bool(factor[1].all())
    rhs = torch.from_numpy(np.random.default_rng(1).standard_normal((1, system.n, 4))).float()
    x = system.solve_columns(factor, rhs)
    assert x.dtype == torch.float32 and x.shape == rhs.shape
    # the matrix is rounded to float32 on the way in and the solution on the way out: each
    # leaves a residual of at most eps32 * (largest row sum of |H|) * |x| (with room: 4x)
    x64 = x[0].double().numpy()
    bound = 4 * np.finfo(np.float32).eps * np.abs(H).sum(1).max() * np.abs(x64).max()
    assert np.abs(H @ x64 - rhs[0].double().numpy()).max() < bound
