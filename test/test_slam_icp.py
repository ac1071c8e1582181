"""Scan matching on a KD-tree: the same neighbours, matches and fitness as brute force."""
import numpy as np
import pytest
import torch

from diffopt_ros.sim import SensorParams, World
from diffopt_ros.slam.icp import IcpConfig, ScanTarget, match_scans
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
