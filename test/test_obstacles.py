"""Obstacle costs: the signed-distance field, its derivatives, map files, and MPC solves with it."""
import numpy as np
import pytest
import torch
from test_mpc_grad import TIGHT, _directional_check

from diffopt_ros.maps import MapError, load_map, world_grid
from diffopt_ros.mpc import MPC, DiffDriveLag, TrackingCost
from diffopt_ros.mpc.cost_sum import CostSum
from diffopt_ros.mpc.obstacles import DistanceField, ObstacleCost, scan_to_world, signed_distance
from diffopt_ros.mpc.solve_blocks import solve_scope
from diffopt_ros.sim import World
from diffopt_ros.slam.occupancy import OccupancyGrid, save_map

D = torch.float64


def _random_grid(seed=0, shape=(23, 31)):
    rng = np.random.default_rng(seed)
    occupied = rng.random(shape) < 0.08
    occupied[5:9, 10:12] = True
    return occupied


def test_signed_distance_matches_brute_force():
    occupied = _random_grid()
    resolution = 0.1
    sdf = signed_distance(occupied, resolution)
    rows, cols = np.indices(occupied.shape)
    centres = np.stack((cols, rows), -1).reshape(-1, 2) * resolution
    occ = centres[occupied.reshape(-1)]
    free = centres[~occupied.reshape(-1)]
    dist_occ = np.sqrt(((centres[:, None] - occ[None]) ** 2).sum(-1)).min(-1)
    dist_free = np.sqrt(((centres[:, None] - free[None]) ** 2).sum(-1)).min(-1)
    brute = np.where(occupied.reshape(-1), 0.5 * resolution - dist_free, dist_occ - 0.5 * resolution)
    np.testing.assert_allclose(sdf.reshape(-1), brute, atol=1e-12)
    assert (sdf[occupied] < 0).all() and (sdf[~occupied] > 0).all()


