"""The demo's results: what a drive logged (:class:`DriveLog`), its metrics
(:class:`RunResult`, :func:`score`) and the before/after table.

Units: m, s (sim time unless named wall), ms for solve times.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffopt_ros.demo.metrics import (
    JUMP_SETTLE,
    JUMP_THRESHOLD,
    PREDICTION_AHEAD,
    align_to_first_pose,
    estimate_jumps,
    position_rmse,
    tracking_rmse,
)
from diffopt_ros.demo.plots import plot_run


@dataclass
class Trace:
    """Times ``(N,)`` (s, sim time) and rows ``(N, k)`` of one logged quantity."""

    t: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    def add(self, t: float, row) -> None:
        self.t.append(t)
        self.rows.append(row)

    def arrays(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(t (N,), rows (N, width))`` as float64 arrays."""
        return (np.asarray(self.t, dtype=np.float64),
                np.asarray(self.rows, dtype=np.float64).reshape(-1, width))


@dataclass
class DriveLog:
    """What one drive of the course logged (all times sim time, s; positions m).

    Attributes:
        goals: the course's goals ``(K, 2)`` (map frame).
        from_estimate: maps ``(N, >=3)`` poses of the estimate's frame to ``(N, 3)`` map poses.
        traces: ``'ground truth'``, ``'odometry'``, ``'SLAM'`` and ``'estimate'`` (the state the
            MPC closes the loop on), rows ``[x, y, yaw]`` in their own frames.
        predictions: where the MPC predicted the robot ``PREDICTION_AHEAD`` s ahead, rows
            ``[x, y]`` (estimate's frame) at the predicted time.
        predicted: every 20th whole predicted path, each ``(T + 1, 2)`` (map frame), to plot.
        solve_ms: MPC solve time of each tick that solved (ms).
        mpc_status: the last MPC diagnostics ``(time, mode, {key: value})``, or None.
        legs: ``(leg, t_end)`` per finished goal.
        final_errors: true distance (m) to each goal when its leg ended.
        reached: goals reached within the course's ``reach_tolerance``.
    """

    goals: np.ndarray
    from_estimate: Callable
    traces: dict = field(default_factory=lambda: {name: Trace() for name in (
        'ground truth', 'odometry', 'SLAM', 'estimate')})
    predictions: Trace = field(default_factory=Trace)
    predicted: list = field(default_factory=list)
    solve_ms: list = field(default_factory=list)
    mpc_status: tuple | None = None
    legs: list = field(default_factory=list)
    final_errors: list = field(default_factory=list)
    reached: int = 0


@dataclass
class RunResult:
    """Metrics of one drive of the course (m, s, ms)."""

    name: str
    bag: Path | None
    goals_reached: int
    goals_total: int
    tracking_rmse: float
    true_tracking_rmse: float
    tracking_rmse_all: float
    jumps: list
    prediction_rmse: float
    odom_ate: float
    slam_ate: float
    final_errors: list
    sim_time: float
    wall_time: float
    control_rate: float
    solve_ms_p50: float
    solve_ms_p99: float
    deadline_misses: int
    collisions: int = 0
    plot: Path | None = None

    def summary(self) -> str:
        """Human-readable summary (several lines)."""
        improvement = (1.0 - self.slam_ate / self.odom_ate) * 100 if self.odom_ate > 0 else math.nan
        return '\n'.join([
            f'== {self.name}: {self.goals_reached}/{self.goals_total} goals reached in '
            f'{self.sim_time:.1f} s sim time ({self.wall_time:.1f} s wall, real-time factor '
            f'{self.sim_time / max(self.wall_time, 1e-9):.1f})',
            f'   MPC tracking error (RMSE of the estimate the MPC closes the loop on to the timed '
            f'reference, without the {JUMP_SETTLE:g} s after each of {len(self.jumps)} estimate '
            f'corrections > {JUMP_THRESHOLD:g} m'
            + (f': {", ".join(f"{size:.2f} m at {at:.0f} s" for at, size in self.jumps)}'
               if self.jumps else '') + f'): {self.tracking_rmse:.3f} m; with them '
            f'{self.tracking_rmse_all:.3f} m; true position to reference: '
            f'{self.true_tracking_rmse:.3f} m',
            f'   MPC prediction error {PREDICTION_AHEAD:g} s ahead (RMSE, on the estimate): '
            f'{self.prediction_rmse:.3f} m',
            f'   final distance to each goal (true): '
            f'{", ".join(f"{e:.2f}" for e in self.final_errors)} m',
            f'   absolute trajectory error (RMSE): SLAM {self.slam_ate:.3f} m vs raw odometry '
            f'{self.odom_ate:.3f} m ({improvement:.0f}% lower)',
            f'   control loop: {self.control_rate:.1f} Hz achieved (sim time), solve time p50 '
            f'{self.solve_ms_p50:.1f} ms, p99 {self.solve_ms_p99:.1f} ms, '
            f'{self.deadline_misses} deadline misses; {self.collisions} simulator steps against an '
            'obstacle',
            f'   bag: {self.bag}' + (f'   plot: {self.plot}' if self.plot else ''),
        ])


