"""Recorded runs -> training windows of the MPC horizon (:class:`ControlWindows`).

:func:`control_windows` cuts each :class:`~diffopt_ros.learn.datasets.RunData` into windows on a
grid of step ``dt`` aligned to the first command: the state at the window start, the
``/cmd_vel`` commands held over each step (sample-and-hold), the states after each step, the
command before the window and the reference the MPC tracked from there (replayed from the run's
``/goal_pose`` and ``/plan``). :func:`prediction_step` picks ``dt`` for system identification.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from diffopt_ros.bag.align import hold, interpolate_states, window_starts
from diffopt_ros.learn.datasets import CMD_TOPIC, DatasetError, Plan, RunData
from diffopt_ros.learn.items import TensorItems

#: The robot stops when commands are older than this (s): sim_node's ``cmd_timeout`` default.
COMMAND_TIMEOUT = 0.5
#: Speed (m/s) below which a robot under a sustained command counts as blocked.
BLOCKED_SPEED = 0.02


def _reference_fn(run: RunData, horizon: int, dt: float, reference_speed: float):
    """A function ``(t, state) -> reference (T, 5)`` reproducing what mpc_node tracked.

    The node tracks the latest of ``/goal_pose`` (drive to it) and ``/plan`` (a timed
    trajectory, or an untimed path followed at ``reference_speed``); it is called at increasing
    times so the progress along an untimed path is replayed as the node kept it.
    """
    from diffopt_ros.mpc.receding import goal_reference, path_reference, timed_reference

    events = []
    if run.goals is not None:
        events += [(t, 'goal', goal) for t, goal in zip(run.goals.t, run.goals.values)]
    events += [(plan.t, 'plan', plan) for plan in run.plans]
    events.sort(key=lambda e: e[0])
    times = np.array([e[0] for e in events])
    progress = {'plan': None, 'value': 0.0}

    def reference(t: float, state: np.ndarray) -> np.ndarray | None:
        k = int(np.searchsorted(times, t, side='right')) - 1
        if k < 0:
            return None
        _, kind, value = events[k]
        if kind == 'goal':
            return goal_reference(state, value[:2], horizon)
        plan: Plan = value
        if len(plan.poses) == 0:
            return None
        if plan.timed:
            return timed_reference(state, plan.poses, plan.stamps, t, horizon, dt)
        if progress['plan'] is not plan:
            progress['plan'], progress['value'] = plan, 0.0
        ref, progress['value'] = path_reference(state, plan.poses, progress['value'], horizon, dt,
                                                reference_speed)
        return ref

    return reference


@dataclass
class ControlWindows:
    """Windows of a horizon, batched.

    Attributes:
        x0: state at the window start ``(B, 5)``.
        u: commands held over each step ``(B, H, 2)``.
        u_prev: the command before ``u[:, 0]`` ``(B, 2)`` (zero before the first command).
        x_next: states after each step ``(B, H, 5)``.
        reference: the MPC reference from the window start ``(B, T, 5)`` (NaN where the run had
            no goal or plan then; ``T`` = ``ref_horizon``).
        run: index of the run each window comes from ``(B,)``.
        t0: start time of each window ``(B,)`` s.
        dt: step of ``u`` and ``x_next`` (s).
        ref_dt: step of ``reference`` (s).
    """

    x0: torch.Tensor
    u: torch.Tensor
    u_prev: torch.Tensor
    x_next: torch.Tensor
    reference: torch.Tensor
    run: torch.Tensor
    t0: torch.Tensor
    dt: float
    ref_dt: float

    def __len__(self) -> int:
        return self.x0.shape[0]

    def items(self, index_offset: int = 0) -> TensorItems:
        """The windows as trainer items (``x0``, ``u``, ``u_prev``, ``x_next``, ``reference``,
        ``index``: position in this set plus ``index_offset``)."""
        return TensorItems({'x0': self.x0, 'u': self.u, 'u_prev': self.u_prev,
                            'x_next': self.x_next,
                            'reference': self.reference,
                            'index': index_offset + torch.arange(len(self), device=self.x0.device)})

    def select(self, keep: torch.Tensor) -> ControlWindows:
        """The windows where ``keep`` ``(B,)`` bool is true."""
        return ControlWindows(self.x0[keep], self.u[keep], self.u_prev[keep], self.x_next[keep],
                              self.reference[keep],
                              self.run[keep], self.t0[keep], self.dt, self.ref_dt)

    def with_reference(self) -> ControlWindows:
        """Only the windows that have a reference."""
        return self.select(torch.isfinite(self.reference).flatten(1).all(dim=1))


def command_period(runs: Sequence[RunData]) -> float:
    """Median interval between consecutive commands over ``runs`` (s).

    Raises:
        DatasetError: fewer than two commands in every run.
    """
    gaps = [np.diff(run.commands.t) for run in runs if run.commands is not None and len(run.commands) > 1]
    if not gaps:
        raise DatasetError(f'{", ".join(r.where for r in runs)}: fewer than two {CMD_TOPIC} '
                           f'messages: cannot tell the command period')
    return float(np.median(np.concatenate(gaps)))


def state_period(runs: Sequence[RunData], topic: str | None = None) -> float:
    """Median interval between consecutive states (of ``topic``) over ``runs`` (s)."""
    return float(np.median(np.concatenate([np.diff(run.states(topic)[0].t) for run in runs])))


def prediction_step(runs: Sequence[RunData], topic: str | None = None) -> float:
    """The grid step for system identification (s): the command period where commands come
    regularly (90 % of the intervals within 10 % of the median: a control loop on a timer), so
    each step holds exactly one command; else the state period, so that holding the command at
    the grid points errs by at most one state period."""
    period = command_period(runs)
    gaps = np.concatenate([np.diff(r.commands.t) for r in runs if r.commands is not None
                           and len(r.commands) > 1])
    if np.mean(np.abs(gaps - period) <= 0.1 * period) >= 0.9:
        return period
    return min(period, state_period(runs, topic))


def run_windows(run: RunData, dt: float, horizon: int, stride: int = 1, max_gap: float | None = None,
                max_command_age: float = COMMAND_TIMEOUT, ref_horizon: int = 0, ref_dt: float = 0.1,
                reference_speed: float = 0.4, drop_blocked: bool = True,
                state_topic: str | None = None) -> dict[str, np.ndarray]:
    """The windows of one run as numpy arrays (see :class:`ControlWindows`).

    The grid starts at the first command, so with ``dt`` equal to a regular command period each
    held command is exactly the one in force over its step (with irregular commands, a ``dt``
    of the state period keeps the hold error small). Windows with a state gap above ``max_gap``
    (default: 2 ``dt`` or 3 state periods, the larger) or a held command older than
    ``max_command_age`` (default: sim_node's ``cmd_timeout``, after which the robot stops) are
    left out, and with ``drop_blocked`` those where the robot stands still (below
    ``BLOCKED_SPEED``) under a forward command all along (pushing against an obstacle). States
    come from ``state_topic`` (default: see :meth:`RunData.states`).
    """
    if dt <= 0 or horizon < 1 or stride < 1:
        raise ValueError(f'dt={dt}, horizon={horizon}, stride={stride}: need dt > 0, horizon >= 1, '
                         f'stride >= 1')
    states, _ = run.states(state_topic)
    commands = run.require_commands()
    start, end = max(commands.t[0], states.t[0]), states.t[-1]
    n_grid = int(math.floor((end - start) / dt + 1e-9)) + 1 if end > start else 0
    grid = start + dt * np.arange(n_grid)
    if max_gap is None:
        max_gap = max(2 * dt, 3 * float(np.median(np.diff(states.t))))
    x, x_ok = interpolate_states(states.t, states.values, grid, max_gap)
    # A small tolerance keeps a command stamped a hair after its grid point on that step.
    u, u_ok = hold(commands.t, commands.values, grid + 1e-3 * dt, max_command_age)
    starts = window_starts(x_ok & u_ok, horizon + 1, stride)
    steps = starts[:, None] + np.arange(horizon)[None, :]
    if drop_blocked and len(starts):
        # Not moving under a sustained forward command all window long: against an obstacle
        # (the simulator stops the robot there), which no actuator model explains.
        v = np.abs(x[np.concatenate([steps, steps[:, -1:] + 1], 1), 3])
        blocked = (v < BLOCKED_SPEED).all(1) & (np.abs(u[steps, 0]) > 5 * BLOCKED_SPEED).all(1)
        starts, steps = starts[~blocked], steps[~blocked]
    previous = np.searchsorted(commands.t, grid[starts] + 1e-3 * dt, side='right') - 2
    u_prev = np.where((previous >= 0)[:, None], commands.values[previous.clip(0)], 0.0)
    reference = np.full((len(starts), ref_horizon, 5), np.nan)
    if ref_horizon and len(starts):
        ref_fn = _reference_fn(run, ref_horizon, ref_dt, reference_speed)
        for i, k in enumerate(starts):   # increasing times, as the node saw them
            ref = ref_fn(grid[k], x[k])
            if ref is not None:
                reference[i] = ref
    return {'x0': x[starts].reshape(-1, 5), 'u': u[steps].reshape(-1, horizon, 2),
            'u_prev': u_prev.reshape(-1, 2),
            'x_next': x[steps + 1].reshape(-1, horizon, 5), 'reference': reference,
            't0': grid[starts]}


def control_windows(runs: Sequence[RunData], dt: float, horizon: int, stride: int = 1,
                    ref_horizon: int = 0, ref_dt: float = 0.1, reference_speed: float = 0.4,
                    max_command_age: float = COMMAND_TIMEOUT, state_topic: str | None = None,
                    dtype: torch.dtype = torch.float64) -> ControlWindows:
    """Windows of all ``runs`` (see :func:`run_windows`), concatenated in run order.

    Raises:
        DatasetError: a run lacks states or commands (run and topic named), or no run gives a
            window.
    """
    parts = [run_windows(run, dt, horizon, stride, max_command_age=max_command_age,
                         ref_horizon=ref_horizon, ref_dt=ref_dt, reference_speed=reference_speed,
                         state_topic=state_topic)
             for run in runs]
    if not any(len(p['x0']) for p in parts):
        raise DatasetError(f'{", ".join(run.where for run in runs)}: no window of {horizon} steps '
                           f'of {dt} s with states and {CMD_TOPIC} commands without gaps')

    def cat(key):
        return torch.as_tensor(np.concatenate([p[key] for p in parts]), dtype=dtype)

    run_index = torch.cat([torch.full((len(p['x0']),), i, dtype=torch.long)
                           for i, p in enumerate(parts)])
    return ControlWindows(cat('x0'), cat('u'), cat('u_prev'), cat('x_next'), cat('reference'), run_index,
                          torch.as_tensor(np.concatenate([p['t0'] for p in parts]),
                                          dtype=torch.float64), float(dt), float(ref_dt))