def test_distance_field_derivatives_match_finite_differences():
    occupied = _random_grid(1)
    field = DistanceField.from_grid(np.where(occupied, 100, 0), 0.1, (-1.0, 0.5))
    rng = np.random.default_rng(2)
    points = torch.tensor(rng.uniform([-0.9, 0.6], [1.9, 2.6], (50, 2)), dtype=D)
    d, g, H = field.query(points)
    torch.testing.assert_close(d, field(points), rtol=0, atol=1e-14)
    eps = 1e-7
    for k in range(2):
        step = torch.zeros(2, dtype=D)
        step[k] = eps
        gp, gm = field.query(points + step)[1], field.query(points - step)[1]
        fd = (field(points + step) - field(points - step)) / (2 * eps)
        torch.testing.assert_close(g[:, k], fd, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(H[:, :, k], (gp - gm) / (2 * eps), rtol=1e-5, atol=1e-5)
    # outside the grid the value is the border's and the gradient along the clamped axis is 0
    far = torch.tensor([[-5.0, 1.0]], dtype=D)
    assert field.query(far)[1][0, 0] == 0


def test_distance_field_is_the_bilinear_interpolant_of_the_cell_centres():
    """The precomputed coefficient table gives the textbook bilinear interpolation of the four
    surrounding cell centres (and the nearest border value outside the grid)."""
    occupied = _random_grid(5, (17, 13))
    resolution, origin = 0.1, (0.3, -0.7)
    sdf = signed_distance(occupied, resolution)
    field = DistanceField(sdf, resolution, origin)
    rng = np.random.default_rng(6)
    points = rng.uniform([0.0, -1.0], [1.9, 1.3], (400, 2))          # the grid and a border round it
    u = np.clip((points[:, 0] - origin[0]) / resolution - 0.5, 0, sdf.shape[1] - 1)
    v = np.clip((points[:, 1] - origin[1]) / resolution - 0.5, 0, sdf.shape[0] - 1)
    c0 = np.minimum(np.floor(u), sdf.shape[1] - 2).astype(int)
    r0 = np.minimum(np.floor(v), sdf.shape[0] - 2).astype(int)
    fx, fy = u - c0, v - r0
    expected = ((1 - fx) * (1 - fy) * sdf[r0, c0] + fx * (1 - fy) * sdf[r0, c0 + 1]
                + (1 - fx) * fy * sdf[r0 + 1, c0] + fx * fy * sdf[r0 + 1, c0 + 1])
    np.testing.assert_allclose(field(torch.tensor(points, dtype=D)).numpy(), expected, rtol=0, atol=1e-12)
    # at the cell centres the field is the signed distance itself
    rows, cols = np.indices(sdf.shape)
    centres = np.stack((origin[0] + (cols + 0.5) * resolution, origin[1] + (rows + 0.5) * resolution), -1)
    np.testing.assert_allclose(field(torch.tensor(centres, dtype=D)).numpy(), sdf, rtol=0, atol=1e-12)


def test_map_file_round_trip_and_errors(tmp_path):
    data = np.where(_random_grid(3), 100, 0).astype(np.int8)
    data[0, :4] = -1
    grid = OccupancyGrid(data=data, resolution=0.05, origin=(-2.0, 1.5))
    _, yaml_path = save_map(grid, tmp_path / 'map')
    # map_saver's free threshold, below the unknown grey 205 (p = 0.196): unknown stays unknown
    yaml_path.write_text(yaml_path.read_text().replace('free_thresh: 0.25', 'free_thresh: 0.19'))
    loaded = load_map(yaml_path)
    np.testing.assert_array_equal(loaded.data, data)
    assert loaded.resolution == 0.05 and loaded.origin == (-2.0, 1.5)
    (tmp_path / 'bad.yaml').write_text('image: map.pgm\nresolution: fine\norigin: [0, 0, 0]\n')
    with pytest.raises(MapError, match='bad.yaml: resolution'):
        load_map(tmp_path / 'bad.yaml')
    (tmp_path / 'nopgm.yaml').write_text('image: missing.pgm\nresolution: 0.1\norigin: [0, 0, 0]\n')
    with pytest.raises(MapError, match='missing.pgm'):
        load_map(tmp_path / 'nopgm.yaml')


def test_world_grid_field_agrees_with_the_geometry():
    world = World.load('corridors')
    grid = world_grid(world, 0.05)
    field = DistanceField.from_occupancy(grid)
    rng = np.random.default_rng(4)
    xmin, ymin, xmax, ymax = world.bounds
    points = rng.uniform([xmin, ymin], [xmax, ymax], (300, 2))
    exact = np.array([world.clearance(p) for p in points])
    near = np.abs(exact) < 1.0
    approx = field(torch.tensor(points, dtype=D)).numpy()
    # rasterisation and interpolation: within a cell diagonal of the true clearance
    assert np.abs(approx - exact)[near].max() < 0.05 * np.sqrt(2) + 1e-9


def _wall_field(resolution=0.05):
    """A wall x in [1.4, 1.6], y in [-2, 0.5] in a 6 m x 6 m free square."""
    xs = -1.5 + (np.arange(int(6 / resolution)) + 0.5) * resolution
    ys = -2.5 + (np.arange(int(6 / resolution)) + 0.5) * resolution
    X, Y = np.meshgrid(xs, ys)
    occupied = (X >= 1.4) & (X <= 1.6) & (Y <= 0.5)
    return DistanceField.from_grid(np.where(occupied, 100, 0), resolution, (-1.5, -2.5))


def test_obstacle_cost_expansion_matches_autograd():
    field = _wall_field()
    cost = ObstacleCost(field, radius=0.2, inflation=0.15, weight=50.0, position_indices=(0, 1)).to(D)
    cost.set_points([[0.7, 0.35], [3.0, 3.0]])
    x = torch.tensor([[[1.1, 0.2, 0.1, 0, 0], [1.45, 0.72, 0.3, 0, 0], [0.8, 0.5, 0, 0, 0],
                       [0.55, 0.2, 0, 0, 0], [2.5, 2.5, 0, 0, 0]]], dtype=D)
    u = torch.zeros(1, 4, 2, dtype=D)
    xr = x.clone().requires_grad_()
    J = cost.total(xr, u)
    (gx,) = torch.autograd.grad(J.sum(), xr, create_graph=True)
    exp = cost.expand(x, u, exact=True)
    torch.testing.assert_close(exp.lx, gx.detach(), rtol=1e-12, atol=1e-12)
    assert (exp.lx[0, :4, :2].abs() > 0).any(axis=-1).all(), 'the points must touch the penalty'
    hess = torch.stack([torch.autograd.grad(gx[0, t, k], xr, retain_graph=True)[0][0, t]
                        for t in range(5) for k in range(5)]).view(5, 5, 5)
    torch.testing.assert_close(exp.lxx[0], hess, rtol=1e-10, atol=1e-10)
    # Gauss-Newton curvature is PSD
    gn = cost.expand(x, u).lxx
    assert (torch.linalg.eigvalsh(gn) >= -1e-12).all()
    # central finite differences of the total
    eps = 1e-7
    for t, k in [(0, 0), (0, 1), (1, 1), (2, 0), (3, 1)]:
        step = torch.zeros_like(x)
        step[0, t, k] = eps
        fd = (cost.total(x + step, u) - cost.total(x - step, u)) / (2 * eps)
        assert abs(float(fd[0].detach()) - float(exp.lx[0, t, k].detach())) < 1e-6



def test_obstacle_cost_searches_only_the_points_within_reach(monkeypatch):
    """The costs, gradients and curvatures with the scan points searched only near the
    trajectory (``_near_points``) are those with every point searched, bit for bit: positions
    within the margin of points, beyond it, and far from all; the field's Hessian is formed only
    for the exact expansion, and its distance and gradient are the same without it."""
    field = _wall_field()
    cost = ObstacleCost(field, radius=0.2, inflation=0.15, weight=50.0).to(D)
    g = torch.Generator().manual_seed(2)
    cost.set_points(torch.rand(300, 2, generator=g, dtype=D) * torch.tensor([4.0, 4.0], dtype=D) - 1.0)
    x = torch.zeros(3, 21, 5, dtype=D)
    x[..., :2] = torch.rand(3, 21, 2, generator=g, dtype=D) * 1.5 + 0.2
    x[2, :, :2] += 6.0                                                   # far from every point
    u = torch.zeros(3, 20, 2, dtype=D)
    near = cost._near_points(cost._positions(x[:2]))
    assert 0 < near.shape[0] < cost.points.shape[0]
    got = [cost.total(x, u), *cost.expand(x, u), *cost.expand(x, u, exact=True)]
    monkeypatch.setattr(ObstacleCost, '_near_points', lambda self, p: self.points.to(p))
    want = [cost.total(x, u), *cost.expand(x, u), *cost.expand(x, u, exact=True)]
    assert bool((got[0] > 0).any())
    for a, b in zip(got, want):
        assert (a is None and b is None) or torch.equal(a, b)
    d, grad, hess = field.query(x[..., :2])
    assert field.query(x[..., :2], hessian=False)[2] is None
    assert all(torch.equal(a, b) for a, b in zip(field.query(x[..., :2], hessian=False)[:2], (d, grad)))

def test_obstacle_cost_in_a_solve_scope_is_the_cost_formed_per_call():
    """Within a solve's scope the margin, weight and reach are formed once: totals and both
    expansions equal, bit for bit, those formed on every call, and follow the parameters changed
    between solves."""
    cost = ObstacleCost(_wall_field(), radius=0.2, inflation=0.15, weight=50.0).to(D)
    g = torch.Generator().manual_seed(4)
    cost.set_points(torch.rand(200, 2, generator=g, dtype=D) * 4.0 - 1.0)
    x = torch.zeros(2, 21, 5, dtype=D)
    x[..., :2] = torch.rand(2, 21, 2, generator=g, dtype=D) * 1.5 + 0.2
    u = torch.zeros(2, 20, 2, dtype=D)
    for inflation, weight in ((0.15, 50.0), (0.4, 20.0)):
        with torch.no_grad():
            cost.log_inflation.fill_(np.log(inflation))
            cost.log_weight.fill_(np.log(weight))
        want = [cost.total(x, u), *cost.expand(x, u), *cost.expand(x, u, exact=True)]
        with torch.inference_mode(), solve_scope():
            for _ in range(2):
                got = [cost.total(x, u), *cost.expand(x, u), *cost.expand(x, u, exact=True)]
                for a, b in zip(want, got):
                    assert (a is None and b is None) or torch.equal(a.detach(), b)
        assert bool((want[0] > 0).any())


def _wall_problem(with_obstacles: bool):
    model = DiffDriveLag(dt=0.1).to(D)
    tracking = TrackingCost([10., 10., 0.0, 0.1, 0.1], [0.5, 0.5], terminal_scale=5.,
                            angle_indices=model.angle_indices).to(D)
    cost = tracking
    if with_obstacles:
        cost = CostSum(tracking, ObstacleCost(_wall_field(), radius=0.2, inflation=0.1, weight=300.0).to(D))
    return MPC(model, cost, 40, u_lower=[-0.5, -1.5], u_upper=[1.0, 1.5], max_iterations=100)


def test_mpc_keeps_clearance_from_a_wall_it_would_otherwise_cut():
    x0 = torch.tensor([[0.0, 0.0, 0.3, 0.0, 0.0]], dtype=D)
    goal = torch.tensor([[3.0, 1.2, 0.0, 0.0, 0.0]], dtype=D)
    field = _wall_field()
    plain = _wall_problem(False)(x0, goal, backward='none')
    avoid = _wall_problem(True)(x0, goal, backward='none')
    clear_plain = field(plain.states[0, :, :2]).min()
    clear_avoid = field(avoid.states[0, :, :2]).min()
    assert clear_plain < 0.2, 'without the obstacle cost the plan cuts the wall end (robot radius 0.2 m)'
    assert clear_avoid > 0.2, f'clearance {float(clear_avoid)} m below the robot radius'
    assert float((avoid.states[0, -1, :2] - goal[0, :2]).norm()) < 0.3


@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
def test_implicit_gradients_through_a_solve_that_touches_an_obstacle(solver):
    model = DiffDriveLag(dt=0.1, gain_v=0.9, tau_v=0.2).to(D)
    tracking = TrackingCost([10., 10., 0.5, 0.1, 0.1], [0.5, 0.3], terminal_scale=3., rate_weight=[0.5, 0.2],
                            angle_indices=model.angle_indices).to(D)
    # a round obstacle (disc of radius 0.25 at (0.6, 0.05)) in the grid, a scan point behind it
    resolution = 0.02
    xs = -1.0 + (np.arange(150) + 0.5) * resolution
    X, Y = np.meshgrid(xs, xs)
    occupied = np.hypot(X - 0.6, Y - 0.05) <= 0.25
    field = DistanceField.from_grid(np.where(occupied, 100, 0), resolution, (-1.0, -1.0))
    obstacles = ObstacleCost(field, radius=0.2, inflation=0.1, weight=80.0).to(D)
    obstacles.set_points([[1.0, -0.45]])
    mpc = MPC(model, CostSum(tracking, obstacles), 12, u_lower=[-0.5, -1.5], u_upper=[1.0, 1.5],
              solver=solver, **dict(TIGHT, tolerance=1e-11))   # kinks of the bilinear field: 1e-13 stalls
    inputs = dict(x_init=torch.tensor([[0.0, 0.0, 0.0, 0.2, 0.0]], dtype=D),
                  target=torch.tensor([[1.3, 0.0, 0.0, 0, 0]], dtype=D),
                  u_prev=torch.tensor([[0.2, 0.0]], dtype=D))
    sol = _directional_check(mpc, inputs, 'implicit')
    clearance = obstacles.clearance(sol.states[0, :, :2].detach())
    assert (clearance < obstacles.margin.detach()).any(), 'the solution must touch the penalty'


def test_scan_points_to_world():
    pts = scan_to_world([1.0, 2.0, np.pi / 2], [1.0, np.inf, 2.0, 30.0], [0.0, 0.5, np.pi / 2, 0.0],
                        max_range=10.0)
    np.testing.assert_allclose(pts, [[1.0, 3.0], [-1.0, 2.0]], atol=1e-12)
    # below the sensor's range_min (a hit on the robot itself): dropped
    pts = scan_to_world([1.0, 2.0, np.pi / 2], [0.05, 1.0], [0.0, 0.0], min_range=0.12)
    np.testing.assert_allclose(pts, [[1.0, 3.0]], atol=1e-12)
