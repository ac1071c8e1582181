"""Replay recorded runs through online SLAM and score it against their ground truth.

    .venv/bin/python bench/slam_replay.py runs/demo_*/before runs/demo_*/after [--params-file YAML]

Each bag (a recorder or ``diffopt-ros demo`` run with ``/odom``, ``/scan`` and
``/ground_truth/odom``) is fed scan by scan, each with the odometry interpolated at its stamp,
to :class:`~diffopt_ros.slam.system.SlamSystem` with slam_node's settings (``config/slam.yaml``,
or ``--params-file``), anchored at the first ground-truth pose as the demo anchors slam_node.
Per run it prints the position error of the pose SLAM gives at each scan (RMSE and max, m;
what slam_node publishes on ``/slam/pose``, without alignment) and the outcomes of the scan
matches of the keyframe steps (accepted, or the reason each was rejected). The replay is
deterministic: run it with ``PYTHONPATH`` pointing at another checkout to compare libraries on
the same scans. No ROS. Single torch thread.
"""
from __future__ import annotations

import argparse
import math
import re
from collections import Counter

import numpy as np
import torch

from diffopt_ros.bag.align import interpolate_states
from diffopt_ros.learn.datasets import load_run
from diffopt_ros.learn.slam_weights import replay_scans
from diffopt_ros.params_file import read_params_file
from diffopt_ros.paths import config_path
from diffopt_ros.slam.config import config_from_params
from diffopt_ros.slam.system import SlamSystem


def replay(path: str, config) -> tuple[float, float, Counter]:
    """Position RMSE and max (m) of SLAM's pose at each scan of the run at ``path``, and the
    scan-match outcomes (``'accepted'`` or the rejection reason up to its first number)."""
    run = load_run(path, require=('/odom', '/scan', '/ground_truth/odom'))
    truth, inside = interpolate_states(run.ground_truth.t, run.ground_truth.values, run.scans.t)
    first = run.ground_truth.values[0]
    slam = SlamSystem(config, initial_pose=(first[0], first[1], first[2]))
    errors, outcomes = [], Counter()
    for k, update in replay_scans(run, slam):
        if update.skipped or not inside[k]:
            continue
        errors.append(math.hypot(update.pose[0] - truth[k, 0], update.pose[1] - truth[k, 1]))
        if update.scan_match is not None:
            reason = update.scan_match.reason
            outcomes[re.split(r' [\d(]', reason)[0] if reason else 'accepted'] += 1
    errors = np.asarray(errors)
    return float(np.sqrt(np.mean(errors ** 2))), float(errors.max()), outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('runs', nargs='+', help='bag folders (rosbag2, MCAP or sqlite3)')
    parser.add_argument('--params-file', default=str(config_path('slam.yaml')),
                        help='slam_node parameters (default config/slam.yaml)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = config_from_params(read_params_file(args.params_file, 'slam_node'))
    rows = []
    for path in args.runs:
        rmse, worst, outcomes = replay(path, config)
        rows.append((rmse, worst))
        matches = ', '.join(f'{name} {count}' for name, count in sorted(outcomes.items()))
        print(f'{path}: position RMSE {rmse:.3f} m, max {worst:.3f} m; keyframe-step matches: {matches}',
              flush=True)
    rmse = np.array(rows)
    print(f'{len(rows)} runs: RMSE median {np.median(rmse[:, 0]):.3f} m, worst {rmse[:, 0].max():.3f} m; '
          f'max error worst {rmse[:, 1].max():.3f} m')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
