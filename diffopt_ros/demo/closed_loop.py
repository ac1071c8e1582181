"""The demo's closed loop without ROS: the simulator, the receding-horizon MPC and a course.

What ``diffopt-ros demo`` does with four nodes, in one deterministic loop: the course is a list
of goals; each leg turns in place towards its goal, then follows a timed straight line at
``speed`` (:class:`~diffopt_ros.demo.course.Leg`); the MPC (``RecedingHorizonSolver``,
settings from ``mpc_node`` parameters) runs every ``dt`` s of sim time on the state it is given,
and the simulator holds its command until the next solve (``sim_node``'s lock-step). The run
comes back as :class:`~diffopt_ros.learn.datasets.RunData` (odometry, ground truth, commands),
so system identification can learn from it, with the tracking error
(:func:`~diffopt_ros.demo.metrics.tracking_rmse`). Example::

    from diffopt_ros.demo.closed_loop import drive_course
    from diffopt_ros.learn.controller import mpc_params
    from diffopt_ros.mpc.receding import MpcSettings
    run = drive_course('loop', [[1.5, 10.5], [18.5, 10.5]], MpcSettings.from_params(mpc_params()))
    run.tracking_rmse, run.data.commands

Units: m, s, rad; positions in the world's map frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffopt_ros.demo.course import Leg
from diffopt_ros.demo.metrics import tracking_rmse
from diffopt_ros.learn.datasets import RunData, Series
from diffopt_ros.mpc.receding import (
    MpcSettings,
    RecedingHorizonSolver,
    advance_plan,
    timed_reference,
)
from diffopt_ros.sim import RobotParams, Simulator, World


@dataclass
class ClosedLoopRun:
    """One drive of a course by :func:`drive_course`.

    Attributes:
        data: odometry (odom frame), ground truth (map frame) and commands, as a recorded run.
        legs: ``(leg, t_end)`` per goal.
        tracking_rmse: RMSE (m) of the true position against the timed reference (the state
            the MPC closed the loop on is the true one here).
        final_errors: true distance (m) to each goal when its leg ended.
        collisions: simulator steps that ended against an obstacle.
    """

    data: RunData
    legs: list
    tracking_rmse: float
    final_errors: list
    collisions: int


def drive_course(world: str | World, goals, settings: MpcSettings, robot: RobotParams | None = None,
                 speed: float = 0.5, turn_rate: float = 0.8, seed: int = 0,
                 goal_tolerance: float = 0.15, goal_timeout: float = 25.0,
                 settle_time: float = 1.0, sim_dt: float = 0.01,
                 name: str = 'closed_loop') -> ClosedLoopRun:
    """Drive ``goals`` ``(K, 2)`` (m, map frame) with the MPC closing the loop on the true state.

    Each leg ends when its timed line is over and the robot is within ``goal_tolerance`` of the
    goal (``mpc_node``'s goal reached), or ``goal_timeout`` s after its planned end. Later legs
    start at the previous goal (the course, not where the robot stopped), as in the demo.

    Args:
        world: world name under ``config/worlds`` (or path), or a :class:`World`.
        goals: the course.
        settings: the MPC (``MpcSettings.from_params(...)``); it runs every ``settings.dt`` s.
        robot: the true robot (default: ``RobotParams()``, the demo's).
        speed: m/s along each leg.
        turn_rate: rad/s of the turns in place (their planned duration).
        seed: simulator noise seed (odometry; the MPC sees the truth).
        goal_tolerance: m, as ``mpc_node``'s ``goal_tolerance``.
        goal_timeout: s allowed beyond a leg's planned end.
        settle_time: s standing still before the first leg.
        sim_dt: simulator step (s); the command is held over ``settings.dt``.
        name: run name (of the returned :class:`RunData`).
    """
    world = world if isinstance(world, World) else World.load(world)
    sim = Simulator(world, robot=robot or RobotParams(), seed=seed)
    solver = RecedingHorizonSolver(settings)
    period = settings.dt
    substeps = max(1, int(round(period / sim_dt)))
    t, gt, odom, t_cmd, cmds = [], [], [], [], []
    legs, final_errors = [], []
    goals = np.asarray(goals, dtype=np.float64).reshape(-1, 2)
    command = np.zeros(2)
    plan, plan_time = None, 0.0

    def advance(cmd):
        t_cmd.append(sim.time)
        cmds.append(np.array(cmd, dtype=np.float64))
        for k in range(substeps):
            if k % 2 == 0:
                t.append(sim.time)
                gt.append(sim.true_state)
                odom.append(sim.odometry)
            sim.step(cmd, period / substeps)

    while sim.time < settle_time - 1e-9:
        advance(command)
    for index, goal in enumerate(goals):
        start = sim.true_state[:3]
        if index > 0:
            start[:2] = goals[index - 1]
        leg = Leg.towards(start, goal, sim.time, speed, turn_rate)
        times, points = leg.waypoints()
        path = np.column_stack([points, np.zeros(len(points))])
        last_command = np.zeros(2)
        while True:
            now = sim.time
            state = sim.true_state
            if now >= times[-1] and math.hypot(*(state[:2] - goal)) <= goal_tolerance:
                break
            if now > leg.t0 + leg.duration + goal_timeout:
                break
            reference = timed_reference(state, path, times, now, settings.horizon, period)
            warm = None if plan is None else advance_plan(plan, now - plan_time, period)
            step = solver.solve(state, reference, warm, last_command)
            plan, plan_time = step.controls, now
            command = last_command = step.controls[0].copy()
            advance(command)
        legs.append((leg, sim.time))
        final_errors.append(float(np.hypot(*(sim.true_state[:2] - goal))))
        plan = None
        advance(np.zeros(2))     # goal reached: zero command for one period
    t.append(sim.time)
    gt.append(sim.true_state)
    odom.append(sim.odometry)
    data = RunData(name=name, source=f'<closed loop {name}>', odom=Series(t, odom),
                   ground_truth=Series(t, gt), commands=Series(t_cmd, cmds))
    t_arr, gt_arr = np.asarray(t), np.asarray(gt)
    return ClosedLoopRun(data=data, legs=legs, tracking_rmse=tracking_rmse(legs, t_arr, gt_arr),
                         final_errors=final_errors, collisions=sim.collisions)
