"""Simulator costs: lidar raycast, dynamics step, and sim_node stepping with publishing.

    .venv/bin/python bench/sim.py [--repeats 200]

Prints the median wall time of each operation and ratios against peers measured in the same
run: the raycast against a per-beam loop (the obvious non-vectorized implementation) and
against the float64 path; stepping against real time (how many times faster than real time
one robot can run at 100 Hz with 10 Hz scans). Single thread (numpy on small arrays).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np

from diffopt_ros.sim import Simulator, World


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (s), after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def raycast_per_beam(world: World, origin, angles, max_range: float) -> np.ndarray:
    """Peer: one vectorized-over-walls ray test per beam (a Python loop over beams)."""
    out = np.full(len(angles), np.inf)
    walls, discs = world.walls, world.discs
    a, e = walls[:, :2] - origin, walls[:, 2:] - walls[:, :2]
    for i, angle in enumerate(angles):
        d = np.array([math.cos(angle), math.sin(angle)])
        denom = d[0] * e[:, 1] - d[1] * e[:, 0]
        with np.errstate(divide='ignore', invalid='ignore'):
            t = (a[:, 0] * e[:, 1] - a[:, 1] * e[:, 0]) / denom
            s = (a[:, 0] * d[1] - a[:, 1] * d[0]) / denom
        t = t[(t >= 0) & (s >= 0) & (s <= 1)]
        best = t.min() if len(t) else np.inf
        f = origin - discs[:, :2]
        b = f @ d
        disc = b * b - (f * f).sum(axis=1) + discs[:, 2] ** 2
        near = -b[disc >= 0] - np.sqrt(disc[disc >= 0])
        near = near[near >= 0]
        out[i] = min(best, near.min() if len(near) else np.inf)
    out[out > max_range] = np.inf
    return out


def bench_raycast(repeats: int) -> None:
    world = World.load('loop')
    angles = np.linspace(-math.pi, math.pi, 360, endpoint=False)
    origin = np.array([1.5, 1.5])
    reference = world.raycast(origin, angles, 12.0)
    assert np.allclose(raycast_per_beam(world, origin, angles, 12.0), reference, equal_nan=True)
    t64 = median_time(lambda: world.raycast(origin, angles, 12.0), repeats)
    t32 = median_time(lambda: world.raycast(origin, angles, 12.0, dtype=np.float32), repeats)
    tloop = median_time(lambda: raycast_per_beam(world, origin, angles, 12.0), max(repeats // 10, 5))
    origins = np.random.default_rng(0).uniform([1.0, 1.0], [2.0, 11.0], size=(64, 2))
    tbatch = median_time(lambda: world.raycast(origins, np.broadcast_to(angles, (64, 360)), 12.0,
                                               dtype=np.float32), max(repeats // 10, 5)) / 64
    print(f'raycast, world loop ({len(world.walls)} walls, {len(world.discs)} discs), 360 beams:')
    print(f'  float32 (Simulator.scan) {1e3 * t32:7.3f} ms/scan = {100 * t32 / 0.1:5.2f} % of a '
          f'10 Hz budget')
    print(f'  float64                  {1e3 * t64:7.3f} ms/scan   float32 speed-up x{t64 / t32:.1f}')
    print(f'  per-beam loop (peer)     {1e3 * tloop:7.3f} ms/scan   float32 speed-up x{tloop / t32:.0f}')
    print(f'  batch of 64 poses, f32   {1e3 * tbatch:7.3f} ms/scan   (offline data generation)')


def bench_stepping(repeats: int) -> None:
    sim = Simulator(World.load('loop'), seed=0)
    step = median_time(lambda: sim.step((0.3, 0.1), 0.01), repeats * 10)
    scan = median_time(sim.scan, repeats)
    per_sim_second = 100 * step + 10 * scan
    print('Simulator (100 Hz steps, 10 Hz scans):')
    print(f'  step {1e6 * step:.1f} us, scan {1e3 * scan:.3f} ms -> {1 / per_sim_second:.0f}x '
          'real time for one robot')


def bench_node(repeats: int) -> None:
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from diffopt_ros.nodes.sim_node import SimNode

    context = Context()
    rclpy.init(context=context)
    try:
        node = SimNode(context=context, parameter_overrides=[Parameter('paused', value=True)])
        steps = 100
        per_step = median_time(lambda: node.advance(steps), max(repeats // 20, 5)) / steps
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    print('sim_node.advance (publishes /clock every step, odometry at 50 Hz, scans at 10 Hz):')
    print(f'  {1e6 * per_step:.0f} us per 10 ms step -> at most {0.01 / per_step:.0f}x real time '
          f'(real_time_factor 1 uses {100 * per_step / 0.01:.1f} % of a core)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=200)
    parser.add_argument('--skip-node', action='store_true', help='skip the rclpy node benchmark')
    args = parser.parse_args()
    print(f'numpy {np.__version__}, single-threaded Python; median of {args.repeats} runs')
    bench_raycast(args.repeats)
    bench_stepping(args.repeats)
    if not args.skip_node:
        bench_node(args.repeats)


if __name__ == '__main__':
    main()
