"""Scan preprocessing on numpy (beams -> points, voxel filter, normals) against brute-force
references, and the ICP target of a keyframe built between keyframe steps."""
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from diffopt_ros.sim import SensorParams, Simulator, World
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.scan import point_normals, scan_to_points, voxel_downsample
from diffopt_ros.slam.system import SlamSystem

SENSORS = SensorParams()


def _voxel_reference(points: np.ndarray, cell: float) -> np.ndarray:
    """One centroid per cell ``floor(p / cell)``, by a dict of Python lists, in key order."""
    cells = defaultdict(list)
    for p in points.tolist():
        cells[(math.floor(p[0] / cell), math.floor(p[1] / cell))].append(p)
    return np.array([np.mean(cells[key], axis=0) for key in sorted(cells)])


@pytest.mark.parametrize('cell', [0.05, 0.3])
def test_voxel_filter_equals_a_brute_force_reference(cell):
    rng = np.random.default_rng(4)
    # clustered points with negative coordinates and points exactly on cell borders
    points = np.concatenate((rng.normal(0, 2.0, (400, 2)), rng.uniform(-1, 1, (200, 2)) * 0.05,
                             np.arange(-6, 6)[:, None] * cell * np.ones((1, 2))))
    expected = _voxel_reference(points, cell)
    out = voxel_downsample(points, cell)
    assert isinstance(out, np.ndarray) and out.shape == expected.shape
    assert np.allclose(out, expected, rtol=0, atol=1e-12)
    # a tensor in gives a tensor of its dtype, the same centroids
    tensor = voxel_downsample(torch.from_numpy(points), cell)
    assert tensor.dtype == torch.float64 and torch.equal(tensor, torch.from_numpy(out))
    assert voxel_downsample(torch.from_numpy(points).float(), cell).dtype == torch.float32
    assert voxel_downsample(points, 0.0) is points


def test_scan_to_points_on_arrays_and_tensors():
    ranges = np.array([1.0, math.inf, -math.inf, math.nan, 0.05, 12.0, 2.0, 11.99])
    angles = np.linspace(-1, 1, 8)
    points = scan_to_points(ranges, angles, 0.12, 12.0)
    keep = [0, 6, 7]
    expected = np.stack((ranges[keep] * np.cos(angles[keep]), ranges[keep] * np.sin(angles[keep])), 1)
    assert isinstance(points, np.ndarray) and np.array_equal(points, expected)
    tensor = scan_to_points(torch.tensor(ranges, dtype=torch.float32), torch.tensor(angles), 0.12, 12.0)
    assert tensor.dtype == torch.float32 and torch.allclose(tensor.double(), torch.from_numpy(expected))


def test_normals_and_planarity_equal_an_eigen_decomposition_of_the_nearest_neighbours():
    rng = np.random.default_rng(5)
    # two noisy walls meeting at a corner, and a cluster of clutter
    t = np.linspace(0, 2, 60)
    points = np.concatenate((np.stack((t, 0.02 * rng.standard_normal(60)), 1),
                             np.stack((0.02 * rng.standard_normal(60), t + 0.05), 1),
                             rng.uniform(3, 3.3, (30, 2))))
    k = 5
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    neighbours = np.argsort(distances, axis=1, kind='stable')[:, :k]
    local = points[neighbours] - points[neighbours].mean(axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(np.einsum('nki,nkj->nij', local, local) / k)
    normals, planarity = point_normals(points, k)
    assert isinstance(normals, np.ndarray)
    # the normal is the eigenvector of the smaller eigenvalue (sign arbitrary)
    assert np.allclose(np.abs((normals * vectors[:, :, 0]).sum(1)), 1.0, atol=1e-9)
    # planarity = 1 - smaller / larger principal spread
    assert np.allclose(planarity, 1.0 - values[:, 0] / values[:, 1], atol=1e-9)
    again = point_normals(torch.from_numpy(points), k)
    assert torch.equal(again[0], torch.from_numpy(normals))


def test_the_next_keyframe_steps_target_is_built_between_keyframe_steps():
    """After a keyframe is added, the next scan that is not a keyframe step builds the ICP
    target the next keyframe step matches against (the local map round it; and reports its CPU
    time); the keyframe steps give the same graph as building it on demand. After a
    localization nothing is built."""
    world = World.load('loop')
    sim = Simulator(world, seed=2)
    angles = SENSORS.lidar_angles()
    scans = []
    for _ in range(60):                       # 6 s at 0.5 m/s: about 6 keyframes
        scans.append((sim.time, sim.odometry[:3].copy(), sim.scan()))
        for _ in range(2):
            sim.step((0.5, 0.1), 0.05)
    deferred, on_demand = SlamSystem(SlamConfig()), SlamSystem(SlamConfig())
    built = 0
    for stamp, odom, ranges in scans:
        update = deferred.process(stamp, odom, ranges, angles, 0.12, 12.0)
        step = update.keyframe is not None or update.localized is not None
        reference = deferred._reference[0]
        if not step:
            assert deferred._submap[0] == deferred._submap_key(reference)
            built += update.cpu_seconds > 0
        other = on_demand.process(stamp, odom, ranges, angles, 0.12, 12.0)
        if not step and other.cpu_seconds > 0:      # undo it: the next step builds it on demand
            on_demand._submap = None
            on_demand._targets.pop(on_demand._reference[0], None)
        assert (other.keyframe, other.localized) == (update.keyframe, update.localized)
    assert deferred.num_keyframes >= 4 and built == deferred.num_keyframes
    assert torch.equal(deferred.estimate, on_demand.estimate)
    assert deferred.num_edges == on_demand.num_edges
    # the same scans again (the odometry back at the start): every keyframe step localizes on a
    # keyframe, and nothing is built between them (the next step localizes again, against one
    # keyframe's scan, not the local map)
    offset, localized = scans[-1][0] + 1.0, 0
    for stamp, odom, ranges in scans:
        before = deferred._submap
        update = deferred.process(stamp + offset, odom, ranges, angles, 0.12, 12.0)
        assert update.keyframe is None
        localized += update.localized is not None
        if update.localized is None:
            assert not update.cpu_seconds and deferred._submap is before
    assert localized >= 4
