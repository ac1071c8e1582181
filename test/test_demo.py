"""``diffopt-ros demo``: course file, metrics, and a short drive of all four nodes in one process
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
from diffopt_ros.nodes import demo


def test_course_file_loads_and_bad_keys_are_named(tmp_path):
    course = demo.load_course(paths.config_path('demo.yaml'))
    assert course.world == 'loop' and course.speed > 0 and course.goals.shape == (4, 2)
    assert course.overrides['mpc_node']['control_rate'] > 0
    bad = tmp_path / 'course.yaml'
    bad.write_text('course:\n  sped: 0.3\n')
    with pytest.raises(demo.DemoError, match=r"course.yaml: unknown key\(s\) \['sped'\]"):
        demo.load_course(bad)
    bad.write_text('learn:\n  slma: false\n')
    with pytest.raises(demo.DemoError, match='slma'):
        demo.load_course(bad)
    bad.write_text('course:\n  speed: -1\n')
    with pytest.raises(demo.DemoError, match='speed'):
        demo.load_course(bad)
    bad.write_text('overrides:\n  mpc: {horizon: 3}\n')
    with pytest.raises(demo.DemoError, match='mpc'):
        demo.load_course(bad)
    # override values are checked against the node's schema (an int for a float is converted)
    bad.write_text('overrides:\n  mpc_node: {horizon: twenty}\n')
    with pytest.raises(demo.DemoError, match=r'course.yaml: overrides.mpc_node: mpc_node parameter '
                                             'horizon: expected an integer'):
        demo.load_course(bad)
    bad.write_text('overrides:\n  sim_node: {wait_for_cmd: 1, stepp_rate: 5.0}\n')
    with pytest.raises(demo.DemoError, match="no parameter 'stepp_rate'; did you mean 'step_rate'"):
        demo.load_course(bad)
    bad.write_text('overrides:\n  sim_node: {wait_for_cmd: 1}\n')
    assert demo.load_course(bad).overrides['sim_node'] == {'wait_for_cmd': 1.0}


def test_metrics_on_known_trajectories():
    t = np.linspace(0.0, 10.0, 101)
    truth = np.column_stack([t, np.zeros_like(t), np.zeros_like(t)])
    # An estimate in a frame rotated by 90 deg and shifted, 0.1 m off to the left in truth.
    est_truth = truth + [0.0, 0.1, 0.0]
    to_frame, from_frame = demo._se2_maps([2.0, -1.0, math.pi / 2])
    est = to_frame(est_truth)
    np.testing.assert_allclose(from_frame(est), est_truth, atol=1e-12)
    aligned = demo.align_to_first_pose(t, est, t, truth)
    assert math.isclose(demo.position_rmse(t, aligned, t, truth), 0.0, abs_tol=1e-12)  # first pose
    assert math.isclose(demo.position_rmse(t, est_truth, t, truth), 0.1, rel_tol=1e-9)
    leg = demo.Leg(start=np.zeros(2), goal=np.array([4.0, 0.0]), t0=1.0, speed=1.0, turn=1.0)
    assert leg.duration == 5.0
    times, points = leg.waypoints(0.5)
    assert np.all(np.diff(times) > 0) and times[0] == 1.0 and times[-1] == 6.0
    np.testing.assert_allclose(points[[0, 1, -1]], [[0, 0], [0, 0], [4, 0]])
    # The robot 1 s behind the reference while moving: error 1 m over the 4 moving seconds.
    robot = np.column_stack([np.clip(t - 3.0, 0.0, 4.0), np.zeros_like(t)])
    inside = (t >= 1.0) & (t <= 8.0)
    expected = np.sqrt(np.mean((leg.reference(t[inside])[:, 0] - robot[inside, 0]) ** 2))
    assert math.isclose(demo.tracking_rmse([(leg, 8.0)], t, robot), expected)
    assert 0.5 < expected < 1.0
    # An estimate that jumps 0.3 m sideways at t = 5 s (a loop closure) while the wheels drive on.
    estimate = truth.copy()
    estimate[t >= 5.0, 1] += 0.3
    jumps = demo.estimate_jumps(t, estimate, t, truth, threshold=0.1)
    assert len(jumps) == 1 and math.isclose(jumps[0][0], 5.0)
    assert math.isclose(jumps[0][1], math.hypot(0.1, 0.3) - 0.1)   # moved minus driven
    assert demo.estimate_jumps(t, truth, t, truth) == []
    # Leaving out the settling time after it: only the samples inside the interval are dropped.
    ref_leg = demo.Leg(start=np.zeros(2), goal=np.array([10.0, 0.0]), t0=0.0, speed=1.0)
    assert math.isclose(demo.tracking_rmse([(ref_leg, 10.0)], t, estimate, [(5.0, 10.0)]), 0.0,
                        abs_tol=1e-12)
    assert demo.tracking_rmse([(ref_leg, 10.0)], t, estimate) > 0.2


def test_new_folder_never_overwrites(tmp_path):
    first = demo._new_folder(tmp_path / 'run')
    second = demo._new_folder(tmp_path / 'run')
    assert first.name == 'run' and second.name == 'run_1'


@pytest.mark.slow
def test_short_drive_reaches_goals_and_writes_a_readable_bag(tmp_path, capsys):
    course = demo.load_course(paths.config_path('demo.yaml'))
    # Out along the first corridor, then back past the start: a straight leg and a U-turn.
    course.goals = np.array([[5.5, 1.5], [3.0, 1.5]])
    course.settle_time = 0.5
    result = demo.run_course(course, 'short', tmp_path, show_progress=False)
    print(result.summary())
    assert result.goals_reached == 2, result.summary()
    assert result.tracking_rmse < 0.3 and result.true_tracking_rmse < 0.4, result.summary()
    # SLAM beats raw odometry even on this short stretch (the full lap is the demo's).
    assert result.slam_ate < 0.5 * result.odom_ate + 0.01, result.summary()
    assert result.control_rate > 5.0 and result.plot.stat().st_size > 10_000
    bag = result.bag
    assert bag == tmp_path / 'short' and (bag / 'metadata.yaml').is_file()

    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    for topic in ('/odom', '/ground_truth/odom', '/scan', '/cmd_vel', '/goal_pose', '/plan',
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
