"""Lie groups: exp/log round trips (incl. zero angle and pi), Jacobians against central finite
differences, and GTSAM's Pose2/Pose3/Rot3 as an oracle."""
import math

import numpy as np
import pytest
import torch

from diffopt_ros.lie import SE2, SE3, SO2, SO3, wrap_angle
from diffopt_ros.lie.so3 import rpy_to_matrix

gtsam = pytest.importorskip('gtsam')

DT = torch.float64
RNG = np.random.default_rng(0)
GROUPS = [(SO2, 1), (SE2, 3), (SO3, 3), (SE3, 6)]


def _tangents(dof, n=8):
    """Random tangents with edge cases: exactly zero, tiny (1e-7) and small (1e-4) rotations."""
    xi = torch.randn(n, dof, dtype=DT)
    xi[0] = 0
    xi[1] *= 1e-7
    xi[2] *= 1e-4
    return xi


def _rotation_part(G, xi):
    return {SO2: xi, SE2: xi[:, 2:], SO3: xi, SE3: xi[:, 3:]}[G]


def _near_pi(G, n=3):
    xi = torch.randn(n, G.dof, dtype=DT)
    rot = _rotation_part(G, xi)
    below = torch.tensor([1e-9, 1e-5, 1e-2], dtype=DT)[:n, None]
    rot.copy_(rot / rot.norm(dim=-1, keepdim=True) * (math.pi - below))
    return xi


@pytest.mark.parametrize('G,dof', GROUPS)
def test_exp_log_round_trip_including_zero_and_pi(G, dof):
    xi = _tangents(dof)
    xi = torch.cat((xi, _near_pi(G)))
    back = G.log(G.exp(xi))
    assert torch.allclose(back, xi, atol=1e-9), (back - xi).abs().max()
    g = G.exp(torch.randn(5, dof, dtype=DT))
    assert torch.allclose(G.exp(G.log(g)), g, atol=1e-12)


@pytest.mark.parametrize('G,dof', GROUPS)
def test_group_axioms(G, dof):
    a, b, c = (G.exp(torch.randn(4, dof, dtype=DT)) for _ in range(3))
    assert torch.allclose(G.compose(G.compose(a, b), c), G.compose(a, G.compose(b, c)), atol=1e-12)
    assert torch.allclose(G.log(G.compose(a, G.inverse(a))), torch.zeros(4, dof, dtype=DT), atol=1e-12)
    assert torch.allclose(G.between(a, b), G.compose(G.inverse(a), b), atol=1e-12)
    d = torch.randn(4, dof, dtype=DT) * 0.3
    assert torch.allclose(G.local(a, G.retract(a, d)), d, atol=1e-10)


def _numeric(f, x, eps=1e-6):
    """Central-difference Jacobian of f: (n, k) -> (n, m) at x, column by column: (n, m, k)."""
    cols = []
    for k in range(x.shape[-1]):
        e = torch.zeros_like(x)
        e[:, k] = eps
        cols.append((f(x + e) - f(x - e)) / (2 * eps))
    return torch.stack(cols, -1)


@pytest.mark.parametrize('G,dof', GROUPS)
def test_jacobians_match_finite_differences(G, dof):
    xi = _tangents(dof)
    xi = torch.cat((xi, _near_pi(G)[2:]))  # 0.01 below pi: log is smooth in a 1e-6 neighbourhood
    g = G.exp(xi)
    # right Jacobian: exp(xi + e) = exp(xi) exp(Jr e)
    num = _numeric(lambda x: G.local(g, G.exp(x)), xi)
    assert torch.allclose(num, G.right_jacobian(xi), atol=1e-7)
    # inverse right Jacobian: log(exp(xi) exp(e)) = xi + Jr^-1 e
    zero = torch.zeros_like(xi)
    num = _numeric(lambda e: G.log(G.retract(g, e)), zero)
    assert torch.allclose(num, G.right_jacobian_inv(xi), atol=1e-6)
    # adjoint: g exp(d) g^-1 = exp(Ad d)
    num = _numeric(lambda d: G.log(G.compose(G.compose(g, G.exp(d)), G.inverse(g))), zero)
    assert torch.allclose(num, G.adjoint(g), atol=1e-7)


