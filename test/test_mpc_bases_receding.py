"""The robot bases of mpc_node's receding-horizon solve: each ``model`` drives towards a goal
through :func:`~diffopt_ros.mpc.receding.receding_step`, and a car's commands are its Twist or its
steering angle (``cmd_steering_angle``)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from diffopt_ros.mpc import shift_one_step
from diffopt_ros.mpc.bases import Bicycle, command_of, control_of, model_state, seed_controls
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


def _car_closed_loop(goal, ticks: int, horizon: int = 15, **settings):
    """The car from rest at the origin facing +x, driven as mpc_node does: each solve warm-started
    from the last plan shifted one step, its first control applied by the model. Returns the
    distances to ``goal`` after each tick (until within the node's goal tolerance)."""
    solver = RecedingHorizonSolver(MpcSettings(model='bicycle', horizon=horizon, **settings))
    mpc, car = solver.mpc, solver.model
    goal, tolerance = np.asarray(goal, float), MPC_SCHEMA['goal_tolerance'].default
    x, last, warm = torch.zeros(5, dtype=F64), torch.zeros(2, dtype=F64), None
    distances = []
    with torch.no_grad():
        for _ in range(ticks):
            reference = torch.as_tensor(goal_reference(x.numpy(), goal, horizon))
            solution = receding_step(mpc, x[None], reference[None], last[None], warm, backward='none')
            warm = shift_one_step(solution.controls)
            last = solution.controls[0, 0].clamp(*(torch.as_tensor(b) for b in solver._bounds))
            x = car(x, last)
            distances.append(float(np.hypot(*(x[:2].numpy() - goal))))
            if distances[-1] < tolerance:
                break
    return distances


@pytest.mark.parametrize('goal, ticks', [((0.0, 2.0), 50), ((0.0, -2.0), 50), ((-1.4, 1.4), 130)])
def test_car_from_rest_drives_off_to_a_goal_to_the_side_or_behind(goal, ticks):
    """At rest the steering moves nothing, so zero controls are a stationary point of iLQR: a goal
    at 90 degrees left the car standing. It drives off (an arc; at 135 degrees, with the default
    reverse speed bound, backing up then turning) and reaches the goal."""
    distances = _car_closed_loop(goal, ticks)
    _assert_drives_to(distances)


def test_car_without_reverse_turns_round_to_a_goal_behind():
    """Forward only (``bounds.v_min`` 0), goal at 135 degrees: standing is a stationary point and
    every forward start moves away first; with a horizon long enough to come round (3 s) the
    forward arc is the cheaper plan and the car turns round to the goal."""
    _assert_drives_to(_car_closed_loop((-1.4, 1.4), 60, horizon=30, v_min=0.0))


def _assert_drives_to(distances):
    assert min(distances[:20]) < distances[0] - 0.1          # drives off, not standing at 2 m
    assert min(distances) < MPC_SCHEMA['goal_tolerance'].default, distances[::10]


def test_car_seeds_follow_the_bounds_and_other_models_have_none():
    lower = torch.tensor([-0.2, -0.5], dtype=F64).expand(1, 4, 2)
    upper = torch.tensor([0.8, 0.5], dtype=F64).expand(1, 4, 2)
    car = Bicycle(0.1).to(F64)
    seeds = torch.stack(seed_controls(car, lower, upper))
    assert seeds.shape == (4, 1, 4, 2)
    assert sorted({float(v) for v in seeds[..., 0].flatten()}) == [-0.1, 0.4]   # half each bound
    assert sorted({float(s) for s in seeds[..., 1].flatten()}) == [-0.5, 0.5]   # full lock
    forward_only = torch.stack(seed_controls(car, lower.clamp_min(0.0), upper))
    assert forward_only.shape[0] == 2 and bool((forward_only[..., 0] > 0).all())
    assert seed_controls(DiffDriveLag(0.1), lower, upper) == []
    assert seed_controls(Unicycle(0.1), lower, upper) == []


def test_car_seeded_solve_keeps_the_implicit_gradient():
    """The seeded solve returns the final solve's solution: the implicit backward gives the
    gradient of the chosen plan w.r.t. the model (wheelbase), as a finite difference of solves."""
    settings = MpcSettings(model='bicycle', horizon=10, tolerance=1e-10, max_iterations=100)
    state = torch.zeros(1, 5, dtype=F64)
    reference = torch.as_tensor(goal_reference(np.zeros(5), np.array([0.0, 1.0]), 10))[None]

    def first_command(wheelbase: float, backward: str):
        mpc = RecedingHorizonSolver(dataclasses.replace(settings, wheelbase=wheelbase)).mpc
        mpc.dynamics.requires_grad_(True)
        solution = receding_step(mpc, state, reference, torch.zeros(1, 2, dtype=F64),
                                 backward=backward)
        return solution.controls[0, 0], mpc.dynamics

    command, car = first_command(0.3, 'implicit')
    assert command[0] > 0.05 and command[1] > 0.1                # driving off, turning left
    (grad,) = torch.autograd.grad(command[0], car.log_wheelbase)     # d/d log L = L d/dL
    h = 1e-5
    fd = float(first_command(0.3 + h, 'none')[0][0] - first_command(0.3 - h, 'none')[0][0]) / (2 * h)
    # the solves stop at a KKT residual ~3e-5 (relative): their differences over 2h are ~1e-3 of it
    assert math.isclose(float(grad), 0.3 * fd, rel_tol=2e-3), (float(grad), 0.3 * fd)


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
