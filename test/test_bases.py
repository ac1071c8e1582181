"""Robot bases: the Ackermann model, the simulator's car, and identifying the car from a run."""
import math

import numpy as np
import pytest
import torch

from diffopt_ros.learn.api import learn_dynamics
from diffopt_ros.learn.datasets import RunData, Series, save_bag
from diffopt_ros.mpc import MPC, DiffDriveLag, TrackingCost, Unicycle, autodiff_jacobians, rollout
from diffopt_ros.mpc.bases import Bicycle, TwistBicycle, make_model
from diffopt_ros.mpc.solve_blocks import solve_scope
from diffopt_ros.sim import RobotParams, Simulator, World

D = torch.float64
OPEN = World.from_dict({'start': [0.0, 0.0, 0.0], 'walls': [{'box': [-100, -100, 100, 100]}]})
CAR = RobotParams(kind='ackermann', gain_v=0.85, tau_v=0.3, wheelbase=0.35, max_steer=0.6,
                  max_steer_rate=2.0, tau_steer=0.12)


def test_make_model_by_name():
    assert isinstance(make_model('diff_drive_lag', 0.1, {'gain_v': 0.8}), DiffDriveLag)
    assert isinstance(make_model('unicycle', 0.1), Unicycle)
    car = make_model('bicycle', 0.1, {'wheelbase': 0.5, 'max_steer_rate': 1.0, 'gain_omega': 3.0})
    assert isinstance(car, Bicycle) and car.parameter_values()['wheelbase'] == pytest.approx(0.5)
    with pytest.raises(ValueError, match='unknown model .*bicycle'):
        make_model('tank', 0.1)


def test_bicycle_kinematics_and_steering_rate_bound():
    car = Bicycle(dt=0.05, wheelbase=0.4, gain_v=1.0, tau_v=0.01, tau_steer=0.01, max_steer_rate=1.0).to(D)
    x = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.0]], dtype=D)
    steps = []
    for _ in range(200):
        x = car(x, torch.tensor([[0.5, 0.3]], dtype=D))
        steps.append(x)
    states = torch.cat(steps)
    rate = states[:, 4].diff().abs().max() / car.dt
    assert rate <= 1.0 + 1e-12, 'steering moves at most max_steer_rate'
    yaw_rate = states[-50:, 2].diff() / car.dt
    torch.testing.assert_close(yaw_rate, torch.full_like(yaw_rate, 0.5 * math.tan(0.3) / 0.4))
    # closed-form jacobians agree with autodiff, in all three steering regimes (lag, ramp then
    # lag, ramp throughout)
    x = torch.tensor([[0.3, -0.2, 0.4, 0.5, 0.1]] * 3, dtype=D)
    u = torch.tensor([[0.4, 0.105], [0.6, 0.1 + 0.01 + 0.02], [-0.1, -0.3]], dtype=D)
    A, B = car.jacobians(x, u)
    A_auto, B_auto = autodiff_jacobians(car.forward, x, u)
    torch.testing.assert_close(A, A_auto, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B, B_auto, rtol=1e-12, atol=1e-12)