@pytest.mark.parametrize('G,dof', GROUPS)
def test_compose_inverse_between_jacobians(G, dof):
    a, b = G.exp(torch.randn(5, dof, dtype=DT)), G.exp(torch.randn(5, dof, dtype=DT))
    zero = torch.zeros(5, dof, dtype=DT)
    ab, J_a, J_b = G.compose_jacobians(a, b)
    num_a = _numeric(lambda d: G.local(ab, G.compose(G.retract(a, d), b)), zero)
    num_b = _numeric(lambda d: G.local(ab, G.compose(a, G.retract(b, d))), zero)
    assert torch.allclose(num_a, J_a, atol=1e-8) and torch.allclose(num_b, J_b, atol=1e-8)
    inv, J = G.inverse_jacobian(a)
    assert torch.allclose(_numeric(lambda d: G.local(inv, G.inverse(G.retract(a, d))), zero), J, atol=1e-8)
    rel, J_a, J_b = G.between_jacobians(a, b)
    num_a = _numeric(lambda d: G.local(rel, G.between(G.retract(a, d), b)), zero)
    num_b = _numeric(lambda d: G.local(rel, G.between(a, G.retract(b, d))), zero)
    assert torch.allclose(num_a, J_a, atol=1e-8) and torch.allclose(num_b, J_b, atol=1e-8)


@pytest.mark.parametrize('G,dof', GROUPS)
def test_between_log_jacobians_match_finite_differences(G, dof):
    """``r = log(z^-1 a^-1 b)``'s Jacobians (SE2's closed form, the others' generic product), with
    residuals from zero through tiny and small rotations to 0.01 below pi."""
    r = torch.cat((_tangents(dof), _near_pi(G)[2:]))
    n = len(r)
    a, rel = G.exp(torch.randn(n, dof, dtype=DT)), G.exp(torch.randn(n, dof, dtype=DT))
    b = G.compose(a, rel)
    z = G.compose(rel, G.inverse(G.exp(r)))  # so that log(z^-1 rel) = r
    J_a, J_b = G.between_log_jacobians(G.between(a, b), r)
    zero = torch.zeros(n, dof, dtype=DT)
    num_a = _numeric(lambda d: G.log(G.between(z, G.between(G.retract(a, d), b))), zero)
    num_b = _numeric(lambda d: G.log(G.between(z, G.between(a, G.retract(b, d)))), zero)
    assert torch.allclose(num_a, J_a, atol=1e-6) and torch.allclose(num_b, J_b, atol=1e-6)


@pytest.mark.parametrize('G,n', [(SE2, 2), (SE3, 3)])
def test_act_jacobians(G, n):
    g = G.exp(torch.randn(6, G.dof, dtype=DT))
    p = torch.randn(6, n, dtype=DT)
    q, J_g, J_p = G.act_jacobians(g, p)
    assert torch.allclose(q, G.act(g, p))
    zero = torch.zeros(6, G.dof, dtype=DT)
    assert torch.allclose(_numeric(lambda d: G.act(G.retract(g, d), p), zero), J_g, atol=1e-8)
    assert torch.allclose(_numeric(lambda x: G.act(g, x), p), J_p, atol=1e-8)


@pytest.mark.parametrize('G,dof', GROUPS)
def test_autograd_finite_at_zero_and_pi(G, dof):
    xi = torch.zeros(2, dof, dtype=DT)
    xi[1] = _near_pi(G, 3)[0]
    xi.requires_grad_(True)
    out = G.log(G.exp(xi)).sum() + G.right_jacobian_inv(xi).sum() + G.right_jacobian(xi).sum()
    (grad,) = torch.autograd.grad(out, xi)
    assert torch.isfinite(grad).all()


