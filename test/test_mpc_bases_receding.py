"""The robot bases of mpc_node's receding-horizon solve: each ``model`` drives towards a goal
through :func:`~diffopt_ros.mpc.receding.receding_step`, and a car's commands are its Twist or its
steering angle (``cmd_steering_angle``)."""
import math

import numpy as np
import pytest
import torch

from diffopt_ros.mpc.bases import Bicycle, command_of, control_of, model_state
from diffopt_ros.mpc.models import DiffDriveLag, Unicycle
from diffopt_ros.mpc.receding import (
    MpcSettings,
    RecedingHorizonSolver,
    goal_reference,
    receding_step,
)
from diffopt_ros.params.mpc import SCHEMA as MPC_SCHEMA

F64 = torch.float64


@pytest.mark.parametrize('model, kind', [('diff_drive_lag', DiffDriveLag), ('unicycle', Unicycle),
                                         ('bicycle', Bicycle)])
def test_receding_step_drives_each_model_to_a_goal(model, kind):
    """Closed loop: the model's own step applies the first control of each solve."""
    solver = RecedingHorizonSolver(MpcSettings(model=model, horizon=15))
    mpc, dynamics = solver.mpc, solver.model
    assert isinstance(dynamics, kind)
    goal = np.array([1.5, 0.8])
    x = model_state(dynamics, torch.zeros(5, dtype=F64))
    last = torch.zeros(2, dtype=F64)
    distances = [float(np.hypot(*goal))]
    with torch.no_grad():
        for _ in range(40):
            reference = torch.as_tensor(goal_reference(x.numpy(), goal, 15))
            solution = receding_step(mpc, x[None], reference[None], last[None], backward='none')
            last = solution.controls[0, 0].clamp(*(torch.as_tensor(b) for b in solver._bounds))
            x = dynamics(x, last)
            distances.append(float(np.hypot(*(x[:2].numpy() - goal))))
    assert distances[5] < distances[0] - 0.05          # moving towards it from the first steps
    # reached as mpc_node counts it (it then stops: a car cannot hold a point)
    assert min(distances) < MPC_SCHEMA['goal_tolerance'].default, distances[::5]


def test_unicycle_reference_and_state_are_the_pose():
    solver = RecedingHorizonSolver(MpcSettings(model='unicycle', horizon=8))
    step = solver.solve(np.array([0.0, 0.0, 0.0, 0.3, 0.1]),
                        goal_reference(np.zeros(5), np.array([1.0, 1.0]), 8), None, np.zeros(2))
    assert step.states.shape == (9, 3) and step.controls.shape == (8, 2)
    np.testing.assert_array_equal(step.commands, step.controls)     # Twists already
    assert step.controls[0, 0] > 0 and step.controls[0, 1] > 0      # forward, turning left


def test_car_state_and_commands_convert_between_twist_and_steering():
    car = Bicycle(0.1, wheelbase=0.4).to(F64)
    odometry = torch.tensor([[1.0, 2.0, 0.3, 0.5, 0.25], [0.0, 0.0, 0.0, 0.0, 0.7]], dtype=F64)
    state = model_state(car, odometry, max_steer=0.6)
    torch.testing.assert_close(state[:, :4], odometry[:, :4])
    assert math.isclose(float(state[0, 4]), math.atan(0.25 * 0.4 / 0.5), rel_tol=1e-12)
    assert float(state[1, 4]) == 0.0                                  # at rest: no steering info
    controls = torch.tensor([0.5, -0.3], dtype=F64)
    twist = command_of(car, controls)
    assert math.isclose(float(twist[1]), 0.5 * math.tan(-0.3) / 0.4, rel_tol=1e-12)
    torch.testing.assert_close(control_of(car, twist, 0.6), controls)
    torch.testing.assert_close(command_of(car, controls, steering_angle=True), controls)
    torch.testing.assert_close(control_of(car, controls, 0.6, steering_angle=True), controls)


@pytest.mark.parametrize('steering_angle', [False, True])
def test_car_solver_sends_the_twist_or_the_steering_angle(steering_angle):
    settings = MpcSettings(model='bicycle', horizon=10, wheelbase=0.35, max_steer=0.5,
                           steering_angle=steering_angle)
    solver = RecedingHorizonSolver(settings)
    state = np.zeros(5)
    step = solver.solve(state, goal_reference(state, np.array([0.3, 1.5]), 10), None, np.zeros(2))
    v, steer = step.controls[0]
    assert v > 0 and 0 < steer <= 0.5 + 1e-12                  # turning left, within the limit
    expected = steer if steering_angle else v * math.tan(steer) / 0.35
    np.testing.assert_allclose(step.commands[0], [v, expected], rtol=1e-12)
    # the command sent is the rate term's previous control again
    back = control_of(solver.model, torch.as_tensor(step.commands[0]), 0.5, steering_angle)
    np.testing.assert_allclose(back.numpy(), step.controls[0], rtol=1e-9)


def test_steering_angle_needs_the_car():
    with pytest.raises(ValueError, match='cmd_steering_angle needs model bicycle'):
        MpcSettings.from_params({'cmd_steering_angle': True})
    with pytest.raises(ValueError, match='model'):
        MpcSettings.from_params({'model': 'tricycle'})
    assert MpcSettings.from_params({'model': 'bicycle', 'cmd_steering_angle': True}).steering_angle


def test_navigator_drives_a_unicycle_to_its_goal():
    """navigation's unicycle (mpc_node ``model: unicycle`` with ``navigation.enabled``): planned
    round a post, tracked with the pose-only model; the robot applies each command at once."""
    from diffopt_ros.maps import world_grid
    from diffopt_ros.navigation import Navigator, NavSettings
    from diffopt_ros.sim import World

    world = World.from_dict({'start': [0.6, 0.6, 0.0], 'walls': [{'box': [0, 0, 3, 3]}],
                             'obstacles': [[1.5, 1.5, 0.3]]})
    settings = MpcSettings(horizon=15, max_iterations=5)
    navigator = Navigator(world_grid(world, 0.05), settings, NavSettings(robot='unicycle'))
    assert isinstance(navigator.model, Unicycle)
    plant = Unicycle(settings.dt).to(F64)
    pose, command = torch.tensor([0.6, 0.6, 0.0], dtype=F64), np.zeros(2)
    assert navigator.set_goal(pose[:2].numpy(), [2.4, 2.4]).reachable
    clearance = []
    for tick in range(120):
        step = navigator.step(np.concatenate([pose.numpy(), command]), tick * settings.dt)
        if step.mode == 'goal reached':
            break
        assert step.mode == 'tracking' and step.states.shape == (16, 3)
        command = step.command
        pose = plant(pose, torch.as_tensor(command))
        clearance.append(world.clearance(pose[:2].numpy()))
    assert step.mode == 'goal reached', pose
    assert min(clearance) > NavSettings().radius
