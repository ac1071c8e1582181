"""Simulated runs with known true parameters, for tests, benchmarks and trying learning
without a robot or ROS. Each returns :class:`~diffopt_ros.learn.datasets.RunData` exactly as
:func:`~diffopt_ros.learn.datasets.load_run` would from a recorded bag.

- :func:`excitation_run`: the true robot (``sim.Simulator``) driven by random piecewise-constant
  commands: data for system identification.
- :func:`expert_runs`: the robot driven to random goals by the node's MPC with the *true*
  model (and given cost weights): demonstrations for imitation through the MPC.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from diffopt_ros.learn.controller import node_mpc
from diffopt_ros.learn.datasets import RunData, Series
from diffopt_ros.sim import RobotParams, Simulator, World


def _record(sim: Simulator, t: list, gt: list, odom: list) -> None:
    t.append(sim.time)
    gt.append(sim.true_state)
    odom.append(sim.odometry)


def excitation_run(robot: RobotParams, seconds: float = 20.0, cmd_period: float = 0.05,
                   sim_dt: float = 0.01, v_range=(0.0, 0.5), omega_range=(-0.5, 0.5),
                   hold_range=(0.3, 1.0), seed: int = 0, name: str = 'excitation') -> RunData:
    """The true robot under random command levels, each held ``hold_range`` s, sent every
    ``cmd_period`` s; states recorded every ``sim_dt`` s. The default ranges keep the true
    robot below its acceleration limits, where ``DiffDriveLag`` is exact in the speeds."""
    rng = np.random.default_rng(seed)
    sim = Simulator(World(name='empty'), robot=robot, seed=seed, start_pose=(0.0, 0.0, 0.0))
    per_cmd = int(round(cmd_period / sim_dt))
    n_cmd = int(round(seconds / cmd_period))
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
            _record(sim, t, gt, odom)
            sim.step(level, sim_dt)
    _record(sim, t, gt, odom)
    return RunData(name=name, source=f'<simulated {name}>', odom=Series(t, odom),
                   ground_truth=Series(t, gt), commands=Series(t_cmd, cmds))


def expert_runs(robot: RobotParams, params: dict, episodes: int = 4, seconds: float = 8.0,
                control_period: float = 0.05, sim_dt: float = 0.01, goal_distance=(1.0, 2.5),
                reach: float = 0.3, seed: int = 0, name: str = 'expert') -> list[RunData]:
    """Episodes of the true robot driven to random goals by the node's MPC built from ``params``
    (mpc_node parameters: give the *true* ``model.*`` for an expert that knows the robot),
    solved tightly (as learning does) and warm-started from the previous plan. A new goal is
    sent when the robot is within ``reach`` m of the current one. Episodes run as one batch."""
    rng = np.random.default_rng(seed)
    from diffopt_ros.nodes.mpc_loop import goal_reference

    mpc = node_mpc(params, grad_mode='none', max_iterations=50, tolerance=1e-7)
    horizon = mpc.horizon
    sims = [Simulator(World(name='empty'), robot=robot, seed=seed + k,
                      start_pose=(0.0, 0.0, rng.uniform(-math.pi, math.pi))) for k in range(episodes)]

    def new_goal(state):
        bearing, distance = rng.uniform(-math.pi, math.pi), rng.uniform(*goal_distance)
        return state[:2] + distance * np.array([math.cos(bearing), math.sin(bearing)])

    goals = [new_goal(s.true_state) for s in sims]
    logs = [dict(t=[], gt=[], odom=[], t_cmd=[], cmds=[], t_goal=[sim.time], goals=[[*goals[k], 0.0]])
            for k, sim in enumerate(sims)]
    warm = torch.zeros(episodes, horizon, 2, dtype=torch.float64)
    per_tick = int(round(control_period / sim_dt))
    for _ in range(int(round(seconds / control_period))):
        states = np.stack([s.true_state for s in sims])
        for k, sim in enumerate(sims):
            if np.hypot(*(states[k, :2] - goals[k])) < reach:
                goals[k] = new_goal(states[k])
                logs[k]['t_goal'].append(sim.time)
                logs[k]['goals'].append([*goals[k], 0.0])
        reference = np.stack([goal_reference(states[k], goals[k], horizon) for k in range(episodes)])
        x0 = torch.as_tensor(states)
        target = torch.cat((x0.unsqueeze(1), torch.as_tensor(reference)), 1)
        with torch.no_grad():
            solution = mpc(x0, target=target, u_init=warm)
        warm = torch.cat((solution.controls[:, 1:], solution.controls[:, -1:]), 1)
        commands = solution.controls[:, 0].numpy()
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
                            commands=Series(log['t_cmd'], log['cmds']),
                            goals=Series(log['t_goal'], log['goals'])))
    return runs
