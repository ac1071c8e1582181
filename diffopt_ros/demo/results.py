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
    PREDICTION_AHEAD,
    align_to_first_pose,
    path_deviation,
    path_length,
    position_rmse,
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
        plans: the MPC's global paths ``(time, (M, 2) map frame)`` as published
            (``/plan_global``; empty for an unreachable goal).
        solve_ms: MPC solve time of each tick that solved (ms).
        mpc_status: the last MPC diagnostics ``(time, mode, {key: value})``, or None.
        intervals: ``(sent, ended)`` per finished goal (s).
        outcomes: per finished goal, how it ended: ``'goal reached'``, ``'unreachable'``,
            ``'no progress'`` or ``'timeout'`` (as the MPC saw it).
        final_errors: true distance (m) to each goal when it ended.
        reached: goals whose true final distance is within the course's ``reach_tolerance``.
    """

    goals: np.ndarray
    from_estimate: Callable
    traces: dict = field(default_factory=lambda: {name: Trace() for name in (
        'ground truth', 'odometry', 'SLAM', 'estimate')})
    predictions: Trace = field(default_factory=Trace)
    predicted: list = field(default_factory=list)
    plans: list = field(default_factory=list)
    solve_ms: list = field(default_factory=list)
    mpc_status: tuple | None = None
    intervals: list = field(default_factory=list)
    outcomes: list = field(default_factory=list)
    final_errors: list = field(default_factory=list)
    reached: int = 0


@dataclass
class RunResult:
    """Metrics of one drive of the course (m, s, ms); see docs/demo.md for their definitions.
    ``model_error`` is filled in from the drive's bag (:func:`diffopt_ros.demo.phases.model_error`)."""

    name: str
    bag: Path | None
    goals_reached: int
    goals_total: int
    time_to_goals: float
    path_length: float
    min_clearance: float
    collisions: int
    prediction_rmse: float
    plan_deviation: float
    odom_ate: float
    slam_ate: float
    final_errors: list
    outcomes: list
    sim_time: float
    wall_time: float
    control_rate: float
    solve_ms_p50: float
    solve_ms_p99: float
    deadline_misses: int
    plot: Path | None = None
    model_error: float = math.nan
    stop_zone: int = 0

    def summary(self) -> str:
        """Human-readable summary (several lines)."""
        improvement = (1.0 - self.slam_ate / self.odom_ate) * 100 if self.odom_ate > 0 else math.nan
        return '\n'.join([
            f'== {self.name}: {self.goals_reached}/{self.goals_total} goals reached in '
            f'{self.sim_time:.1f} s sim time ({self.wall_time:.1f} s wall, real-time factor '
            f'{self.sim_time / max(self.wall_time, 1e-9):.1f}); per goal: '
            + ', '.join(f'{o} ({e:.2f} m)' for o, e in zip(self.outcomes, self.final_errors)),
            f'   time to the goals {self.time_to_goals:.1f} s, path length {self.path_length:.2f} m, '
            f'minimum clearance {self.min_clearance:.3f} m, {self.collisions} simulator steps '
            f'against an obstacle, {self.stop_zone} MPC ticks with the speed cut by the stop zone',
            f'   MPC prediction error {PREDICTION_AHEAD:g} s ahead (RMSE): {self.prediction_rmse:.3f} m '
            f'on the estimate, its model with the commands sent {self.model_error:.3f} m on ground '
            f'truth; deviation from the global path (RMSE): {self.plan_deviation:.3f} m',
            f'   absolute trajectory error (RMSE): SLAM {self.slam_ate:.3f} m vs raw odometry '
            f'{self.odom_ate:.3f} m ({improvement:.0f}% lower)',
            f'   control loop: {self.control_rate:.1f} Hz achieved (sim time), solve time p50 '
            f'{self.solve_ms_p50:.1f} ms, p99 {self.solve_ms_p99:.1f} ms, '
            f'{self.deadline_misses} deadline misses',
            f'   bag: {self.bag}' + (f'   plot: {self.plot}' if self.plot else ''),
        ])