def comparison_table(before: RunResult, *after: tuple[str, RunResult]) -> str:
    """The before/after learning table (Markdown): ``before``, then each ``(label, run)`` of
    ``after`` with its change against ``before``."""
    def cell(a, b, unit):
        change = (b / a - 1.0) * 100 if a and math.isfinite(a) and a != 0 else math.nan
        return f'{b:.3f} {unit} ({change:+.0f}%)'

    def row(name, key, unit='m'):
        first = getattr(before, key)
        return (f'| {name} | {first:.3f} {unit} | '
                + ' | '.join(cell(first, getattr(run, key), unit) for _, run in after) + ' |')
    return '\n'.join([
        '| metric | before learning | ' + ' | '.join(label for label, _ in after) + ' |',
        '|---|---|' + '---|' * len(after),
        row(f'MPC tracking error (RMSE; without {JUMP_SETTLE:g} s after estimate corrections '
            f'> {JUMP_THRESHOLD:g} m)', 'tracking_rmse'),
        row('MPC tracking error (RMSE, all samples)', 'tracking_rmse_all'),
        row('true position to reference (RMSE)', 'true_tracking_rmse'),
        row(f'MPC prediction error {PREDICTION_AHEAD:g} s ahead (RMSE)', 'prediction_rmse'),
        row('SLAM ATE (RMSE)', 'slam_ate'),
        row('raw odometry ATE (RMSE)', 'odom_ate'),
        f'| goals reached | {before.goals_reached}/{before.goals_total} | '
        + ' | '.join(f'{run.goals_reached}/{run.goals_total}' for _, run in after) + ' |',
    ])


def score(name: str, log: DriveLog, world, bag: Path | None, plot_path: Path, sim_time: float,
          wall_time: float, collisions: int) -> RunResult:
    """The metrics of a finished drive, and its plot (``plot_path``, PNG).

    Args:
        name: run name.
        log: what the drive logged.
        world: the :class:`~diffopt_ros.sim.World` driven (for the plot).
        bag: where the run was recorded.
        plot_path: PNG to write.
        sim_time: s of simulated time the drive took.
        wall_time: s of wall time it took.
        collisions: simulator steps that ended against an obstacle.
    """
    t_gt, gt = log.traces['ground truth'].arrays(3)
    aligned, ate = {}, {}
    for key in ('odometry', 'SLAM'):
        t, poses = log.traces[key].arrays(3)
        if len(t) and len(t_gt):
            # odometry starts at zero: aligned at its first pose; SLAM is in the world's map
            # (slam_node's initial_pose): as recorded, as evo_ape reads it from the bag
            aligned[key] = align_to_first_pose(t, poses, t_gt, gt) if key == 'odometry' else poses
            ate[key] = position_rmse(t, aligned[key], t_gt, gt)
        else:
            aligned[key], ate[key] = np.zeros((0, 3)), math.nan
    t_est, est = log.traces['estimate'].arrays(3)
    est_map = log.from_estimate(est)
    t_odom, odom = log.traces['odometry'].arrays(3)
    jumps = estimate_jumps(t_est, est_map, t_odom, odom, JUMP_THRESHOLD)
    settling = [(at, at + JUMP_SETTLE) for at, _ in jumps]
    t_pred, pred = log.predictions.arrays(2)
    status = log.mpc_status[2] if log.mpc_status else {}
    ticks = float(status.get('ticks', 0))
    solve = np.asarray(log.solve_ms) if log.solve_ms else np.array([math.nan])
    plot = plot_run(plot_path, world, {'ground truth': gt[:, :2], 'odometry': aligned['odometry'],
                                       'SLAM': aligned['SLAM']},
                    [leg for leg, _ in log.legs], log.predicted,
                    f'{name}: {log.reached}/{len(log.goals)} goals, ATE SLAM '
                    f'{ate["SLAM"]:.2f} m vs odometry {ate["odometry"]:.2f} m')
    return RunResult(
        name=name, bag=bag, goals_reached=log.reached, goals_total=len(log.goals),
        tracking_rmse=tracking_rmse(log.legs, t_est, est_map, settling),
        tracking_rmse_all=tracking_rmse(log.legs, t_est, est_map), jumps=jumps,
        true_tracking_rmse=tracking_rmse(log.legs, t_gt, gt),
        prediction_rmse=position_rmse(t_pred, pred, t_est, est) if len(t_est) else math.nan,
        odom_ate=ate['odometry'],
        slam_ate=ate['SLAM'], final_errors=log.final_errors, sim_time=sim_time,
        wall_time=wall_time, control_rate=ticks / max(sim_time, 1e-9),
        solve_ms_p50=float(np.percentile(solve, 50)), solve_ms_p99=float(np.percentile(solve, 99)),
        deadline_misses=int(status.get('deadline_misses', 0)), collisions=collisions,
        plot=plot)
