"""Plain functions to learn from recorded runs; what ``diffopt-ros learn`` and the demo call.

Example::

    from diffopt_ros.learn import learn_dynamics, learn_slam
    result = learn_dynamics(['runs/run_1'], 'out/dynamics')            # system identification
    result.yaml_path     # out/dynamics/mpc.yaml: mpc_node: ros__parameters: model.gain_v: ...
    result.params        # {'model.gain_v': 0.80, ...}
    result.metrics       # {'train_loss_before': ..., 'train_loss': ..., 'seconds': ...}

Every function takes runs as paths (rosbag2 folders, folders of runs) or
:class:`~diffopt_ros.learn.datasets.RunData`, writes ``metrics.csv``, ``loss.png``, a
task plot, ``checkpoint.pt`` and the learned parameter YAML into ``out_dir``, and works under
``torchrun`` (each process computes its share; rank 0 writes the files). Each returns a
:class:`~diffopt_ros.learn.results.LearnResult`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diffopt_ros.learn.controller import mpc_params, node_mpc, tie_cost_weights, twist_bicycle
from diffopt_ros.learn.datasets import CMD_TOPIC, DatasetError, RunData, RunsArg, as_runs, split_runs
from diffopt_ros.learn.objectives import ImitationObjective, PredictionObjective
from diffopt_ros.learn.results import LearnResult, finish
from diffopt_ros.learn.trainer import TrainConfig, train
from diffopt_ros.learn.windows import ControlWindows, control_windows, prediction_step
from diffopt_ros.modes import Backward, backward_mode
from diffopt_ros.mpc import DiffDriveLag, NeuralResidual
from diffopt_ros.progress import Progress, say

#: Backward modes that train through the MPC (``'none'`` gives no gradient).
TRAINING_MODES = (Backward.IMPLICIT, Backward.UNROLL)


def _announce(what: str, train_runs: Sequence[RunData], val_runs: Sequence[RunData]) -> None:
    """Say which runs train and which validate (rank 0 of torchrun only)."""
    if int(os.environ.get('RANK', '0')) != 0:
        return

    def names(runs):
        shown = ', '.join(run.where for run in runs[:6])
        return shown + (f', ... ({len(runs)} in all)' if len(runs) > 6 else '')

    n = len(train_runs) + len(val_runs)
    say(f'{what}: {n} run{"s" if n > 1 else ""}; training on {names(train_runs)}; '
        + (f'validating on {names(val_runs)}' if val_runs else 'no validation runs'))


def _config(out_dir, device, epochs, lr, batch_size, seed, resume, progress, optimizer, plots
            ) -> TrainConfig:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f'epochs must be a whole number >= 0 (0: evaluate only), got {epochs!r}')
    # L-BFGS steps on a deterministic loss: once it stops changing, further epochs are idle.
    return TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device,
                       out_dir=Path(out_dir), resume=None if resume is None else Path(resume),
                       progress=progress, optimizer=optimizer, plots=plots,
                       stop_tolerance=1e-9 if optimizer == 'lbfgs' else 0.0)


def learn_dynamics(runs: RunsArg, out_dir: str | os.PathLike, method: str = 'sysid',
                   backward: str = 'implicit', device: str = 'cpu', epochs: int | None = None,
                   lr: float | None = None, steps: int | None = None, dt: float | None = None,
                   residual: bool = False, robust: float | None = 0.3,
                   params_file: str | os.PathLike | None = None,
                   learned_file: str | os.PathLike | None = None, stride: int | None = None,
                   batch_size: int = 0, val_fraction: float = 0.25, seed: int = 0,
                   resume: str | os.PathLike | None = None, progress: bool = True,
                   optimizer: str | None = None, plots: bool = True,
                   state_topic: str | None = None, dtype: torch.dtype = torch.float64,
                   model: str = 'diff_drive_lag') -> LearnResult:
    """Fit the MPC's dynamics model (``model.gain_v``, ``model.gain_omega``, ``model.tau_v``,
    ``model.tau_omega``; for the Ackermann ``bicycle``: ``model.gain_v``, ``model.tau_v``,
    ``model.tau_steer``) and write ``out_dir/mpc.yaml``.

    Args:
        runs: recorded runs (paths or :class:`RunData`); the last ``val_fraction`` validate.
        out_dir: output folder.
        method: ``'sysid'`` (multi-step prediction of the recorded states under the recorded
            commands) or ``'e2e'`` (imitation of the recorded commands through the MPC: the runs
            must be demonstrations by the controller to imitate, with ``/goal_pose`` or
            ``/plan``).
        backward: ``'implicit'`` or ``'unroll'`` gradients through the MPC (``e2e``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        epochs: passes over the data (default 30 for sysid, 40 for e2e); 0 evaluates the
            starting values without training (losses, plots and their parameter file).
        lr: learning rate (default 1 for L-BFGS, 0.1 for Adam; log-parameters).
        steps: prediction steps per window (sysid; 1 = one-step prediction; default 0.5 s of
            steps).
        dt: window step (s); default: :func:`~diffopt_ros.learn.windows.prediction_step`
            (sysid: the command period of regular commands, else the state period), the MPC's
            ``dt`` (e2e).
        residual: also learn a neural residual (sysid; its weights go to the checkpoint only).
        robust: Cauchy loss scale for sysid, in units of the error scales (0.1 m, rad, m/s,
            rad/s); None: squared errors. Recorded runs hold what no actuator model explains
            (bumps into obstacles, acceleration limits); on the demo's bag 0.3 brought the
            learned lag from 2.2x to 1.08x the truth.
        params_file: mpc_node parameters to start from (default ``config/mpc.yaml``).
        learned_file: a learned mpc_node file applied on top of ``params_file``.
        stride: grid steps between window starts (default: a fifth of ``steps`` for sysid, 1
            for e2e).
        batch_size: windows per step (0: all).
        val_fraction: fraction of runs that validate.
        seed: random seed.
        resume: checkpoint to continue from.
        progress: show a progress bar.
        optimizer: ``'adam'`` or ``'lbfgs'`` (default: L-BFGS for sysid, whose loss is a smooth
            deterministic function of the parameters; Adam with warm-started solves for e2e).
        plots: draw the PNG plots.
        state_topic: Odometry topic of the states (default ``/ground_truth/odom`` where
            recorded, else ``/odom``); for e2e, the topic the imitated controller closed its
            loop on (the demo's MPC used ``/slam/odom``).
        dtype: floating-point type.
        model: ``'diff_drive_lag'`` or ``'bicycle'`` (an Ackermann car driven by Twists, seen as
            :class:`~diffopt_ros.mpc.bases.TwistBicycle`; sysid only; its wheelbase
            ``model.wheelbase`` and ``model.max_steer_rate``, ``bounds.max_steer`` are taken as
            given: from Twist commands the wheelbase cancels except where the steering saturates).

    Raises:
        DatasetError, diffopt_ros.bag.BagError: runs without the topics needed (named).
        ValueError: unknown ``method``, ``backward`` or ``model``.
    """
    if model not in ('diff_drive_lag', 'bicycle') or (model == 'bicycle' and method != 'sysid'):
        raise ValueError(f"learn_dynamics: model must be 'diff_drive_lag' or 'bicycle' (sysid only), "
                         f"got {model!r} with method {method!r}")
    if method not in ('sysid', 'e2e'):
        raise ValueError(f"learn_dynamics: method must be 'sysid' or 'e2e', got {method!r}")
    backward = backward_mode(backward, TRAINING_MODES, 'learn_dynamics')
    began = time.perf_counter()
    out_dir = Path(out_dir)
    optimizer = optimizer or ('lbfgs' if method == 'sysid' else 'adam')
    lr = lr or (1.0 if optimizer == 'lbfgs' else 0.1)
    params = mpc_params(params_file, learned_file)
    train_runs, val_runs = split_runs(as_runs(runs, (CMD_TOPIC,), state_topic), val_fraction)
    _announce('dynamics', train_runs, val_runs)
    torch.manual_seed(seed)
    if method == 'sysid':
        dt = dt or prediction_step(train_runs, state_topic)
        steps = steps or max(1, round(0.5 / dt))
        stride = stride or max(1, steps // 5)
        train_w = control_windows(train_runs, dt, steps, stride, state_topic=state_topic, dtype=dtype)
        val_w = (control_windows(val_runs, dt, steps, stride, state_topic=state_topic, dtype=dtype)
                 if val_runs else None)
        if model == 'bicycle':
            dynamics = twist_bicycle(dt, params).to(dtype)
        else:
            dynamics = DiffDriveLag(dt, **{k: float(params[f'model.{k}']) for k in DiffDriveLag.param_names})
            dynamics = dynamics.to(dtype)
        if residual:
            dynamics = NeuralResidual(dynamics).to(dtype)
        objective = PredictionObjective(dynamics, steps, robust=robust)
        start_model = {k: float(v) for k, v in objective.report().items()}
        cfg = _config(out_dir, device, 30 if epochs is None else epochs, lr, batch_size, seed, resume,
                      progress, optimizer, plots)
        result = train(objective, train_w.items(), val_w.items() if val_w is not None else None,
                       cfg, title='dynamics (system identification)',
                       on_end=lambda obj, ctx: ctx.rank == 0 and plots and _plot_prediction(
                           out_dir / 'prediction.png', val_w or train_w, start_model, obj))
    else:
        objective, train_w, val_w = _imitation(train_runs, val_runs, params, backward, dt, stride or 1,
                                               dtype, learn_dynamics=True, learn_cost=False,
                                               warm_start=optimizer != 'lbfgs',
                                               state_topic=state_topic)
        cfg = _config(out_dir, device, 40 if epochs is None else epochs, lr, batch_size, seed, resume,
                      progress, optimizer, plots)
        result = train(objective, train_w.items(),
                       val_w.items(len(train_w)) if val_w is not None else None, cfg,
                       title=f'dynamics (end to end, {backward})')
    return finish(result, out_dir, began, {'method_e2e': float(method == 'e2e'),
                                            'windows': float(len(train_w))})


def _plot_prediction(*args) -> None:
    from diffopt_ros.learn.plots import plot_prediction  # matplotlib only when plotting

    plot_prediction(*args)


def _imitation(train_runs, val_runs, params, backward, dt, stride, dtype, learn_dynamics,
               learn_cost, warm_start, state_topic
               ) -> tuple[ImitationObjective, ControlWindows, ControlWindows | None]:
    mpc = node_mpc(params, backward=backward, dtype=dtype, max_iterations=50, tolerance=1e-7)
    horizon, mpc_dt = mpc.horizon, mpc.dynamics.dt
    speed = float(params.get('reference_speed', 0.4))

    def windows(runs):
        w = control_windows(runs, dt or mpc_dt, 1, stride, ref_horizon=horizon, ref_dt=mpc_dt,
                            reference_speed=speed, state_topic=state_topic,
                            dtype=dtype).with_reference()
        if len(w) == 0:
            raise DatasetError(f'{", ".join(r.where for r in runs)}: no window with a goal '
                               f'(/goal_pose) or plan (/plan) to imitate the MPC on')
        return w

    train_w = windows(train_runs)
    val_w = windows(val_runs) if val_runs else None
    if learn_cost:
        tie_cost_weights(mpc)
        for name, p in mpc.cost.named_parameters():
            # weights.position fixes the scale: scaling all weights leaves the optimum unchanged.
            p.requires_grad_(True)
            if name == 'state_weight.log_values':
                p.register_hook(lambda g: torch.cat((torch.zeros_like(g[:1]), g[1:])))
    if learn_dynamics:
        for p in mpc.dynamics.parameters():
            p.requires_grad_(True)
    n_items = len(train_w) + (len(val_w) if val_w is not None else 0)
    return (ImitationObjective(mpc, n_items, report_cost=learn_cost, warm_start=warm_start),
            train_w, val_w)


def learn_cost(runs: RunsArg, out_dir: str | os.PathLike, backward: str = 'implicit',
               device: str = 'cpu', epochs: int = 40, lr: float = 0.05, dt: float | None = None,
               params_file: str | os.PathLike | None = None,
               learned_file: str | os.PathLike | None = None, with_dynamics: bool = False,
               stride: int = 1, batch_size: int = 0, val_fraction: float = 0.25, seed: int = 0,
               resume: str | os.PathLike | None = None, progress: bool = True,
               optimizer: str | None = None, plots: bool = True,
               state_topic: str | None = None, dtype: torch.dtype = torch.float64
               ) -> LearnResult:
    """Learn the MPC cost weights (``weights.*``; ``weights.position`` fixes the scale) by
    imitating demonstrations through the MPC (inverse optimal control); write
    ``out_dir/mpc.yaml`` with the model and the weights.

    Args:
        runs: demonstrations (paths or :class:`RunData`) with ``/cmd_vel`` and ``/goal_pose`` or
            ``/plan``; the last ``val_fraction`` validate.
        out_dir: output folder.
        backward: ``'implicit'`` or ``'unroll'``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        epochs: passes over the data (0: evaluate the starting values only).
        lr: Adam learning rate (log-weights).
        dt: window step (s); default the MPC's ``dt``.
        params_file: mpc_node parameters to start from (default ``config/mpc.yaml``).
        learned_file: a learned mpc_node file applied on top (e.g. learned dynamics).
        with_dynamics: learn the dynamics parameters at the same time.
        stride: grid steps between window starts.
        batch_size: windows per step (0: all).
        val_fraction: fraction of runs that validate.
        seed: random seed.
        resume: checkpoint to continue from.
        progress: show a progress bar.
        optimizer: ``'adam'`` (default) or ``'lbfgs'``.
        plots: draw the PNG plots.
        state_topic: Odometry topic the demonstrating controller closed its loop on (default
            ``/ground_truth/odom`` where recorded, else ``/odom``).
        dtype: floating-point type.
    """
    backward = backward_mode(backward, TRAINING_MODES, 'learn_cost')
    began = time.perf_counter()
    out_dir = Path(out_dir)
    params = mpc_params(params_file, learned_file)
    train_runs, val_runs = split_runs(as_runs(runs, (CMD_TOPIC,), state_topic), val_fraction)
    _announce('cost', train_runs, val_runs)
    torch.manual_seed(seed)
    optimizer = optimizer or 'adam'
    objective, train_w, val_w = _imitation(train_runs, val_runs, params, backward, dt, stride, dtype,
                                           learn_dynamics=with_dynamics, learn_cost=True,
                                           warm_start=optimizer != 'lbfgs', state_topic=state_topic)
    cfg = _config(out_dir, device, epochs, lr, batch_size, seed, resume, progress, optimizer,
                      plots)
    result = train(objective, train_w.items(),
                   val_w.items(len(train_w)) if val_w is not None else None, cfg,
                   title=f'cost (imitation, {backward})')
    return finish(result, out_dir, began, {'windows': float(len(train_w))})


def learn_slam(runs: RunsArg, out_dir: str | os.PathLike, backward: str = 'implicit',
               device: str = 'cpu', epochs: int = 30, lr: float = 0.1,
               params_file: str | os.PathLike | None = None,
               learned_file: str | os.PathLike | None = None, iterations: int = 20,
               backward_steps: int = 5, batch_size: int = 0, val_fraction: float = 0.25,
               seed: int = 0, resume: str | os.PathLike | None = None, progress: bool = True,
               optimizer: str | None = None, plots: bool = True,
               dtype: torch.dtype = torch.float64, window: int = 10) -> LearnResult:
    """Learn the slam_node weights (``weights.odom_xy``, ``weights.odom_yaw``,
    ``weights.scan_xy``, ``weights.scan_yaw``, ``robust.scale``) by back-propagating the
    keyframe trajectory error against ``/ground_truth/odom`` through the pose-graph solve;
    write ``out_dir/slam.yaml``.

    Args:
        runs: runs with ``/odom``, ``/scan`` and ``/ground_truth/odom`` (paths or
            :class:`RunData`); each is one item; the last ``val_fraction`` validate.
        out_dir: output folder.
        backward: ``'implicit'``, ``'unroll'``, ``'truncated'`` or ``'dlm'``.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (the front end replay runs on the CPU).
        epochs: passes over the runs (0: evaluate the starting values only).
        lr: learning rate (log-weights).
        params_file: slam_node parameters to start from (default ``config/slam.yaml``).
        learned_file: a learned slam_node file applied on top.
        iterations: Levenberg-Marquardt iterations per solve.
        backward_steps: steps of the ``truncated`` backward.
        batch_size: runs per step (0: all).
        val_fraction: fraction of runs that validate.
        seed: random seed.
        resume: checkpoint to continue from.
        progress: show a progress bar.
        optimizer: ``'adam'`` (default) or ``'lbfgs'``.
        plots: draw the PNG plots.
        dtype: floating-point type.
        window: keyframes per training graph: each training run's pose graph is cut into
            windows of this many keyframes, half overlapping, each a training item with its own
            error (0: whole runs; validation runs are scored whole). Whole-run errors of one
            run are dominated by a few drift directions and the weights learned from them
            overfit that run; many short windows average them out (README, "SLAM weights").

    Raises:
        DatasetError, diffopt_ros.bag.BagError: runs without the topics needed (named).
    """
    from diffopt_ros.learn.slam_weights import (
        Sequences,
        SlamObjective,
        keyframe_sequence,
        plot_sequences,
        slam_config,
        slam_params,
        sub_sequences,
        trajectory_rmse,
    )
    from diffopt_ros.nlls import BACKWARD_MODES
    from diffopt_ros.slam.graph import SlamWeights

    backward = backward_mode(backward, BACKWARD_MODES, 'learn_slam')
    if window < 0 or 0 < window < 3:
        raise ValueError(f'learn_slam: window must be 0 (whole runs) or at least 3 keyframes, '
                         f'got {window}')
    began = time.perf_counter()
    out_dir = Path(out_dir)
    params = slam_params(params_file, learned_file)
    config = slam_config(params)
    lead = int(os.environ.get('RANK', '0')) == 0     # torchrun: rank 0 tells what happens
    if lead:
        say('SLAM weights: reading the runs (/odom, /scan, /ground_truth/odom)')
    train_runs, val_runs = split_runs(as_runs(runs, ('/odom', '/scan', '/ground_truth/odom')),
                                      val_fraction)
    _announce('SLAM weights', train_runs, val_runs)
    n_scans = sum(len(run.scans.t) for run in (*train_runs, *val_runs) if run.scans is not None)
    n_runs = len(train_runs) + len(val_runs)
    with Progress(n_scans, f'SLAM weights: replaying the front end (scan matching) of {n_runs} '
                  f'run{"s" if n_runs > 1 else ""}', unit='scan', bar=progress, leave=False,
                  show=lead) as replay:
        whole = [keyframe_sequence(run, config, dtype, replay) for run in train_runs]
        val_whole = [keyframe_sequence(run, config, dtype, replay) for run in val_runs]
    train_items = [part for s in whole for part in sub_sequences(s, window)] if window > 0 else whole
    train_s = Sequences(train_items)
    val_s = Sequences(val_whole) if val_runs else None
    torch.manual_seed(seed)
    objective = SlamObjective(SlamWeights.from_params(params), backward, iterations, backward_steps)
    with torch.no_grad():
        scored = val_s.items if val_s else whole        # whole runs, not windows
        if lead:
            say(f'SLAM weights: solving {len(scored)} whole run{"s" if len(scored) > 1 else ""} '
                f'with the starting weights ({sum(len(s.graph.stamps) for s in scored)} keyframes), '
                f'then training on {len(train_items)} graph{"s" if len(train_items) > 1 else ""}')
        shown = scored[0]
        before_rmse = {s.name: trajectory_rmse(objective, s) for s in scored}
        before_poses = objective.solve(shown)

    def on_end(obj, ctx):
        if ctx.rank == 0 and plots:
            with torch.no_grad():
                plot_sequences(out_dir / 'trajectory.png', shown, before_poses, obj.solve(shown))

    cfg = _config(out_dir, device, epochs, lr, batch_size, seed, resume, progress,
                  optimizer or 'adam', plots)
    result = train(objective, train_s, val_s, cfg, title=f'SLAM weights ({backward})',
                   on_end=on_end)
    after_rmse = {s.name: trajectory_rmse(objective.cpu(), s) for s in scored}
    extra = {'ate_before': float(np.sqrt(np.mean(np.square(list(before_rmse.values()))))),
             'ate_after': float(np.sqrt(np.mean(np.square(list(after_rmse.values()))))),
             'keyframes': float(sum(len(s.graph.stamps) for s in whole)),
             'windows': float(len(train_items))}
    return finish(result, out_dir, began, extra, node='slam_node', name='slam.yaml')
