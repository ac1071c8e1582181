"""Simulated runs with known true parameters, for tests, benchmarks and trying learning
without a robot or ROS. Each returns :class:`~diffopt_ros.learn.datasets.RunData` exactly as
:func:`~diffopt_ros.learn.datasets.load_run` would from a recorded bag
(:func:`~diffopt_ros.learn.datasets.save_bag` writes one as a bag).

An experiment, not library: the runs exist to measure learning against a known answer (the
robot's true gains and lags, the expert's cost), which no recorded run has; learning itself
takes any :class:`~diffopt_ros.learn.datasets.RunData`.

- :func:`excitation_run`: the true robot (``sim.Simulator``) driven by random piecewise-constant
  commands: data for system identification.
- :func:`expert_runs`: the robot tracking random timed paths with the node's MPC using the
  *true* model (and given cost weights): demonstrations for imitation through the MPC.
- :func:`route_run`: the robot following a world's route with lidar scans: data for learning
  the SLAM weights.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from diffopt_ros.bag import Scans
from diffopt_ros.learn.controller import node_mpc
from diffopt_ros.learn.datasets import Plan, RunData, Series
from diffopt_ros.mpc.receding import receding_step, timed_reference
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