def test_bicycle_rollout_matches_stepping():
    """The fused roll-out = ``T`` steps: values and gradients (initial state, controls, parameters)."""
    car = Bicycle(dt=0.1, wheelbase=0.4, gain_v=0.9, tau_v=0.2, tau_steer=0.1, max_steer_rate=1.5).to(D)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g, dtype=D).requires_grad_()
    u = torch.randn(3, 9, 2, generator=g, dtype=D).requires_grad_()
    fused, stepped = car.rollout_fn()(x, u), rollout(car.stepper(), x, u)
    torch.testing.assert_close(fused, stepped, atol=1e-12, rtol=1e-12)
    w = torch.randn(stepped.shape, generator=g, dtype=D)
    leaves = [x, u, *car.parameters()]
    for a, b in zip(*[torch.autograd.grad((s * w).sum(), leaves) for s in (fused, stepped)]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_bicycle_rollout_steps_without_ramp_equal_the_lag():
    """The roll-out's shortcut for steering steps whose gaps are all within ``rate tau`` (no ramp;
    one exactly at it) between ramping steps: the same angles as :func:`rate_limited_lag` step by
    step, bitwise, and the same gradients."""
    car = Bicycle(dt=0.1, wheelbase=0.4, gain_v=0.9, tau_v=0.2, tau_steer=0.1, max_steer_rate=1.5).to(D)
    bound = float(car.max_steer_rate * car.tau_steer.detach())
    x = torch.tensor([[0.0, 0.0, 0.1, 0.5, 0.0], [1.0, -1.0, -0.2, 0.3, 0.0]], dtype=D, requires_grad=True)
    steer = torch.tensor([[bound, 0.1, 0.12, 1.0, 0.9, 0.95, 0.9, -0.5, -0.45, -0.4],
                          [0.05, 0.1, 0.1, 0.2, 0.25, 0.25, 0.3, 0.3, 0.3, 0.35]], dtype=D)
    u = torch.stack((torch.full_like(steer, 0.4), steer), -1).requires_grad_()
    fused, stepped = car.rollout_fn()(x, u), rollout(car.stepper(), x, u)
    gaps = (u[..., 1] - stepped[:, :-1, 4]).abs().detach()
    within = (gaps <= bound).all(0)
    assert gaps[0, 0] == bound and bool(within.any()) and not bool(within.all())
    assert torch.equal(fused[..., 4], stepped[..., 4])
    torch.testing.assert_close(fused, stepped, atol=1e-12, rtol=1e-12)
    w = torch.randn(stepped.shape, generator=torch.Generator().manual_seed(1), dtype=D)
    leaves = [x, u, *car.parameters()]
    for a, b in zip(*[torch.autograd.grad((s * w).sum(), leaves) for s in (fused, stepped)]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)



def test_bicycle_rollout_without_autograd_is_the_tensor_rollout_bitwise():
    """In inference mode (the MPC's solve) the car's steering recursion runs on Python floats and
    numpy arrays: the same states bit for bit as the tensor recursion, with steps within
    ``rate tau`` and ramping ones (one sample ramping while the others do not), at batch 4 and 1,
    and with a NaN command (every later angle NaN in both)."""
    car = Bicycle(dt=0.1, wheelbase=0.3, gain_v=0.9, tau_v=0.2, tau_steer=0.15, max_steer_rate=2.0).to(D)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, generator=g, dtype=D) * 0.1
    u = torch.randn(4, 20, 2, generator=g, dtype=D) * torch.tensor([0.5, 0.05], dtype=D)
    u[1, 3:6, 1] = torch.tensor([0.6, -0.6, 0.6], dtype=D)             # ramps in one sample only
    roll = car.rollout_fn()
    for xs, us in ((x, u), (x[1:2], u[1:2]), (x[2:3], u[2:3])):
        tensor_path = roll(xs, us)
        with torch.inference_mode():
            array_path = roll(xs, us)
        assert torch.equal(array_path, tensor_path)
    u_nan = u[:2].clone()
    u_nan[0, 5, 1] = float('nan')
    with torch.inference_mode():
        array_path = roll(x[:2], u_nan)
    torch.testing.assert_close(array_path, roll(x[:2], u_nan), rtol=0, atol=0, equal_nan=True)
    assert bool(array_path[0, 6:, 4].isnan().all()) and not bool(array_path[1].isnan().any())
    states = roll(x, u)
    ramping = (u[..., 1] - states[:, :-1, 4]).abs() > float(car.max_steer_rate * car.tau_steer.detach())
    assert bool(ramping[1].any()) and not bool(ramping[[0, 2, 3]].any())

def test_bicycle_jacobians_in_a_solve_scope_are_those_formed_per_call():
    """Within a solve's scope the speed lag's constants of the Jacobians are formed once: ``A``
    and ``B`` equal, bit for bit, those formed on every call, and follow a time constant changed
    between solves."""
    car = Bicycle(dt=0.1, wheelbase=0.3, gain_v=0.9, tau_v=0.2, tau_steer=0.15, max_steer_rate=2.0).to(D)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 20, 5, generator=g, dtype=D) * 0.3
    u = torch.randn(3, 20, 2, generator=g, dtype=D) * 0.3
    for tau_v in (0.2, 0.35):
        car.tau_v = tau_v
        want = car.jacobians(x, u)
        with torch.inference_mode(), solve_scope():
            for _ in range(2):
                got = car.jacobians(x, u)
                assert all(torch.equal(a.detach(), b) for a, b in zip(want, got))