def test_so3_log_agrees_with_the_quaternion_path_at_every_angle():
    """SO3.log takes the axis from the antisymmetric part and, past cos(angle) = -0.9, from the
    quaternion: a batch mixing both, with angles from 0 to pi and either side of the switch
    (and of the small-angle series), gives the quaternion path's rotation vectors, the input's,
    and gradients that match central differences."""
    from diffopt_ros.lie.so3 import _NEAR_PI_COS, _log_quaternion
    switch = math.acos(_NEAR_PI_COS)
    angles = torch.tensor([0.0, 1e-9, 1e-5, 0.999e-3, 1.001e-3, 0.3, 1.5, 2.5, switch - 1e-6,
                           switch + 1e-6, 3.0, math.pi - 1e-6], dtype=DT)
    axes = torch.randn(2, len(angles), 3, dtype=DT)
    w = axes / axes.norm(dim=-1, keepdim=True) * angles[:, None]  # (2, 12, 3): batch dims kept
    R = SO3.exp(w)
    log = SO3.log(R)
    assert log.shape == w.shape
    assert torch.allclose(log, w, rtol=0, atol=1e-9), (log - w).abs().max()
    assert torch.allclose(log, _log_quaternion(R), rtol=0, atol=1e-12)
    # away from the switch and pi (where the log is smooth), gradient against central differences
    smooth = [1, 2, 4, 5, 6, 7, 10]
    x = w[0, smooth].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: SO3.log(SO3.exp(v)), (x,), eps=1e-7, atol=1e-7)
    # at exactly pi the antisymmetric part is zero: the gradient is the quaternion path's, finite
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=DT)).requires_grad_(True)
    (grad,) = torch.autograd.grad(SO3.log(R).sum(), R)
    assert torch.allclose(grad, torch.autograd.grad(_log_quaternion(R).sum(), R)[0])


def test_quaternion_round_trip_all_cases():
    q = torch.randn(200, 4, dtype=DT)
    q[:4] = torch.eye(4, dtype=DT)  # identity and the three rotations by pi
    q = q / q.norm(dim=-1, keepdim=True)
    q = q * torch.where(q[:, 3:] < 0, -1.0, 1.0)
    back = SO3.to_quaternion(SO3.from_quaternion(q))
    same = torch.minimum((back - q).abs().amax(-1), (back + q).abs().amax(-1))  # q ~ -q at w = 0
    assert same.max() < 1e-12


def test_se2_matches_gtsam_pose2():
    for _ in range(20):
        a, b = (RNG.standard_normal(3) for _ in range(2))
        ga, gb = gtsam.Pose2(*a), gtsam.Pose2(*b)
        ta, tb = torch.tensor(a), torch.tensor(b)
        ta[2], tb[2] = ga.theta(), gb.theta()
        comp = ga.compose(gb)
        assert np.allclose(SE2.compose(ta, tb).numpy(), [comp.x(), comp.y(), comp.theta()], atol=1e-12)
        btw = ga.between(gb)
        assert np.allclose(SE2.between(ta, tb).numpy(), [btw.x(), btw.y(), btw.theta()], atol=1e-12)
        assert np.allclose(SE2.log(ta).numpy(), gtsam.Pose2.Logmap(ga), atol=1e-12)
        assert np.allclose(SE2.adjoint(ta).numpy(), ga.AdjointMap(), atol=1e-12)
        xi = RNG.standard_normal(3)
        assert np.allclose(SE2.right_jacobian(torch.tensor(xi)).numpy(), gtsam.Pose2.ExpmapDerivative(xi),
                           atol=1e-9)
        assert np.allclose(SE2.right_jacobian_inv(torch.tensor(xi)).numpy(),
                           gtsam.Pose2.LogmapDerivative(gtsam.Pose2.Expmap(xi)), atol=1e-9)


def _swap(v):
    """GTSAM's Pose3 tangent (omega, v) <-> ours (v, omega)."""
    return np.concatenate((v[3:], v[:3]))


def _swap_mat(m):
    p = [3, 4, 5, 0, 1, 2]
    return m[np.ix_(p, p)]


