"""Simulator core: true dynamics, lidar geometry, world files, odometry noise, seeding, CLI."""
import math

import numpy as np
import pytest

from diffopt_ros.paths import config_path
from diffopt_ros.sim import (
    CollisionError,
    RobotParams,
    SensorParams,
    Simulator,
    WheelOdometry,
    World,
    WorldError,
    integrate,
)
from diffopt_ros.sim import cli as sim_cli
from diffopt_ros.sim.config import read_sim_params, robot_params, sensor_params

NO_LIMITS = dict(max_accel_v=math.inf, max_accel_omega=math.inf, drag_v=0.0, drag_omega=0.0)
QUIET = SensorParams(odom_noise_v=0.0, odom_noise_omega=0.0, odom_noise_omega_from_v=0.0,
                     lidar_noise=0.0)
OPEN = World(walls=[[-50, -50, 50, -50], [50, -50, 50, 50], [50, 50, -50, 50], [-50, 50, -50, -50]])


def room(**kwargs):
    """A 4 m x 4 m square room, corners (0, 0) and (4, 4)."""
    return World(walls=[[0, 0, 4, 0], [4, 0, 4, 4], [4, 4, 0, 4], [0, 4, 0, 0]], **kwargs)


def run(sim, command, duration, dt=0.01):
    for _ in range(int(round(duration / dt))):
        sim.step(command, dt)
    return sim.true_state


def lag(t, gain, command, tau):
    """Speed and its integral of a first-order lag from rest, no limits."""
    speed = gain * command * (1 - math.exp(-t / tau))
    covered = gain * command * (t - tau * (1 - math.exp(-t / tau)))
    return speed, covered


# ---------------------------------------------------------------- kinematics and dynamics
def test_straight_line_follows_gain_and_lag():
    robot = RobotParams(gain_v=0.8, tau_v=0.25, **NO_LIMITS)
    sim = Simulator(OPEN, robot, QUIET, start_pose=[0, 0, 0])
    state = run(sim, (0.5, 0.0), 2.0)
    speed, covered = lag(2.0, 0.8, 0.5, 0.25)
    np.testing.assert_allclose(state, [covered, 0, 0, speed, 0], atol=1e-9)
    assert sim.distance == pytest.approx(covered)


def test_straight_line_along_heading():
    robot = RobotParams(**NO_LIMITS)
    sim = Simulator(OPEN, robot, QUIET, start_pose=[1.0, -2.0, 2.0])
    state = run(sim, (0.4, 0.0), 3.0)
    _, covered = lag(3.0, robot.gain_v, 0.4, robot.tau_v)
    np.testing.assert_allclose(state[:3], [1 + covered * math.cos(2.0),
                                           -2 + covered * math.sin(2.0), 2.0], atol=1e-9)


def test_turn_in_place_follows_gain_and_lag():
    robot = RobotParams(gain_omega=0.7, tau_omega=0.2, **NO_LIMITS)
    sim = Simulator(OPEN, robot, QUIET, start_pose=[0, 0, 0])
    state = run(sim, (0.0, 1.0), 1.5)
    rate, turned = lag(1.5, 0.7, 1.0, 0.2)
    np.testing.assert_allclose(state, [0, 0, turned, 0, rate], atol=1e-9)


def test_gain_and_lag_change_the_response():
    def speed_after(t, **params):
        sim = Simulator(OPEN, RobotParams(**{**NO_LIMITS, **params}), QUIET, start_pose=[0, 0, 0])
        return run(sim, (1.0, 0.0), t)[3]

    assert speed_after(3.0, gain_v=0.5, tau_v=0.1) == pytest.approx(0.5, abs=1e-9)
    assert speed_after(3.0, gain_v=1.2, tau_v=0.1) == pytest.approx(1.2, abs=1e-9)
    # one time constant reaches 1 - 1/e of the steady speed
    assert speed_after(0.3, gain_v=1.0, tau_v=0.3) == pytest.approx(1 - math.exp(-1), abs=1e-9)
    assert speed_after(0.3, gain_v=1.0, tau_v=0.05) > 0.99
    # drag lowers the steady speed to gain u / (1 + tau drag)
    assert speed_after(5.0, gain_v=1.0, tau_v=0.25, drag_v=0.4) == pytest.approx(1 / 1.1, abs=1e-9)