def test_mpc_drives_the_car_to_a_goal():
    car = Bicycle(dt=0.1, wheelbase=0.35).to(D)
    cost = TrackingCost([10., 10., 0.0, 0.1, 0.1], [0.1, 0.5], terminal_scale=5.,
                        angle_indices=car.angle_indices).to(D)
    mpc = MPC(car, cost, 30, u_lower=[-0.3, -0.6], u_upper=[1.0, 0.6], max_iterations=50, backward='none')
    sol = mpc(torch.zeros(1, 5, dtype=D), torch.tensor([[2.0, 1.0, 0.0, 0.0, 0.0]], dtype=D))
    assert float((sol.states[0, -1, :2] - torch.tensor([2.0, 1.0], dtype=D)).norm()) < 0.15
    assert sol.controls[..., 1].abs().max() <= 0.6


def test_simulated_car_turns_as_its_twist_says_and_saturates():
    sim = Simulator(OPEN, robot=CAR, start_pose=[0.0, 0.0, 0.0])
    for _ in range(300):
        sim.step((0.5, 0.4), 0.01)
    state = sim.true_state
    assert state[3] == pytest.approx(0.85 * 0.5, rel=1e-3)
    # v tan(steer) / L with the steering angle the base derives from the Twist
    assert state[4] == pytest.approx(0.85 * 0.5 * 0.4 / 0.5, rel=1e-3)
    for _ in range(300):
        sim.step((0.5, 5.0), 0.01)                                      # beyond the steering limit
    assert sim.steer == pytest.approx(0.6)
    assert sim.true_state[4] == pytest.approx(0.85 * 0.5 * math.tan(0.6) / 0.35, rel=1e-3)
    with pytest.raises(ValueError, match='kind'):
        RobotParams(kind='tank')


def _car_run(seed: int, seconds: float = 60.0, dt: float = 0.02) -> RunData:
    rng = np.random.default_rng(seed)
    hold = int(round(1.0 / dt))
    blocks = int(seconds)
    commands = np.repeat(np.column_stack([rng.uniform(0.2, 0.8, blocks), rng.uniform(-1.0, 1.0, blocks)]),
                         hold, axis=0)
    sim = Simulator(OPEN, robot=CAR, seed=seed, start_pose=[0.0, 0.0, 0.0])
    roll = sim.rollout(commands, dt)
    assert roll.collisions == 0
    return RunData(name=f'car{seed}', source='<test>', odom=Series(roll.time, roll.odometry),
                   ground_truth=Series(roll.time, roll.true_states),
                   commands=Series(roll.time[:-1], commands))


def test_learn_dynamics_identifies_the_car(tmp_path):
    params = tmp_path / 'mpc.yaml'
    params.write_text('mpc_node:\n  ros__parameters:\n    model.gain_v: 1.0\n    model.tau_v: 0.1\n'
                      '    model.tau_steer: 0.3\n    model.wheelbase: 0.35\n    model.max_steer_rate: 2.0\n'
                      '    bounds.max_steer: 0.6\n')
    # one run from a rosbag2 folder as the recorder writes it, one in memory
    bag = save_bag(_car_run(0), tmp_path / 'runs')
    result = learn_dynamics([bag, _car_run(1)], tmp_path / 'out', model='bicycle', params_file=params,
                            progress=False, plots=False, dt=0.1, val_fraction=0.0)
    truth = {'model.gain_v': CAR.gain_v, 'model.tau_v': CAR.tau_v, 'model.tau_steer': CAR.tau_steer}
    for key, value in truth.items():
        assert result.params[key] == pytest.approx(value, rel=0.05), (key, result.params)
    assert result.params['model.wheelbase'] == pytest.approx(0.35)
    with pytest.raises(ValueError, match='bicycle'):
        learn_dynamics([_car_run(0)], tmp_path / 'e2e', model='bicycle', method='e2e', params_file=params)
    assert TwistBicycle(Bicycle()).n_x == 5
