"""Do SLAM weights learned from one drive help on the next? (learn on drive A, score on drive B)

    .venv/bin/python bench/slam_weights.py [--seeds 0 1 ... 11] [--window 10] [--seconds 90]

Simulates drives of the loop world's route at the demo's speed (0.7 m/s, the simulator's
default sensors, ``diffopt_ros.experiments.simulated_runs.route_run``; noise seed N, all from the same
start), one lap with the loop closure at the end. Consecutive seeds are paired, both ways
(A=0 -> B=1, 1 -> 0, 2 -> 3, ...): ``learn_slam`` learns the weights on drive A alone (with
``--window``, 0: whole drives), then drive B is scored with the default and with the learned
weights, as keyframe position RMSE (m) against the ground truth:

- offline: B's pose graph (built by the front end with the defaults) re-solved with each set;
- online: the front end and back end (``SlamSystem``) replayed over B with each set, the ATE of
  the final estimate (what slam_node would give on B with the learned file).

Prints one row per pair and the mean / worst ratio learned/default (< 1: learned better).
No ROS. Single torch thread.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from diffopt_ros.experiments.simulated_runs import route_run
from diffopt_ros.learn.api import learn_slam
from diffopt_ros.learn.slam_weights import (
    SlamObjective,
    aligned_positions,
    keyframe_sequence,
    slam_config,
    slam_params,
    trajectory_rmse,
)
from diffopt_ros.sim import World
from diffopt_ros.slam.graph import SlamWeights


def online_ate(run, params: dict) -> float:
    sequence = keyframe_sequence(run, slam_config(params))
    positions = aligned_positions(sequence.graph.estimate, sequence.ground_truth)
    return float((positions - sequence.ground_truth[:, :2]).square().sum(-1).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=list(range(12)),
                        help='drive noise seeds, paired consecutively (even count)')
    parser.add_argument('--window', type=int, default=10, help="learn_slam's window (0: whole)")
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--seconds', type=float, default=90.0, help='drive length (s)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    world, defaults = World.load('loop'), slam_params()
    runs = {s: route_run(world, seconds=args.seconds, speed=0.7, seed=s, name=f'drive{s}')
            for s in args.seeds}
    pairs = [p for a, b in zip(args.seeds[::2], args.seeds[1::2]) for p in ((a, b), (b, a))]
    ratios = []
    print(f'window {args.window}, epochs {args.epochs}, {args.seconds:.0f} s drives')
    print('A -> B | offline default -> learned | online default -> learned | learn s | weights')
    for a, b in pairs:
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = learn_slam([runs[a]], out, epochs=args.epochs, window=args.window,
                                progress=False, plots=False)
        seconds = time.perf_counter() - began
        learned = {**defaults, **result.params}
        graph_b = keyframe_sequence(runs[b], slam_config(defaults))
        off = [trajectory_rmse(SlamObjective(SlamWeights.from_params(p)), graph_b)
               for p in (defaults, learned)]
        on = [online_ate(runs[b], p) for p in (defaults, learned)]
        ratios.append((off[1] / off[0], on[1] / on[0]))
        weights = ' '.join(f'{k.split(".")[-1]}={v:.3g}' for k, v in result.params.items())
        print(f'{a} -> {b} | {off[0]:.4f} -> {off[1]:.4f} m ({100 * (ratios[-1][0] - 1):+.0f} %) | '
              f'{on[0]:.4f} -> {on[1]:.4f} m ({100 * (ratios[-1][1] - 1):+.0f} %) | {seconds:.0f} | '
              f'{weights}', flush=True)
    r = np.array(ratios)
    print(f'learned/default: offline mean {r[:, 0].mean():.3f} worst {r[:, 0].max():.3f}; '
          f'online mean {r[:, 1].mean():.3f} worst {r[:, 1].max():.3f}; '
          f'worse than default by > 5 %: offline {(r[:, 0] > 1.05).sum()}/{len(r)}, '
          f'online {(r[:, 1] > 1.05).sum()}/{len(r)}')


if __name__ == '__main__':
    main()