def test_acceleration_limits_ramp_linearly():
    robot = RobotParams(gain_v=1.0, tau_v=0.05, max_accel_v=1.0, gain_omega=1.0, tau_omega=0.05,
                        max_accel_omega=2.0)
    sim = Simulator(OPEN, robot, QUIET, start_pose=[0, 0, 0])
    state = run(sim, (2.0, 3.0), 0.5)
    np.testing.assert_allclose(state[3:], [0.5, 1.0], atol=1e-12)   # max_accel * t
    assert sim.distance == pytest.approx(0.5 * 1.0 * 0.5 ** 2, abs=1e-12)  # a t^2 / 2
    # braking is limited too
    run(sim, (2.0, 0.0), 3.0)
    before = sim.true_state[3]
    after = run(sim, (0.0, 0.0), 0.4)[3]
    assert before == pytest.approx(2.0, abs=1e-6)
    assert after == pytest.approx(before - 0.4, abs=1e-9)


def euler_reference(state, command, duration, params, h=1e-5):
    """The contract equations integrated by forward Euler with a tiny step."""
    x, y, yaw, v, omega = state
    for _ in range(int(round(duration / h))):
        dv = np.clip((params.gain_v * command[0] - v) / params.tau_v - params.drag_v * v,
                     -params.max_accel_v, params.max_accel_v)
        dw = np.clip((params.gain_omega * command[1] - omega) / params.tau_omega
                     - params.drag_omega * omega, -params.max_accel_omega, params.max_accel_omega)
        x, y, yaw = x + h * v * math.cos(yaw), y + h * v * math.sin(yaw), yaw + h * omega
        v, omega = v + h * dv, omega + h * dw
    return np.array([x, y, yaw, v, omega])


@pytest.mark.parametrize('params, state, command', [
    (RobotParams(gain_v=0.8, gain_omega=0.7, tau_v=0.25, tau_omega=0.2, drag_v=0.3,
                 drag_omega=0.5, max_accel_v=1.0, max_accel_omega=2.0),
     [0.3, -0.2, 0.5, 0.2, -0.4], [1.0, 1.5]),
    (RobotParams(gain_v=1.3, gain_omega=0.6, tau_v=0.1, tau_omega=0.4, drag_v=0.0,
                 drag_omega=1.0, max_accel_v=5.0, max_accel_omega=0.5),
     [0.0, 0.0, -2.0, 1.0, 0.8], [-0.5, -1.0]),
])
def test_integrate_matches_the_contract_equations(params, state, command):
    new, distance, turned = integrate(state, command, 0.2, params)
    expected = euler_reference(state, command, 0.2, params)
    np.testing.assert_allclose(new, expected, atol=2e-5)
    assert turned == pytest.approx(new[2] - state[2])
    assert distance == pytest.approx(math.hypot(new[0] - state[0], new[1] - state[1]), rel=1e-2)


def test_speeds_do_not_depend_on_the_substep():
    params = RobotParams(drag_v=0.2, max_accel_v=1.0)
    coarse, _, _ = integrate([0, 0, 0, 0.1, 0], [1.0, 0.5], 0.5, params, max_substep=0.5)
    fine, _, _ = integrate([0, 0, 0, 0.1, 0], [1.0, 0.5], 0.5, params, max_substep=0.001)
    np.testing.assert_allclose(coarse[3:], fine[3:], atol=1e-12)


def test_robot_params_are_checked():
    with pytest.raises(ValueError, match='tau_v'):
        RobotParams(tau_v=0.0)
    with pytest.raises(ValueError, match='drag_omega'):
        RobotParams(drag_omega=-1.0)
    with pytest.raises(ValueError, match='gain_v'):
        RobotParams(gain_v=math.nan)


# ---------------------------------------------------------------- collisions
def test_robot_stops_at_a_wall_and_can_back_away():
    sim = Simulator(room(), RobotParams(radius=0.2), QUIET, start_pose=[2.0, 2.0, 0.0])
    xs = [run(sim, (1.0, 0.0), 0.05)[0] for _ in range(100)]
    assert max(xs) <= 4.0 - 0.2 + 1e-9
    assert xs[-1] > 3.7                      # it got to the wall ...
    assert sim.true_state[3] == 0.0          # ... and stands still
    assert sim.collisions > 0
    yaw = run(sim, (0.0, 1.0), 1.0)[2]       # turning in place is allowed
    assert abs(yaw) > 0.3
    run(sim, (0.0, 0.0), 1.0)
    sim.reset(start_pose=[3.75, 2.0, math.pi])
    assert run(sim, (0.5, 0.0), 1.0)[0] < 3.6  # driving away works