def test_se3_matches_gtsam_pose3():
    for _ in range(20):
        xa, xb = RNG.standard_normal(6), RNG.standard_normal(6)
        ga, gb = gtsam.Pose3.Expmap(xa), gtsam.Pose3.Expmap(xb)
        ta, tb = SE3.exp(torch.tensor(_swap(xa))), SE3.exp(torch.tensor(_swap(xb)))
        assert np.allclose(ta.numpy(), ga.matrix()[:3], atol=1e-12)
        assert np.allclose(SE3.compose(ta, tb).numpy(), ga.compose(gb).matrix()[:3], atol=1e-12)
        assert np.allclose(SE3.between(ta, tb).numpy(), ga.between(gb).matrix()[:3], atol=1e-12)
        assert np.allclose(SE3.log(ta).numpy(), _swap(gtsam.Pose3.Logmap(ga)), atol=1e-10)
        assert np.allclose(SE3.adjoint(ta).numpy(), _swap_mat(ga.AdjointMap()), atol=1e-12)
        assert np.allclose(SE3.right_jacobian(torch.tensor(_swap(xa))).numpy(),
                           _swap_mat(gtsam.Pose3.ExpmapDerivative(xa)), atol=1e-9)
        assert np.allclose(SE3.right_jacobian_inv(torch.tensor(_swap(xa))).numpy(),
                           _swap_mat(gtsam.Pose3.LogmapDerivative(ga)), atol=1e-9)


def test_so3_log_near_pi_matches_gtsam_rot3():
    for angle in (math.pi, math.pi - 1e-8, math.pi - 1e-4, 1e-9):
        axis = RNG.standard_normal(3)
        axis /= np.linalg.norm(axis)
        R = gtsam.Rot3.Expmap(axis * angle)
        ours = SO3.log(torch.tensor(R.matrix())).numpy()
        ref = gtsam.Rot3.Logmap(R)
        assert np.allclose(ours, ref, atol=1e-7) or np.allclose(ours, -ref, atol=1e-7) and angle == math.pi


def test_rpy_matches_gtsam_ypr():
    rpy = RNG.standard_normal(3)
    R = rpy_to_matrix(torch.tensor(rpy)).numpy()
    assert np.allclose(R, gtsam.Rot3.Ypr(rpy[2], rpy[1], rpy[0]).matrix(), atol=1e-12)
    assert np.allclose(SO2.matrix(torch.tensor([0.3])).numpy(), gtsam.Rot2(0.3).matrix(), atol=1e-12)


def test_wrap_angle_one_range_for_tensors_arrays_and_floats():
    """(-pi, pi] for every input type: pi stays, -pi maps to pi, in-range values are untouched."""
    values = [-3 * math.pi, -math.pi, -math.pi + 1e-12, -0.3, 0.0, 0.7, math.pi, math.pi + 1e-9,
              2 * math.pi, 5.5, -7.25, 1e3]
    as_tensor = wrap_angle(torch.tensor(values, dtype=torch.float64))
    as_array = wrap_angle(np.array(values))
    assert isinstance(as_array, np.ndarray)
    for i, v in enumerate(values):
        as_float = wrap_angle(v)
        assert isinstance(as_float, float)
        for got in (as_float, float(as_tensor[i]), float(as_array[i]), float(wrap_angle(np.float64(v)))):
            assert -math.pi < got <= math.pi
            assert abs(math.remainder(got - v, 2 * math.pi)) < 1e-12  # same angle
    assert wrap_angle(math.pi) == math.pi and wrap_angle(-math.pi) == math.pi
    assert wrap_angle(0.7) == 0.7 and float(wrap_angle(torch.tensor(-0.3, dtype=torch.float64))) == -0.3
    theta = torch.tensor([4.0, -4.0], dtype=torch.float64, requires_grad=True)
    wrap_angle(theta).sum().backward()
    assert torch.equal(theta.grad, torch.ones(2, dtype=torch.float64))
