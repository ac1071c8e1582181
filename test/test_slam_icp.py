"""Scan matching on a KD-tree: the same neighbours, matches and fitness as brute force; degenerate
directions and the information of their pose-graph edge."""
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from diffopt_ros.sim import SensorParams, World
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.graph import (
    LOOP,
    ODOM,
    SCAN,
    UNMEASURED_FRACTION,
    SlamWeights,
    edge_information,
    information_by_kind,
)
from diffopt_ros.slam.icp import CYCLE_LENGTH, CYCLE_SPREAD, IcpConfig, ScanTarget, _cycle, match_scans
from diffopt_ros.slam.scan import point_normals, scan_to_points, voxel_downsample

SENSORS = SensorParams()
ANGLES = SENSORS.lidar_angles()


class _BruteForce:
    """``cKDTree.query`` (k=1) by dense pairwise distances (``torch.cdist``): the reference."""

    def __init__(self, points: np.ndarray):
        self.points = torch.from_numpy(points)

    def query(self, queries: np.ndarray):
        distance, index = torch.cdist(torch.from_numpy(queries), self.points).min(dim=1)
        return distance.numpy(), index.numpy()


def _scan(world, pose, rng):
    ranges = world.raycast(pose[:2], pose[2] + ANGLES, SENSORS.lidar_range_max)
    ranges = ranges + 0.01 * rng.standard_normal(ranges.shape)
    return voxel_downsample(scan_to_points(torch.tensor(ranges), torch.tensor(ANGLES), 0.12, 12.0), 0.05)


def _pairs(count=12):
    """Scan pairs along the loop world's route, with noisy initial guesses (some too far)."""
    world, rng = World.load('loop'), np.random.default_rng(3)
    route = np.asarray(world.route, dtype=float)
    pairs = []
    for n in range(count):
        a, b = route[n % len(route)], route[(n + 1) % len(route)]
        here = np.r_[a + rng.uniform(0, 1) * (b - a), rng.uniform(-np.pi, np.pi)]
        there = here + np.r_[rng.normal(0, 0.3, 2), rng.normal(0, 0.2)]
        c, s = np.cos(here[2]), np.sin(here[2])
        offset = np.array([[c, s], [-s, c]]) @ (there[:2] - here[:2])
        truth = torch.tensor([offset[0], offset[1], there[2] - here[2]], dtype=torch.float64)
        noise = torch.tensor(rng.normal(0, [0.08, 0.08, 0.05]), dtype=torch.float64)
        pairs.append((_scan(world, there, rng), _scan(world, here, rng), truth + noise, truth))
    return pairs


@pytest.mark.parametrize('config', [IcpConfig(), IcpConfig(max_iterations=40, max_correspondence_distance=1.0,
                                                           min_inlier_ratio=0.6)])
def test_kd_tree_matches_equal_brute_force_matches(config):
    accepted = 0
    for source, target, guess, truth in _pairs():
        normals = point_normals(target)[0]
        tree = ScanTarget(target, normals)
        brute = ScanTarget(target, normals)
        brute.tree = _BruteForce(brute.points)
        fast, slow = match_scans(source, tree, guess, config), match_scans(source, brute, guess, config)
        assert fast.accepted == slow.accepted and fast.iterations == slow.iterations
        assert torch.allclose(fast.pose, slow.pose, rtol=0, atol=1e-12)
        assert abs(fast.inlier_ratio - slow.inlier_ratio) < 1e-12 and abs(fast.rms - slow.rms) < 1e-12
        assert torch.allclose(fast.information, slow.information, rtol=1e-9)
        assert fast.pose.dtype == source.dtype
        if fast.accepted:
            accepted += 1
            assert float((fast.pose[:2] - truth[:2]).norm()) < 0.02
        # a plain target (points, optional normals) gives the same match
        again = match_scans(source, target, guess, config, normals)
        assert torch.equal(again.pose, fast.pose)
    assert accepted >= 8


def test_normals_use_the_same_neighbours_as_brute_force():
    points = _pairs(1)[0][1]
    k = 5
    reference = torch.cdist(points, points).topk(k, dim=1, largest=False).indices
    local = points[reference] - points[reference].mean(dim=1, keepdim=True)
    expected = torch.linalg.eigh(local.transpose(1, 2) @ local / k)[1][:, :, 0]
    normals = point_normals(points, k)[0]
    assert torch.allclose(normals.abs(), expected.abs(), atol=1e-9)


def test_a_featureless_corridor_keeps_the_odometry_along_its_axis():
    """Scans 0.5 m apart in a corridor longer than the lidar's range look alike: plain ICP
    slides them onto each other (the point-to-line residuals do not see motion along the
    axis); degeneracy-aware matching keeps the guess there and corrects the rest."""
    world = World.from_dict({'start': [0.0, 0.0, 0.0], 'walls': [{'box': [-50, -1, 50, 1]}]})
    truth = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    guess = truth + torch.tensor([0.0, 0.06, 0.03], dtype=torch.float64)   # odometry: off across it
    slid = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        target = _scan(world, np.array([0.0, 0.1, 0.0]), rng)
        source = _scan(world, np.array([0.5, 0.1, 0.0]), rng)
        plain = match_scans(source, target, guess, IcpConfig(degeneracy_threshold=0.0))
        slid += abs(float(plain.pose[0]) - 0.5) > 0.05
        aware = match_scans(source, target, guess, IcpConfig())
        assert aware.accepted and aware.degenerate == 1
        assert abs(float(aware.pose[0]) - 0.5) < 0.01, 'along the axis: the odometry'
        assert abs(float(aware.pose[1])) < 0.01 and abs(float(aware.pose[2])) < 0.005, 'across: corrected'
    assert slid >= 2, 'plain ICP slides along the corridor'