def test_start_inside_an_obstacle_is_refused():
    with pytest.raises(CollisionError, match='radius'):
        Simulator(room(obstacles=[[2, 2, 0.5]]), start_pose=[2.1, 2.0, 0.0])


# ---------------------------------------------------------------- lidar
def test_raycast_in_a_square_room():
    world = room()
    angles = np.array([0.0, math.pi / 2, math.pi, -math.pi / 2, math.pi / 4, math.atan2(2, 3)])
    ranges = world.raycast([1.0, 2.0], angles)
    expected = [3.0, 2.0, 1.0, 2.0, 2 * math.sqrt(2), math.sqrt(13)]  # last: corner (4, 4)
    np.testing.assert_allclose(ranges, expected, atol=1e-12)


def test_raycast_round_obstacle_and_landmark():
    world = room(obstacles=[[3.0, 2.0, 0.5]], landmarks=[[1.0, 3.5]], landmark_radius=0.1)
    ranges = world.raycast([1.0, 2.0], [0.0, math.pi / 2, math.atan2(0.3, 2.0)])
    # tangent-ish beam to the disc: solve |p + t d - c| = r by hand
    d = np.array([2.0, 0.3]) / math.hypot(2.0, 0.3)
    f = np.array([1.0, 2.0]) - [3.0, 2.0]
    b, c = d @ f, f @ f - 0.25
    np.testing.assert_allclose(ranges, [1.5, 1.4, -b - math.sqrt(b * b - c)], atol=1e-12)


def test_raycast_max_range_and_batches():
    world = room()
    assert np.isinf(world.raycast([1.0, 2.0], [0.0], max_range=2.5)).all()
    origins = np.array([[1.0, 2.0], [3.0, 1.0], [0.5, 0.5]])
    angles = np.linspace(-math.pi, math.pi, 7)
    batch = world.raycast(origins, np.broadcast_to(angles, (3, 7)))
    for origin, row in zip(origins, batch):
        np.testing.assert_allclose(row, world.raycast(origin, angles), atol=1e-12)


def test_raycast_has_no_leaks_and_float32_agrees():
    """Rays from anywhere inside the closed loop world always hit something (no ray slips
    through a polyline joint, even at exact vertex directions), and float32 ~ float64."""
    world = World.load('loop')
    rng = np.random.default_rng(1)
    origins = rng.uniform([0.3, 0.3], [19.7, 2.7], size=(20, 2))   # the south corridor
    vertex = world.walls[:, :2]
    for origin in origins:
        through_vertices = np.arctan2(vertex[:, 1] - origin[1], vertex[:, 0] - origin[0])
        angles = np.concatenate([np.linspace(-math.pi, math.pi, 720), through_vertices])
        ranges = world.raycast(origin, angles)
        assert np.isfinite(ranges).all()
        assert (ranges < 25).all()
        # (rays exactly through a corner may graze it in one precision and not the other)
        ranges32 = world.raycast(origin, angles[:720], dtype=np.float32)
        assert ranges32.dtype == np.float32
        np.testing.assert_allclose(ranges32, ranges[:720], atol=2e-3)   # << 1 cm lidar noise


def test_scan_uses_the_robot_pose_and_beam_layout():
    sensors = SensorParams(lidar_beams=4, lidar_noise=0.0, lidar_range_max=3.5)
    sim = Simulator(room(), sensors=sensors, start_pose=[1.0, 2.0, math.pi / 2])
    np.testing.assert_allclose(sensors.lidar_angles(), [-math.pi, -math.pi / 2, 0, math.pi / 2])
    # beams at map angles -pi/2, 0, pi/2, pi -> walls at 2, 3, 2, 1 m
    np.testing.assert_allclose(sim.scan(), [2.0, 3.0, 2.0, 1.0], atol=1e-5)  # float32 raycast
    sim.sensors = SensorParams(lidar_beams=4, lidar_noise=0.0, lidar_range_max=2.5,
                               lidar_range_min=1.5)
    scan = sim.scan()
    assert scan[1] == math.inf and scan[3] == -math.inf


