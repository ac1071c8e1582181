"""Simulated runs with known true parameters, for tests, benchmarks and trying learning
without a robot or ROS. Each returns :class:`~diffopt_ros.learn.datasets.RunData` exactly as
:func:`~diffopt_ros.learn.datasets.load_run` would from a recorded bag.

- :func:`excitation_run`: the true robot (``sim.Simulator``) driven by random piecewise-constant
  commands: data for system identification.
- :func:`expert_runs`: the robot tracking random timed paths with the node's MPC using the
  *true* model (and given cost weights): demonstrations for imitation through the MPC.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from diffopt_ros.learn.controller import node_mpc
from diffopt_ros.learn.datasets import Plan, RunData, Series
from diffopt_ros.sim import RobotParams, Simulator, World


def _record(sim: Simulator, t: list, gt: list, odom: list) -> None:
    t.append(sim.time)
    gt.append(sim.true_state)
    odom.append(sim.odometry)


def excitation_run(robot: RobotParams, seconds: float = 20.0, cmd_period: float = 0.05,
                   sim_dt: float = 0.01, state_period: float = 0.02, v_range=(0.0, 0.5),
                   omega_range=(-0.5, 0.5), hold_range=(0.3, 1.0), seed: int = 0,
                   name: str = 'excitation') -> RunData:
    """The true robot under random command levels, each held ``hold_range`` s, sent every
    ``cmd_period`` s, stepped every ``sim_dt`` s; states recorded every ``state_period`` s (as
    sim_node's 50 Hz odometry). The default ranges keep the true robot below its acceleration
    limits, where ``DiffDriveLag`` is exact in the speeds."""
    rng = np.random.default_rng(seed)
    sim = Simulator(World(name='empty'), robot=robot, seed=seed, start_pose=(0.0, 0.0, 0.0))
    per_cmd = int(round(cmd_period / sim_dt))
    per_state = int(round(state_period / sim_dt))
    n_cmd = int(round(seconds / cmd_period))
    steps = 0
    level, left = np.zeros(2), 0.0
    t, gt, odom, t_cmd, cmds = [], [], [], [], []
    for _ in range(n_cmd):
        if left <= 0:
            level = np.array([rng.uniform(*v_range), rng.uniform(*omega_range)])
            left = rng.uniform(*hold_range)
        left -= cmd_period
        t_cmd.append(sim.time)
        cmds.append(level.copy())
        for _ in range(per_cmd):
            if steps % per_state == 0:
                _record(sim, t, gt, odom)
            sim.step(level, sim_dt)
            steps += 1
    _record(sim, t, gt, odom)
    return RunData(name=name, source=f'<simulated {name}>', odom=Series(t, odom),
                   ground_truth=Series(t, gt), commands=Series(t_cmd, cmds))


def random_plan(start, seconds: float, speed: float, rng: np.random.Generator, t0: float = 0.0,
                step: float = 0.1, max_curvature: float = 1.5) -> Plan:
    """A timed path from ``start`` ``(3,)``: a unicycle at ``speed`` (m/s) whose curvature varies
    smoothly (two random sinusoids, at most ``max_curvature`` 1/m), a pose every ``step`` s."""
    t = np.arange(0.0, seconds + 1e-9, step)
    freq, phase = rng.uniform(0.1, 0.5, 2), rng.uniform(0, 2 * math.pi, 2)
    curvature = 0.5 * max_curvature * (np.sin(2 * math.pi * freq[0] * t + phase[0])
                                       + np.sin(2 * math.pi * freq[1] * t + phase[1]))
    yaw = start[2] + np.concatenate([[0.0], np.cumsum(speed * curvature[:-1] * step)])
    mid = yaw + 0.5 * np.concatenate([np.diff(yaw), [0.0]])
    x = start[0] + np.concatenate([[0.0], np.cumsum(speed * step * np.cos(mid[:-1]))])
    y = start[1] + np.concatenate([[0.0], np.cumsum(speed * step * np.sin(mid[:-1]))])
    return Plan(t0, np.stack([x, y, yaw], 1), t0 + t)


def expert_runs(robot: RobotParams, params: dict, episodes: int = 4, seconds: float = 8.0,
                control_period: float = 0.05, sim_dt: float = 0.01, speed: float = 0.35,
                seed: int = 0, name: str = 'expert') -> list[RunData]:
    """Episodes of the true robot tracking random timed paths (:func:`random_plan`, as the
    demo's timed ``/plan`` legs) with the node's MPC built from ``params`` (mpc_node parameters:
    give the *true* ``model.*`` for an expert that knows the robot), solved tightly (as learning
    does) by :func:`~diffopt_ros.mpc.receding.receding_step` with the previous command (as
    mpc_node) and warm-started from the previous plan. Episodes run as one batch."""
    rng = np.random.default_rng(seed)
    from diffopt_ros.mpc.receding import receding_step, timed_reference

    mpc = node_mpc(params, backward='none', max_iterations=50, tolerance=1e-7)
    horizon, dt = mpc.horizon, mpc.dynamics.dt
    sims = [Simulator(World(name='empty'), robot=robot, seed=seed + k,
                      start_pose=(0.0, 0.0, rng.uniform(-math.pi, math.pi))) for k in range(episodes)]
    # Pose stamps off the control ticks: timed_reference's segment yaw jumps at the stamps, and a
    # tick on a stamp would make expert and learner differ by float rounding of the times.
    plans = [random_plan(s.true_state, seconds + horizon * dt, speed, rng, t0=s.time + 0.3 * dt)
             for s in sims]
    logs = [dict(t=[], gt=[], odom=[], t_cmd=[], cmds=[]) for _ in sims]
    warm = torch.zeros(episodes, horizon, 2, dtype=torch.float64)
    last_command = torch.zeros(episodes, 2, dtype=torch.float64)   # mpc_node starts at zero
    per_tick = int(round(control_period / sim_dt))
    for _ in range(int(round(seconds / control_period))):
        states = np.stack([s.true_state for s in sims])
        reference = np.stack([timed_reference(states[k], plans[k].poses, plans[k].stamps, sim.time,
                                              horizon, dt) for k, sim in enumerate(sims)])
        with torch.no_grad():
            solution = receding_step(mpc, torch.as_tensor(states), torch.as_tensor(reference),
                                     last_command, warm)
        warm = torch.cat((solution.controls[:, 1:], solution.controls[:, -1:]), 1)
        last_command = solution.controls[:, 0]
        commands = last_command.numpy()
        for k, sim in enumerate(sims):
            logs[k]['t_cmd'].append(sim.time)
            logs[k]['cmds'].append(commands[k])
            for _ in range(per_tick):
                _record(sim, logs[k]['t'], logs[k]['gt'], logs[k]['odom'])
                sim.step(commands[k], sim_dt)
    runs = []
    for k, (sim, log) in enumerate(zip(sims, logs)):
        _record(sim, log['t'], log['gt'], log['odom'])
        runs.append(RunData(name=f'{name}_{k}', source=f'<simulated {name}_{k}>',
                            odom=Series(log['t'], log['odom']), ground_truth=Series(log['t'], log['gt']),
                            commands=Series(log['t_cmd'], log['cmds']), plans=(plans[k],)))
    return runs


def save_bag(run: RunData, root, name: str | None = None, storage: str = 'mcap'):
    """Write ``run`` as a rosbag2 run ``<root>/<name>`` like the recorder's: ``/ground_truth/odom``
    and ``/odom`` (nav_msgs/Odometry, header stamps = bag times), ``/cmd_vel``
    (geometry_msgs/Twist), ``/goal_pose`` (PoseStamped), ``/plan`` (nav_msgs/Path, timed) and
    ``/scan`` (sensor_msgs/LaserScan).
    ``storage``: ``'mcap'`` (through :class:`~diffopt_ros.bag.BagWriter`) or ``'sqlite3'``.

    Returns:
        The run folder.
    """
    from pathlib import Path

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types
    Time, Header = T['builtin_interfaces/msg/Time'], T['std_msgs/msg/Header']
    Point, Quat = T['geometry_msgs/msg/Point'], T['geometry_msgs/msg/Quaternion']
    Pose = T['geometry_msgs/msg/Pose']
    Vector3, Twist = T['geometry_msgs/msg/Vector3'], T['geometry_msgs/msg/Twist']

    def stamp(t):
        ns = int(round(t * 1e9))
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def pose(x, y, yaw):
        return Pose(position=Point(x=float(x), y=float(y), z=0.0),
                    orientation=Quat(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))

    def twist(v, w):
        return Twist(linear=Vector3(x=float(v), y=0.0, z=0.0), angular=Vector3(x=0.0, y=0.0, z=float(w)))

    def odometry(t, s, frame):
        return T['nav_msgs/msg/Odometry'](
            header=Header(stamp=stamp(t), frame_id=frame), child_frame_id='base_link',
            pose=T['geometry_msgs/msg/PoseWithCovariance'](pose=pose(*s[:3]), covariance=np.zeros(36)),
            twist=T['geometry_msgs/msg/TwistWithCovariance'](twist=twist(s[3], s[4]),
                                                             covariance=np.zeros(36)))

    def pose_stamped(t, p, frame='map'):
        return T['geometry_msgs/msg/PoseStamped'](header=Header(stamp=stamp(t), frame_id=frame),
                                                  pose=pose(*p[:3]))

    messages = []   # (t, topic, msgtype, message)
    for topic, series in (('/ground_truth/odom', run.ground_truth), ('/odom', run.odom)):
        if series is not None:
            frame = 'map' if topic.startswith('/ground') else 'odom'
            messages += [(t, topic, 'nav_msgs/msg/Odometry', odometry(t, s, frame))
                         for t, s in zip(series.t, series.values)]
    if run.commands is not None:
        messages += [(t, '/cmd_vel', 'geometry_msgs/msg/Twist', twist(*u))
                     for t, u in zip(run.commands.t, run.commands.values)]
    if run.goals is not None:
        messages += [(t, '/goal_pose', 'geometry_msgs/msg/PoseStamped', pose_stamped(t, g))
                     for t, g in zip(run.goals.t, run.goals.values)]
    for plan in run.plans:
        path = T['nav_msgs/msg/Path'](header=Header(stamp=stamp(plan.t), frame_id='map'),
                                      poses=[pose_stamped(t, p) for t, p in zip(plan.stamps, plan.poses)])
        messages.append((plan.t, '/plan', 'nav_msgs/msg/Path', path))
    if run.scans is not None:
        sc = run.scans
        increment = float(sc.angles[1] - sc.angles[0]) if len(sc.angles) > 1 else 0.0
        messages += [(t, '/scan', 'sensor_msgs/msg/LaserScan', T['sensor_msgs/msg/LaserScan'](
            header=Header(stamp=stamp(t), frame_id='base_scan'), angle_min=float(sc.angles[0]),
            angle_max=float(sc.angles[-1]), angle_increment=increment, time_increment=0.0,
            scan_time=0.0, range_min=float(sc.range_min), range_max=float(sc.range_max),
            ranges=np.asarray(ranges, dtype=np.float32), intensities=np.zeros(0, np.float32)))
            for t, ranges in zip(sc.t, sc.ranges)]
    messages.sort(key=lambda m: m[0])
    folder = Path(root) / (name or run.name)
    if storage == 'mcap':
        from diffopt_ros.bag import BagWriter

        writer = BagWriter.create(root, name or run.name, unique=False, typestore=store)
        for topic, msgtype in sorted({(m[1], m[2]) for m in messages}):
            writer.add_topic(topic, msgtype)
        for t, topic, msgtype, msg in messages:
            writer.write(topic, store.serialize_cdr(msg, msgtype), int(round(t * 1e9)))
        writer.close()
        return writer.run_dir
    writer = Writer(folder, version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    connections = {topic: writer.add_connection(topic, msgtype, typestore=store)
                   for topic, msgtype in sorted({(m[1], m[2]) for m in messages})}
    for t, topic, msgtype, msg in messages:
        writer.write(connections[topic], int(round(t * 1e9)), store.serialize_cdr(msg, msgtype))
    writer.close()
    return folder


def route_run(world: World, sensors=None, seconds: float = 30.0, start: int = 0,
              speed: float = 0.5, sim_dt: float = 0.02, scan_period: float = 0.1, seed: int = 0,
              name: str = 'route') -> RunData:
    """The true robot following the world's route (waypoint ``start`` onwards, cyclically) with
    a simple heading controller on the true pose; ``/odom``, ``/ground_truth/odom`` every
    ``sim_dt`` s and ``/scan`` every ``scan_period`` s, as the simulator node publishes them.

    Args:
        world: a world with a route (e.g. ``World.load('loop')``).
        sensors: odometry and lidar parameters (``sim.SensorParams``; default: the simulator's).
        seconds: duration (s).
        start: index of the route waypoint to start at (heading to the next one).
        speed: forward speed command (m/s).
        sim_dt: simulation and odometry step (s).
        scan_period: time between scans (s).
        seed: noise seed.
        name: run name.
    """
    from diffopt_ros.bag import Scans

    route = np.asarray(world.route, dtype=np.float64)
    if len(route) < 2:
        raise ValueError(f'world {world.name} has no route')
    here, target = route[start % len(route)], (start + 1) % len(route)
    heading = math.atan2(*(route[target] - here)[::-1])
    sim = Simulator(world, sensors=sensors, seed=seed, start_pose=(here[0], here[1], heading))
    per_scan = int(round(scan_period / sim_dt))
    t, gt, odom, t_scan, scans, t_cmd, cmds = [], [], [], [], [], [], []
    for k in range(int(round(seconds / sim_dt))):
        state = sim.true_state
        if np.hypot(*(route[target] - state[:2])) < 0.5:
            target = (target + 1) % len(route)
        error = math.remainder(math.atan2(*(route[target] - state[:2])[::-1]) - state[2], 2 * math.pi)
        command = (speed * max(0.0, math.cos(error)), max(-1.5, min(1.5, 2.0 * error)))
        _record(sim, t, gt, odom)
        if k % per_scan == 0:
            t_scan.append(sim.time)
            scans.append(sim.scan())
        t_cmd.append(sim.time)
        cmds.append(command)
        sim.step(command, sim_dt)
    _record(sim, t, gt, odom)
    p = sim.sensors
    return RunData(name=name, source=f'<simulated {name}>', odom=Series(t, odom),
                   ground_truth=Series(t, gt), commands=Series(t_cmd, cmds),
                   scans=Scans(np.asarray(t_scan), np.stack(scans), p.lidar_angles(),
                               p.lidar_range_min, p.lidar_range_max))
