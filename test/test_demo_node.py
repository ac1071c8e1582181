"""``diffopt-ros demo`` on ROS (diffopt_ros.nodes.demo): a short drive of all four nodes in one process
whose bag is read back with rosbags, mcap (ros2 decoder) and evo."""
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffopt_ros import paths
from diffopt_ros.demo import phases
from diffopt_ros.demo.course import load_course
from diffopt_ros.nodes import demo


@pytest.mark.slow
def test_short_drive_reaches_goals_and_writes_a_readable_bag(tmp_path, capsys):
    course = load_course(paths.config_path('demo.yaml'))
    # One goal behind a round obstacle (the straight line from the start passes through it),
    # then back towards the start: the MPC plans both on the world's map.
    course.goals = np.array([[3.0, 5.3], [1.5, 2.0]])
    course.settle_time = 0.5
    result = demo.run_course(course, 'short', tmp_path, show_progress=False)
    print(result.summary())
    assert result.goals_reached == 2 and result.outcomes == ['goal reached'] * 2, result.summary()
    assert result.collisions == 0 and result.min_clearance > 0.2, result.summary()
    assert result.plan_deviation < 0.15 and result.prediction_rmse < 0.5, result.summary()
    # SLAM beats raw odometry even on this short stretch
    assert result.slam_ate < 0.5 * result.odom_ate + 0.01, result.summary()
    assert result.control_rate > 5.0 and result.plot.stat().st_size > 10_000
    assert (tmp_path / 'map.yaml').is_file()      # the map mpc_node navigated on
    # The recorded commands replayed through the MPC's model on ground truth: the nominal model
    # (gains 1) is off by about a tenth of a metre after 1 s, the true robot's model is not.
    nominal = phases.model_error(course, result.bag)
    true_model = tmp_path / 'true_model.yaml'
    true_model.write_text('mpc_node:\n  ros__parameters:\n    model.gain_v: 0.8\n'
                          '    model.gain_omega: 0.7\n    model.tau_v: 0.25\n    model.tau_omega: 0.2\n')
    assert 0.05 < nominal < 0.3 and phases.model_error(course, result.bag, true_model) < 0.02, nominal
    bag = result.bag
    assert bag == tmp_path / 'short' and (bag / 'metadata.yaml').is_file()

    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    for topic in ('/odom', '/ground_truth/odom', '/scan', '/cmd_vel', '/goal_pose',
                  '/mpc/predicted_path', '/slam/pose', '/slam/odom', '/diagnostics'):
        assert counts.get(topic, 0) > 0, (topic, counts)

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    mcap_files = sorted(bag.glob('*.mcap'))
    with open(mcap_files[0], 'rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        decoded = next(m for _, _, _, m in reader.iter_decoded_messages(topics=['/cmd_vel']))
    assert math.isfinite(decoded.linear.x)

    evo = shutil.which('evo_ape') or str(Path(sys.executable).parent / 'evo_ape')
    if not Path(evo).exists():
        pytest.skip('evo_ape not installed')
    # The README's command, no alignment flags: ground truth and SLAM share the map frame
    # (slam_node's initial_pose is the sim's start), so evo gives the summary's SLAM ATE.
    proc = subprocess.run([evo, 'bag2', str(bag), '/ground_truth/odom', '/slam/odom'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rmse = float(re.search(r'^\s*rmse\s+([0-9.eE+-]+)', proc.stdout, re.M).group(1))
    # the same pairs of stamps (bag: every message; the summary: those its subscription got)
    assert abs(rmse - result.slam_ate) <= max(0.005, 0.05 * result.slam_ate), (
        rmse, result.summary(), proc.stdout)