def test_lidar_noise_has_the_configured_spread():
    sensors = SensorParams(lidar_beams=360, lidar_noise=0.05)
    sim = Simulator(room(), sensors=sensors, start_pose=[2.0, 2.0, 0.0])
    exact = room().raycast([2.0, 2.0], sensors.lidar_angles())
    errors = np.concatenate([sim.scan() - exact for _ in range(20)])
    assert errors.std() == pytest.approx(0.05, rel=0.05)
    assert abs(errors.mean()) < 0.005


# ---------------------------------------------------------------- odometry
def test_noise_free_odometry_is_the_true_motion_in_the_odom_frame():
    sim = Simulator(OPEN, sensors=QUIET, start_pose=[3.0, 1.0, 1.0])
    for command in [(0.5, 0.3), (0.2, -0.6), (0.0, 1.0)]:
        run(sim, command, 2.0)
    true, odom = sim.true_state, sim.odometry
    mapped = sim_cli.odom_in_map(sim.start_pose, odom[None, :3])[0]
    np.testing.assert_allclose(mapped[:2], true[:2], atol=1e-6)
    assert math.remainder(mapped[2] - true[2], 2 * math.pi) == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(odom[3:], true[3:], atol=1e-12)
    np.testing.assert_allclose(sim.odometry_covariance, 0.0)


def test_odometry_scale_errors():
    sensors = SensorParams(odom_scale_v=1.1, odom_scale_omega=0.9, odom_noise_v=0.0,
                           odom_noise_omega=0.0, odom_noise_omega_from_v=0.0)
    sim = Simulator(OPEN, sensors=sensors, start_pose=[0, 0, 0])
    true = run(sim, (0.5, 0.0), 4.0)
    assert sim.odometry[0] == pytest.approx(1.1 * true[0])
    assert sim.odometry[3] == pytest.approx(1.1 * true[3])
    true = run(sim, (0.0, 0.5), 2.0)
    assert sim.odometry[4] == pytest.approx(0.9 * true[4])


def test_odometry_drift_matches_its_propagated_covariance():
    """Empirical covariance of many noisy odometry runs = the covariance the model reports."""
    params = SensorParams(odom_noise_v=0.05, odom_noise_omega=0.1, odom_noise_omega_from_v=0.05)
    increments = [(0.1, 0.0)] * 20 + [(0.0, 0.1)] * 10 + [(0.1, 0.02)] * 20  # (m, rad) per step
    rng = np.random.default_rng(0)
    finals = []
    for _ in range(1500):
        odom = WheelOdometry(params, rng)
        for ds, dyaw in increments:
            odom.update(ds, dyaw, 0.0, 0.0)
        finals.append(odom.pose)
    noise_free = WheelOdometry(SensorParams(odom_noise_v=0, odom_noise_omega=0,
                                            odom_noise_omega_from_v=0), rng)
    for ds, dyaw in increments:
        noise_free.update(ds, dyaw, 0.0, 0.0)
    errors = np.array(finals) - noise_free.pose
    empirical = np.cov(errors.T)
    np.testing.assert_allclose(empirical, odom.covariance, rtol=0.2, atol=2e-4)
    # the drift does not depend on the step size: the same motion in 5x fewer steps
    coarse = WheelOdometry(params, rng)
    for ds, dyaw in [(0.5, 0.0)] * 4 + [(0.0, 0.5)] * 2 + [(0.5, 0.1)] * 4:
        coarse.update(ds, dyaw, 0.0, 0.0)
    np.testing.assert_allclose(coarse.covariance, odom.covariance, rtol=0.1, atol=1e-4)


# ---------------------------------------------------------------- determinism
def test_same_seed_same_run_other_seed_other_run():
    world = World.load('loop')
    commands = np.tile([[0.5, 0.2]], (200, 1))

    def rollout(seed, scan_every):
        return Simulator(world, seed=seed).rollout(commands, 0.01, scan_every)

    a, b, c = rollout(7, 10), rollout(7, 10), rollout(8, 10)
    np.testing.assert_array_equal(a.odometry, b.odometry)
    np.testing.assert_array_equal(a.scans, b.scans)
    assert not np.array_equal(a.odometry, c.odometry)
    assert not np.array_equal(a.scans, c.scans)
    np.testing.assert_array_equal(a.true_states, c.true_states)   # noise never moves the robot
    # taking scans does not change the odometry noise stream
    np.testing.assert_array_equal(rollout(7, 0).odometry, a.odometry)
    assert a.scans.shape == (21, 360) and a.scan_steps.tolist() == list(range(0, 201, 10))


