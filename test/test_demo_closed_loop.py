"""What learning buys on the demo's course, without ROS (diffopt_ros.demo.closed_loop): the
simulator (the demo's true robot, config/sim.yaml: gains 0.8/0.7, lags 0.25/0.2 s) and the
obstacle-aware MPC (config/mpc.yaml with the demo's overrides; nominal gains 1, lags 0.05 s)
drive the course's goals through the clutter world, closing the loop on the true state. System
identification sees only what a robot records: the commands and the wheel odometry (/odom)."""
import math

import numpy as np
import pytest
import torch

from diffopt_ros import paths
from diffopt_ros.demo.closed_loop import drive_course, prediction_rmse
from diffopt_ros.demo.course import load_course
from diffopt_ros.drive import sim_robot
from diffopt_ros.learn.api import learn_dynamics
from diffopt_ros.learn.controller import mpc_params
from diffopt_ros.learn.datasets import RunData, Series

TRUE = {'model.gain_v': 0.8, 'model.gain_omega': 0.7, 'model.tau_v': 0.25, 'model.tau_omega': 0.2}


@pytest.fixture(scope='module')
def course():
    return load_course(paths.config_path('demo.yaml'))


def test_prediction_error_of_a_known_motion():
    # The robot drives straight at 0.5 m/s along x, at steady state under the command (0.5, 0):
    # a model with gain 1 predicts 0.5 m in 1 s; one with gain 0.8 settles towards 0.4 m/s.
    t = np.arange(0.0, 3.001, 0.01)
    truth = np.column_stack([0.5 * t, 0 * t, 0 * t, 0.5 + 0 * t, 0 * t])
    t_cmd = np.arange(0.0, 3.0, 0.1)
    run = RunData(name='straight', source='<test>', odom=Series(t, truth),
                  ground_truth=Series(t, truth), commands=Series(t_cmd, [[0.5, 0.0]] * len(t_cmd)))
    values = {**mpc_params(), 'dt': 0.1}
    assert prediction_rmse(run, values) < 1e-9
    slow = prediction_rmse(run, {**values, 'model.gain_v': 0.8, 'model.tau_v': 0.05})
    # v relaxes from 0.5 to 0.4 within about one 0.05 s lag: about 0.1 m short after 1 s
    assert 0.08 < slow < 0.1


@pytest.mark.slow
def test_learned_dynamics_predict_and_reach_the_demo_goals_better(course, tmp_path):
    torch.set_num_threads(1)
    nominal = mpc_params()                       # config/mpc.yaml: the model before learning
    before = drive_course(course, nominal)
    goals = before.result.goals
    assert len(goals) == len(course.goals) and all(g.reached for g in goals), goals
    assert sum(g.collisions for g in goals) == 0, goals
    # the metric's oracle: the true model predicts the true robot (only the simulator's 0.01 s
    # steps against the model's 0.1 s midpoint rule differ)
    assert prediction_rmse(before.data, {**before.mpc_values, **TRUE}) < 0.005
    learned = learn_dynamics([before.data], tmp_path, method='sysid', state_topic='/odom',
                             progress=False, plots=False)
    off = {k: (learned.params[k], v) for k, v in TRUE.items()
           if abs(learned.params[k] - v) > 0.05 * v}
    assert not off, off
    after = drive_course(course, nominal, learned.params)
    assert all(g.reached for g in after.result.goals) and after.result.success, after.result.goals
    error_before = prediction_rmse(before.data, before.mpc_values)
    error_after = prediction_rmse(after.data, after.mpc_values)
    time_before = sum(g.time for g in goals)
    time_after = sum(g.time for g in after.result.goals)
    print(f'MPC model prediction error 1 s ahead: {error_before:.4f} m -> {error_after:.4f} m; '
          f'time to the goals {time_before:.1f} s -> {time_after:.1f} s')
    assert math.isfinite(error_after) and error_after <= 0.1 * error_before
    assert time_after < time_before
    # both keep clear of obstacles: the footprint (the robot's radius) never touches
    clearance = min(g.min_clearance for r in (before, after) for g in r.result.goals)
    assert clearance > sim_robot('diff_drive').radius
