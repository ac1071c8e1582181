"""The supernodal sparse Cholesky (diffopt_ros.nlls.supernodal) against dense linear algebra."""
import numpy as np
import pytest
import torch

from diffopt_ros.lie import SE3
from diffopt_ros.nlls import Between, Objective, Optimizer, PoseToPoint, Prior, Variable, Vector
from diffopt_ros.nlls.supernodal import NotPositiveDefiniteError, SupernodalCholesky

DT = torch.float64


def _block_matrix(dofs, edges, rng, shift=1.0):
    """A symmetric block-sparse matrix with blocks of ``dofs`` on the diagonal and between the
    block pairs of ``edges``: the Gauss-Newton matrix of random Jacobians (+ shift I); returns
    the dense matrix, the pattern (rows, cols) and the block starts."""
    dofs = np.asarray(dofs)
    start = np.concatenate(([0], np.cumsum(dofs)))
    n = int(start[-1])
    H = shift * np.eye(n)
    for a, b in edges:
        idx = np.concatenate((np.arange(start[a], start[a + 1]), np.arange(start[b], start[b + 1])))
        J = rng.standard_normal((len(idx), len(idx)))
        H[np.ix_(idx, idx)] += J.T @ J
    mask = np.zeros((len(dofs), len(dofs)), bool)
    mask[np.arange(len(dofs)), np.arange(len(dofs))] = True
    for a, b in edges:
        mask[a, b] = mask[b, a] = True
    block_of = np.repeat(np.arange(len(dofs)), dofs)
    rows, cols = np.nonzero(mask[block_of][:, block_of])
    return H, rows, cols, start[:-1], dofs


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_solve_matches_dense(seed):
    rng = np.random.default_rng(seed)
    NB = 120
    dofs = rng.choice([2, 3, 6], NB)
    chain = [(k, k + 1) for k in range(NB - 1)]
    loops = [tuple(sorted(rng.choice(NB, 2, replace=False))) for _ in range(60)]
    H, rows, cols, start, dofs = _block_matrix(dofs, chain + loops, rng)
    sym = SupernodalCholesky(len(H), rows, cols, start, dofs)
    assert sorted(sym.perm.tolist()) == list(range(len(H)))
    factor = sym.factorize(torch.from_numpy(H[rows, cols]))
    b = rng.standard_normal((len(H), 3))
    expected = np.linalg.solve(H, b)
    x = factor.solve(b)
    assert np.abs(x - expected).max() <= 1e-10 * np.abs(expected).max()
    x0 = factor.solve(b[:, 0])
    assert x0.shape == (len(H),)
    assert np.abs(x0 - expected[:, 0]).max() <= 1e-10 * np.abs(expected).max()


@pytest.mark.parametrize('dofs, edges', [
    ([6], []),                                                     # one block
    ([3, 3, 2], []),                                               # no edges: a forest of roots
    ([3] * 10, [(0, 1), (1, 2), (5, 6), (6, 7), (7, 5)]),          # two parts and isolated blocks
    ([1] * 20, [(k, k + 1) for k in range(19)] + [(0, 19)]),       # scalar blocks, one cycle
    ([6] * 30, [(0, k) for k in range(1, 30)]),                    # a star
], ids=['single', 'no-edges', 'two-parts', 'dof1-cycle', 'star'])
def test_structures(dofs, edges):
    rng = np.random.default_rng(7)
    H, rows, cols, start, dofs = _block_matrix(dofs, edges, rng)
    x = SupernodalCholesky(len(H), rows, cols, start, dofs).factorize(torch.from_numpy(H[rows, cols])).solve(
        np.ones(len(H)))
    assert np.abs(H @ x - 1).max() < 1e-10


def test_values_in_pattern_order_and_reuse():
    """One symbolic analysis serves matrices with other values (as LM's damping retries)."""
    rng = np.random.default_rng(3)
    edges = [(k, k + 1) for k in range(39)] + [(0, 20), (5, 35), (10, 30)]
    H, rows, cols, start, dofs = _block_matrix(np.full(40, 3), edges, rng)
    order = rng.permutation(len(rows))
    rows, cols = rows[order], cols[order]
    sym = SupernodalCholesky(len(H), rows, cols, start, dofs)
    b = rng.standard_normal(len(H))
    for lam in (0.0, 1e-3, 1e3):
        Hd = H + lam * np.eye(len(H))
        x = sym.factorize(torch.from_numpy(Hd[rows, cols])).solve(b)
        assert np.allclose(Hd @ x, b, atol=1e-9 * np.abs(b).max())