# ---------------------------------------------------------------- world files
@pytest.mark.parametrize('name', ['loop', 'corridors'])
def test_shipped_worlds_route_is_collision_free(name):
    world = World.load(name)
    assert len(world.route) >= 3
    sim = Simulator(world, sensors=QUIET)
    script = sim_cli.route_script(world.start, world.route, sim.robot)
    rollout = sim.rollout(sim_cli.expand_script(script, 0.02), 0.02)
    assert rollout.collisions == 0
    np.testing.assert_allclose(rollout.true_states[-1, :2], world.route[-1], atol=0.1)
    assert world.clearance(world.start[:2]) > 0.5


def test_loop_world_is_a_loop_with_structure():
    world = World.load('loop')
    assert np.linalg.norm(world.route[-1] - world.start[:2]) < 1e-9   # the route closes
    assert len(world.walls) > 40 and len(world.discs) > 10


BAD_WORLDS = [
    ('walls:\n  - [0, 0, 1, 0]\n  - [0, 0, 1]\n', 3, 'walls[1]'),
    ('walls:\n  - [0, 0, 1, 0]\nobstacles:\n  - [1, 1, -0.5]\n', 4, 'obstacles[0]'),
    ('walls:\n  - [0, 0, 1, 0]\nwals: []\n', 3, 'wals'),
    ('walls:\n  - {box: [2, 2, 1, 3]}\n', 2, 'walls[0].box'),
    ('walls:\n  - polyline: [[0, 0], [1, x]]\n', 2, 'walls[0].polyline[1]'),
    ('walls:\n  - [0, 0, 1, 0]\nstart: [1, 2]\n', 3, 'start'),
    ('walls:\n  - [0, 0, 1, 0]\nlandmark_radius: -1\n', 3, 'landmark_radius'),
    ('walls: 5\n', 1, 'walls'),
    ('name: empty\n', 1, 'no walls'),
]


@pytest.mark.parametrize('text, line, key', BAD_WORLDS)
def test_world_file_errors_name_file_line_and_key(tmp_path, text, line, key):
    path = tmp_path / 'bad_world.yaml'
    path.write_text(text)
    with pytest.raises(WorldError) as info:
        World.from_yaml(path)
    message = str(info.value)
    assert f'{path}:{line}:' in message, message
    assert key in message, message


def test_world_file_not_yaml_or_missing(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('walls: [0, 0\n')
    with pytest.raises(WorldError, match='broken.yaml: not valid YAML'):
        World.from_yaml(path)
    with pytest.raises(WorldError, match='no_such_world'):
        World.load('no_such_world')


# ---------------------------------------------------------------- config and CLI
def test_sim_yaml_gives_the_contract_robot():
    values = read_sim_params(config_path('sim.yaml'))
    assert robot_params(values) == RobotParams(gain_v=0.8, gain_omega=0.7, tau_v=0.25,
                                               tau_omega=0.2, max_accel_v=2.0,
                                               max_accel_omega=4.0)
    assert sensor_params(values).lidar_beams == 360
    with pytest.raises(ValueError, match='robot.gain_x'):
        robot_params({'robot.gain_x': 1.0})


def test_cli_drives_the_loop_and_plots(tmp_path, capsys):
    plot = tmp_path / 'sim.png'
    assert sim_cli.main(['--world', 'loop', '--dt', '0.02', '--scan-rate', '2',
                         '--plot', str(plot)]) == 0
    out = capsys.readouterr().out
    assert 'distance travelled: 52.0' in out and 'steps ending at an obstacle: 0' in out
    assert 'odometry drift' in out and 'real time' in out
    assert plot.stat().st_size > 10_000


def test_cli_script_file_and_errors(tmp_path, capsys):
    script = tmp_path / 'script.yaml'
    script.write_text('- [1.0, 0.5, 0.0]\n- [0.5, 0.0, 1.0]\n')
    assert sim_cli.main(['--script', str(script), '--scan-rate', '0']) == 0
    assert '150 steps' in capsys.readouterr().out
    script.write_text('- [1.0, 0.5]\n')
    assert sim_cli.main(['--script', str(script)]) == 2
    assert 'row 0' in capsys.readouterr().err   # errors go to stderr
