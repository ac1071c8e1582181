"""mpc_node's parts without a running node: goals and plans (``nodes/mpc_targets``), the fallback
and late results of the budgeted solve (``nodes/mpc_solve``), the /diagnostics status
(``nodes/mpc_stats``)."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Quaternion

from diffopt_ros.mpc.receding import ControlStep
from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.mpc_solve import PlanKeeper
from diffopt_ros.nodes.mpc_stats import COUNTERS, MpcStats
from diffopt_ros.nodes.mpc_targets import Target


def _path(points, stamps):
    msg = ros_convert.poses_to_path(np.asarray(points, float), ros_convert.sec_to_stamp(0.0), 'odom')
    for pose, t in zip(msg.poses, stamps):
        pose.header.stamp = ros_convert.sec_to_stamp(t)
    return msg


def test_plans_timed_untimed_and_empty():
    square = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]]
    timed = Target.from_plan(_path(square, [1.0, 2.0, 3.0, 4.0, 5.0]))
    untimed = Target.from_plan(_path(square, [1.0] * 5))
    assert timed.times is not None and untimed.times is None
    assert untimed.length == pytest.approx(4.0) and untimed.frame == 'odom'
    np.testing.assert_allclose(untimed.goal, [0.0, 0.0])
    assert Target.from_plan(_path([], [])) is None               # an empty path: stop
    start = np.zeros(5)
    # a closed path is not done at its start, where its end is
    assert not untimed.at_end(start, 0.0, 0.15)
    untimed.progress = 3.9
    assert untimed.at_end(start, 0.0, 0.15)
    assert not timed.at_end(start, 4.9, 0.15) and timed.at_end(start, 5.0, 0.15)
    # the reference of an untimed path moves the progress along it
    untimed.progress = 0.0
    reference = untimed.reference(start, 0.0, 10, 0.1, 0.5)
    assert reference.shape == (10, 5) and untimed.progress >= 0.0
    assert reference[-1, 0] == pytest.approx(0.5, abs=0.06)     # 10 steps of 0.05 m along x


def test_goal_with_a_zero_quaternion_is_refused():
    msg = ros_convert.xy_yaw_to_pose([1.0, 2.0, 0.0], ros_convert.sec_to_stamp(0.0), 'map')
    target = Target.from_goal(msg)
    np.testing.assert_allclose(target.goal, [1.0, 2.0])
    assert target.path is None and target.frame == 'map'
    assert target.at_end(np.array([1.1, 2.0, 0, 0, 0]), 0.0, 0.15)
    msg.pose.orientation = Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)
    with pytest.raises(ros_convert.MessageError, match='goal_pose'):
        Target.from_goal(msg)


def _step(controls):
    controls = np.asarray(controls, float)
    return ControlStep(controls, np.zeros((len(controls) + 1, 5)), 1, True, 0.001)


def test_fallback_is_the_plan_shifted_to_now_then_zero():
    keeper = PlanKeeper()
    assert keeper.fallback(1.0, 0.5, 0.1) == (0.0, 0.0)         # no plan
    keeper.plan, keeper.plan_time, keeper.plan_stamp = _step([[1, 0], [2, 0], [3, 0]]), 10.0, 10.0
    assert keeper.fallback(10.0, 0.5, 0.1) == (1.0, 0.0)
    assert keeper.fallback(10.15, 0.5, 0.1) == (2.0, 0.0)
    assert keeper.fallback(10.35, 0.5, 0.1) == (0.0, 0.0)        # past the plan's end: no extrapolation
    keeper.plan = _step([[1, 0]] * 20)
    assert keeper.fallback(10.6, 0.5, 0.1) == (0.0, 0.0)         # its state is older than state_timeout


class _Solver:
    """A solver whose solve waits for ``release`` (an overrunning solve)."""

    settings = SimpleNamespace(dt=0.1)

    def __init__(self):
        self.release = threading.Event()

    def solve(self, state, reference, warm, last_cmd, deadline):
        self.release.wait(5.0)
        return _step([[0.3, 0.1]] * 5)


class _Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, text, **kwargs):
        self.warnings.append(text)


def test_an_overrunning_solve_falls_back_and_serves_as_the_next_plan():
    keeper, solver, stats, logger = PlanKeeper(), _Solver(), MpcStats(), _Logger()
    args = (np.zeros(5), np.zeros((5, 5)), np.zeros(2))
    try:
        command, solution = keeper.solve(solver, *args, 0.0, 0.0, 1, time.perf_counter() + 0.05, stats,
                                         logger, 0.5)
        assert (command, solution) == ((0.0, 0.0), None) and stats.mode == 'overrun'
        assert stats.counts['overruns'] == 1 and 'solve_budget' in logger.warnings[0]
        solver.release.set()
        time.sleep(0.2)
        # the late result (same solver, same target) is the plan; a new solve starts from it
        command, solution = keeper.solve(solver, *args, 0.1, 0.1, 1, time.perf_counter() + 2.0, stats,
                                         logger, 0.5)
        assert command == (0.3, 0.1) and solution is not None and stats.counts['solves'] == 1
        assert keeper.plan is solution and keeper.plan_stamp == 0.1
    finally:
        solver.release.set()
        keeper.stop()


def test_diagnostic_status_lists_every_counter_and_warns_on_fallback_modes():
    stats = MpcStats()
    stats.counts['overruns'] += 2
    stats.mode = 'overrun'
    status = stats.status('mpc_node: MPC', '/mpc_node', 0.004, 'cpu')
    values = {kv.key: kv.value for kv in status.values}
    assert set(COUNTERS) <= set(values) and values['overruns'] == '2'
    assert values['tick_time_ms'] == '4' and values['device'] == 'cpu'
    assert status.level == DiagnosticStatus.WARN and status.message == 'overrun'
    stats.mode = 'tracking'
    assert stats.status('n', 'h', 0.0, 'cpu').level == DiagnosticStatus.OK


def test_a_tick_waits_for_the_solve_still_running_up_to_its_deadline():
    """A tick whose previous solve still runs waits for it (up to its own deadline) instead of
    falling back at once, adopts it and solves again: every tick's command goes out at the same
    phase of the tick, so commands keep the control period's spacing while solves overrun (a
    tick that fell back at once sent its command a budget earlier than the tick before)."""
    keeper, solver, stats, logger = PlanKeeper(), _Solver(), MpcStats(), _Logger()
    args = (np.zeros(5), np.zeros((5, 5)), np.zeros(2))
    released = []

    def release():
        released.append(time.perf_counter())
        solver.release.set()
    try:
        command, _ = keeper.solve(solver, *args, 0.0, 0.0, 1, time.perf_counter() + 0.02, stats,
                                  logger, 0.5)
        assert command == (0.0, 0.0) and stats.mode == 'overrun'      # the solve still runs
        timer = threading.Timer(0.1, release)
        timer.start()
        deadline = time.perf_counter() + 5.0
        command, solution = keeper.solve(solver, *args, 0.05, 0.05, 1, deadline, stats, logger, 0.5)
        returned = time.perf_counter()
        timer.join()
        assert released and released[0] <= returned < deadline       # it waited for the solve
        assert command == (0.3, 0.1) and solution is not None and keeper.plan is solution
        assert stats.counts['overruns'] == 1 and stats.counts['solves'] == 1
    finally:
        solver.release.set()
        keeper.stop()