def test_not_positive_definite_raises():
    rng = np.random.default_rng(4)
    H, rows, cols, start, dofs = _block_matrix(np.full(30, 3), [(k, k + 1) for k in range(29)], rng)
    H[40, 40] = -1.0
    sym = SupernodalCholesky(len(H), rows, cols, start, dofs)
    with pytest.raises(NotPositiveDefiniteError):
        sym.factorize(torch.from_numpy(H[rows, cols]))


def test_optimizer_se3_with_points_matches_dense():
    """An SE3 pose graph with 3D points (blocks of 6 and 3): the supernodal sparse solver
    reaches the dense solver's solution, and implicit gradients agree."""
    gen = torch.Generator().manual_seed(5)
    N, M = 30, 12
    truth = SE3.exp(torch.cat((0.3 * torch.randn(N, 3, generator=gen, dtype=DT),
                               torch.randn(N, 3, generator=gen, dtype=DT)), 1))
    pts = 3 * torch.randn(M, 3, dtype=DT, generator=gen)
    i = torch.cat((torch.arange(N - 1), torch.tensor([0, 3, 7])))
    j = torch.cat((torch.arange(1, N), torch.tensor([N - 1, 20, 25])))
    z = SE3.between(truth[i], truth[j])
    pi = torch.randint(0, N, (60,), generator=gen)
    pj = torch.randint(0, M, (60,), generator=gen)
    R, t = truth[pi][:, :, :3], truth[pi][:, :, 3]
    local = (R.mT @ (pts[pj] - t).unsqueeze(-1)).squeeze(-1)
    init = SE3.compose(truth, SE3.exp(0.05 * torch.randn(N, 6, generator=gen, dtype=DT)))
    w = torch.ones(len(i), 6, dtype=DT, requires_grad=True)
    solutions, grads = [], []
    for kind, backend in (('dense', 'auto'), ('sparse', 'supernodal')):
        poses = Variable(SE3, init.clone(), name='poses')
        points = Variable(Vector(3), pts + 0.1, name='points')
        factors = [Prior(poses, [0], truth[:1], 1e6 * torch.eye(6, dtype=DT)),
                   Between(poses, i, j, z, torch.diag_embed(100 * w)),
                   PoseToPoint(poses, points, pi, pj, local, 10 * torch.eye(3, dtype=DT))]
        opt = Optimizer(Objective(factors), linear_solver=kind, sparse_backend=backend)
        assert opt.linear.kind == kind
        result = opt.solve(backward='implicit')
        assert result.status == ['converged']
        (g,) = torch.autograd.grad(result.values[0][..., 3].sum() + result.values[1].sum(), w)
        solutions.append(torch.cat([v.detach().reshape(-1) for v in result.values]))
        grads.append(g)
    assert torch.allclose(solutions[0], solutions[1], atol=1e-9)
    assert torch.allclose(grads[0], grads[1], atol=1e-8, rtol=1e-6)



def test_auto_backend_by_size_and_block_size():
    """'auto' (without scikit-sparse): supernodal for large 3D problems, qdldl (else cholespy)
    for small or 2D ones when installed (bench/RESULTS.md has the measurements behind the
    threshold)."""
    from diffopt_ros.lie import SE2
    from diffopt_ros.nlls import linear

    if linear._cholmod is not None:
        pytest.skip('scikit-sparse installed: auto takes CHOLMOD')

    def chain(group, N):
        poses = Variable(group, group.identity(N, dtype=DT), name='poses')
        z = group.identity(N - 1, dtype=DT)
        return Objective([Between(poses, torch.arange(N - 1), torch.arange(1, N), z)])

    big_3d = chain(SE3, linear.SUPERNODAL_MIN_DIM // 6 + 1)
    assert linear.sparse_backend('auto', big_3d) == 'supernodal'
    small = linear.sparse_backend('auto', chain(SE3, 50))
    big_2d = linear.sparse_backend('auto', chain(SE2, linear.SUPERNODAL_MIN_DIM // 3 + 1))
    expected = next((name for name, module in (('qdldl', linear.qdldl), ('cholespy', linear.cholespy))
                     if module is not None), 'supernodal')
    assert small == big_2d == expected
