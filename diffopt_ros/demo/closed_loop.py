"""The demo's course without ROS, and the MPC model's prediction error on a run.

:func:`drive_course` drives a course's goals in one deterministic loop with
:func:`diffopt_ros.drive.drive`: the simulator (the demo's true robot, ``config/sim.yaml``) and
the :class:`~diffopt_ros.navigation.Navigator` (global path on the world's map, MPC with the
obstacle cost: what ``mpc_node`` runs with ``navigation.enabled``), with the course's
``mpc_node`` overrides, closing the loop on the true state (the error is then the controller's
own, not SLAM's). The run comes back as :class:`~diffopt_ros.learn.datasets.RunData` (odometry,
ground truth, commands), so system identification can learn from it.

:func:`prediction_rmse` replays a run's commands through the MPC's model from the true states:
how far the model's prediction ``PREDICTION_AHEAD`` s ahead lands from where the robot went,
what learning the dynamics improves. Example::

    from diffopt_ros import paths
    from diffopt_ros.demo.closed_loop import drive_course, prediction_rmse
    from diffopt_ros.demo.course import load_course
    from diffopt_ros.learn.controller import mpc_params
    course = load_course(paths.config_path('demo.yaml'))
    run = drive_course(course, mpc_params())
    run.result.goals, prediction_rmse(run.data, run.mpc_values)

Units: m, s, rad; positions in the world's map frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffopt_ros.demo.course import Course
from diffopt_ros.demo.metrics import PREDICTION_AHEAD, interp_poses
from diffopt_ros.drive import DriveResult, drive
from diffopt_ros.learn.datasets import RunData
from diffopt_ros.mpc.models import DiffDriveLag
from diffopt_ros.mpc.receding import MpcSettings
from diffopt_ros.navigation import NavSettings
from diffopt_ros.sim import RobotParams, World


@dataclass
class ClosedLoopRun:
    """One drive of a course by :func:`drive_course`.

    Attributes:
        result: per goal reached, time, path length, minimum clearance, collisions; loop timing.
        data: odometry (odom frame), ground truth (map frame) and commands, as a recorded run.
        mpc_values: the ``mpc_node`` parameters the MPC ran with.
    """

    result: DriveResult
    data: RunData
    mpc_values: dict


def course_mpc_values(course: Course, mpc_values: dict, learned: dict | None = None) -> dict:
    """The ``mpc_node`` parameters as the demo runs them: ``mpc_values`` (``config/mpc.yaml``),
    then the course's overrides, then the ``learned`` values (as ``learned_params_file``)."""
    return {**mpc_values, **course.overrides.get('mpc_node', {}), **(learned or {})}


def drive_course(course: Course, mpc_values: dict, learned: dict | None = None,
                 robot: RobotParams | None = None) -> ClosedLoopRun:
    """Drive ``course``'s goals (its world's route if it has none) with the MPC on the true state.

    Args:
        course: world, goals, seed, ``goal_timeout`` and the ``mpc_node`` / ``sim_node``
            overrides (control rate, iterations, bounds, reference speed; scan rate).
        mpc_values: ``mpc_node`` parameters (``diffopt_ros.learn.controller.mpc_params()``).
        learned: learned ``mpc_node`` parameters, applied after the course's overrides (as the
            demo's ``learned_params_file``).
        robot: the true robot (default: ``config/sim.yaml``'s).
    """
    values = course_mpc_values(course, mpc_values, learned)
    world = World.load(course.world)
    goals = course.goals if len(course.goals) else np.asarray(world.route).reshape(-1, 2)
    nav = NavSettings.from_params(values)
    scan_rate = course.overrides.get('sim_node', {}).get('scan_rate', 10.0)
    result = drive(world, goals, seed=course.seed, mpc_values=values, nav=nav, slam=False,
                   control_rate=values['control_rate'], scan_rate=scan_rate,
                   goal_timeout=course.goal_timeout, true_robot=robot, record=True)
    return ClosedLoopRun(result=result, data=result.run, mpc_values=values)


def prediction_rmse(data: RunData, mpc_values: dict, ahead: float = PREDICTION_AHEAD) -> float:
    """RMSE (m) of the MPC model's position prediction ``ahead`` s after each command of ``data``.

    From the true state at each command's time (ground truth ``(x, y, yaw, v, omega)``,
    interpolated), the model of ``mpc_values`` (``DiffDriveLag``, steps of ``dt``) is rolled
    forward under the commands as sent (each held until the next) and compared with the true
    position ``ahead`` s later. Commands whose window runs past the ground truth are left out.

    Args:
        data: a run with ``ground_truth`` (map frame) and ``commands`` ``(v, omega)``.
        mpc_values: ``mpc_node`` parameters (``model.*``, ``dt``).
        ahead: prediction time (s), a whole number of ``dt``.
    """
    settings = MpcSettings.from_params(mpc_values)
    steps = max(1, round(ahead / settings.dt))
    model = DiffDriveLag(settings.dt, gain_v=settings.gain_v, gain_omega=settings.gain_omega,
                         tau_v=settings.tau_v, tau_omega=settings.tau_omega).double()
    t_cmd, commands = data.commands.t, data.commands.values
    t_gt, truth = data.ground_truth.t, data.ground_truth.values
    starts = t_cmd[(t_cmd >= t_gt[0]) & (t_cmd + steps * settings.dt <= t_gt[-1])]
    if not len(starts):
        return float('nan')
    state = np.column_stack([interp_poses(t_gt, truth[:, :3], starts),
                             *(np.interp(starts, t_gt, truth[:, k]) for k in (3, 4))])
    x = torch.as_tensor(state)
    with torch.no_grad():
        for j in range(steps):
            held = np.searchsorted(t_cmd, starts + j * settings.dt + 1e-9, side='right') - 1
            x = model(x, torch.as_tensor(commands[held]))
    target = interp_poses(t_gt, truth[:, :3], starts + steps * settings.dt)
    return float(np.sqrt(np.mean(np.sum((x[:, :2].numpy() - target[:, :2]) ** 2, axis=1))))