def test_a_scene_with_corners_has_no_degenerate_direction():
    """The loop world's scans constrain every direction: the remapping leaves them alone."""
    for source, target, guess, _ in _pairs(6):
        assert match_scans(source, target, guess, IcpConfig()).degenerate == 0


def test_a_degenerate_match_s_edge_is_not_a_measurement_along_its_free_direction():
    """A corridor seen at a heading: the match returns its axis in the tangent coordinates of
    its pose (the source frame), and the edge's information keeps ``UNMEASURED_FRACTION`` of
    the scan weight along it and the full weight across it (sideways and the heading)."""
    world = World.from_dict({'start': [0.0, 0.0, 0.0], 'walls': [{'box': [-50, -1, 50, 1]}]})
    here, there = np.array([0.0, 0.1, 0.4]), np.array([0.5, 0.1, 0.0])  # target, source poses
    c, s = np.cos(here[2]), np.sin(here[2])
    offset = np.array([[c, s], [-s, c]]) @ (there[:2] - here[:2])
    truth = torch.tensor([offset[0], offset[1], there[2] - here[2]], dtype=torch.float64)
    rng = np.random.default_rng(0)
    target, source = _scan(world, here, rng), _scan(world, there, rng)
    match = match_scans(source, target, truth + torch.tensor([0.05, 0.03, 0.02], dtype=torch.float64))
    assert match.accepted and match.degenerate == 1
    axis = match.degenerate_directions[:, 0]
    assert abs(abs(float(axis[0])) - 1) < 1e-3, 'the axis in the source frame (heading 0): x'
    assert torch.equal(match.degenerate_directions[:, 1:], torch.zeros(3, 2, dtype=torch.float64))
    by_kind = SlamWeights().information_by_kind()
    information = edge_information(torch.tensor([SCAN]), by_kind, match.degenerate_directions[None])[0]
    along = float(axis @ information @ axis)
    assert along == pytest.approx(UNMEASURED_FRACTION * float(axis @ torch.diag(by_kind[SCAN]) @ axis),
                                  rel=1e-9)
    # across the axis (the directions u with u^T L axis = 0) the edge keeps its full weight
    diagonal = torch.diag(by_kind[SCAN])
    across = torch.tensor([-axis[1], axis[0], 0.0], dtype=torch.float64)
    for normal in (across, torch.linalg.cross(axis, across)):
        u = torch.linalg.solve(diagonal, normal)
        assert float(u @ diagonal @ axis) == pytest.approx(0.0, abs=1e-9)
        assert float(u @ information @ u) == pytest.approx(float(u @ diagonal @ u), rel=1e-6)
    # a match with no degenerate direction keeps the kind's diagonal
    full = edge_information(torch.tensor([SCAN]), by_kind, torch.zeros(1, 3, 3, dtype=torch.float64))
    assert torch.equal(full[0], torch.diag(by_kind[SCAN]))


def test_edge_information_is_differentiable_in_the_weights():
    """Learning tunes the per-kind weights through the per-edge information: its gradient
    against finite differences (float64), with one and two directions marginalised."""
    rng = torch.Generator().manual_seed(1)
    directions = torch.nn.functional.normalize(torch.randn(3, 3, 3, generator=rng, dtype=torch.float64),
                                               dim=1)
    directions[0] = 0.0                     # none
    directions[1, :, 1:] = 0.0              # one
    directions[2, :, 2] = 0.0               # two
    kinds = torch.tensor([ODOM, SCAN, LOOP])
    log_weights = torch.log(torch.tensor([2500.0, 2500.0, 1e4, 4e4], dtype=torch.float64)
                            ).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w: edge_information(kinds, information_by_kind(*w.exp()), directions), (log_weights,))


def test_a_match_that_cycles_between_close_poses_converges_to_their_mean():
    """Scans recorded in the demo (clutter world, keyframes 12 and 13 of a run, 0.6 m and
    16 degrees apart; truth from the simulator's ground truth): Gauss-Newton ends in a cycle
    of steps of 1.1e-4 to 1.8e-4 m, never below the 1e-4 tolerance. The cycle is convergence;
    the match is correct to well within the scans' 1 cm range noise over ~330 points."""
    data = np.load(Path(__file__).parent / 'data' / 'icp_cycle_demo.npz')
    config = SlamConfig().icp
    match = match_scans(torch.from_numpy(data['source']), ScanTarget(data['target']),
                        torch.from_numpy(data['initial']), config)
    assert match.accepted, match.reason
    assert match.iterations < config.max_iterations
    error = match.pose.numpy() - data['truth']
    assert np.abs(error[:2]).max() < 3e-3 and abs(error[2]) < np.radians(0.1), error


def test_cycle_detection_takes_a_closed_cycle_s_mean_and_rejects_a_wide_one():
    tolerance = 1e-4
    a, b = np.zeros(3), np.array([1.5e-4, -1e-4, 5e-5])
    assert _cycle(deque([a, b]), a + 1e-5, tolerance) is not None
    np.testing.assert_allclose(_cycle(deque([a, b]), a, tolerance), (a + b) / 2)
    assert _cycle(deque([a, b]), a + 3 * tolerance, tolerance) is None        # no return
    wide = a + CYCLE_SPREAD * tolerance * 3
    assert _cycle(deque([a, wide]), a, tolerance) is None                      # too wide
    assert _cycle(deque(maxlen=CYCLE_LENGTH), a, tolerance) is None