#: Rows of the before/after table: (label, RunResult attribute, unit, decimals).
TABLE_ROWS = (
    (f'MPC prediction error {PREDICTION_AHEAD:g} s ahead (RMSE)', 'prediction_rmse', 'm', 3),
    (f'MPC model, {PREDICTION_AHEAD:g} s ahead on ground truth (RMSE)', 'model_error', 'm', 4),
    ('deviation from the global path (RMSE)', 'plan_deviation', 'm', 3),
    ('time to the goals', 'time_to_goals', 's', 1),
    ('path length', 'path_length', 'm', 2),
    ('minimum clearance', 'min_clearance', 'm', 3),
    ('SLAM ATE (RMSE)', 'slam_ate', 'm', 3),
    ('raw odometry ATE (RMSE)', 'odom_ate', 'm', 3),
)


def comparison_table(before: RunResult, *after: tuple[str, RunResult]) -> str:
    """The before/after learning table (Markdown): ``before``, then each ``(label, run)`` of
    ``after`` with its change against ``before``."""
    def cell(a, b, unit, digits):
        change = (b / a - 1.0) * 100 if a and math.isfinite(a) and a != 0 else math.nan
        return f'{b:.{digits}f} {unit} ({change:+.0f}%)'

    def row(name, key, unit, digits):
        first = getattr(before, key)
        return (f'| {name} | {first:.{digits}f} {unit} | '
                + ' | '.join(cell(first, getattr(run, key), unit, digits) for _, run in after) + ' |')

    def counts(name, text):
        return f'| {name} | {text(before)} | ' + ' | '.join(text(run) for _, run in after) + ' |'
    return '\n'.join([
        '| metric | before learning | ' + ' | '.join(label for label, _ in after) + ' |',
        '|---|---|' + '---|' * len(after),
        *(row(*spec) for spec in TABLE_ROWS),
        counts('goals reached', lambda run: f'{run.goals_reached}/{run.goals_total}'),
        counts('collisions (simulator steps)', lambda run: str(run.collisions)),
        counts('stop zone (MPC ticks with the speed cut)', lambda run: str(run.stop_zone)),
    ])


def score(name: str, log: DriveLog, world, bag: Path | None, plot_path: Path, sim_time: float,
          wall_time: float, collisions: int) -> RunResult:
    """The metrics of a finished drive, and its plot (``plot_path``, PNG).

    Args:
        name: run name.
        log: what the drive logged.
        world: the :class:`~diffopt_ros.sim.World` driven (clearances, plot).
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
    driving = np.zeros(len(t_gt), dtype=bool)
    for start, end in log.intervals:
        driving |= (t_gt >= start) & (t_gt <= end)
    t_est, est = log.traces['estimate'].arrays(3)
    t_pred, pred = log.predictions.arrays(2)
    status = log.mpc_status[2] if log.mpc_status else {}
    ticks = float(status.get('ticks', 0))
    solve = np.asarray(log.solve_ms) if log.solve_ms else np.array([math.nan])
    plot = plot_run(plot_path, world, {'ground truth': gt[:, :2], 'odometry': aligned['odometry'],
                                       'SLAM': aligned['SLAM']},
                    log.goals, [path for _, path in log.plans], log.predicted,
                    f'{name}: {log.reached}/{len(log.goals)} goals, ATE SLAM '
                    f'{ate["SLAM"]:.2f} m vs odometry {ate["odometry"]:.2f} m')
    return RunResult(
        name=name, bag=bag, goals_reached=log.reached, goals_total=len(log.goals),
        time_to_goals=float(sum(end - start for start, end in log.intervals)),
        path_length=path_length(gt[driving]),
        min_clearance=min((world.clearance(p) for p in gt[driving]), default=math.nan),
        collisions=collisions,
        prediction_rmse=position_rmse(t_pred, pred, t_est, est) if len(t_est) else math.nan,
        plan_deviation=path_deviation(t_est, log.from_estimate(est), log.plans, log.intervals),
        odom_ate=ate['odometry'], slam_ate=ate['SLAM'], final_errors=log.final_errors,
        outcomes=log.outcomes, sim_time=sim_time, wall_time=wall_time,
        control_rate=ticks / max(sim_time, 1e-9),
        solve_ms_p50=float(np.percentile(solve, 50)), solve_ms_p99=float(np.percentile(solve, 99)),
        deadline_misses=int(status.get('deadline_misses', 0)), plot=plot,
        stop_zone=int(status.get('stop_zone', 0)))
