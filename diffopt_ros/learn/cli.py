"""``diffopt-ros learn``: learn the MPC dynamics or cost, or the SLAM weights, from recorded runs.

Examples::

    diffopt-ros learn dynamics runs/run_1 --out out/dyn            # system identification
    diffopt-ros learn dynamics runs/ --method e2e --backward implicit --out out/dyn_e2e
    diffopt-ros learn cost runs/demos --learned-file out/dyn/mpc.yaml --out out/cost
    diffopt-ros learn slam runs/ --backward implicit --out out/slam
    torchrun --nproc_per_node 2 -m diffopt_ros.learn.cli dynamics runs/ --out out/dyn

Each writes ``metrics.csv``, ``loss.png``, a task plot, ``checkpoint.pt`` (``--resume`` it)
and the learned ROS parameter file (``mpc.yaml`` / ``slam.yaml``; ``--yaml`` copies it
elsewhere) into ``--out``. Relaunch a node with it:
``mpc_node --ros-args -p learned_params_file:=out/dyn/mpc.yaml``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from diffopt_ros.bag import BagError
from diffopt_ros.learn.datasets import DatasetError
from diffopt_ros.learn.export import ExportError


def _common(parser: argparse.ArgumentParser, default_out: str, epochs: int | None,
            lr: float | None) -> None:
    parser.add_argument('runs', nargs='+', help='rosbag2 runs (folders or .mcap/.db3 files) or '
                                                'folders of runs')
    parser.add_argument('--out', default=default_out, help='output folder (default %(default)s)')
    parser.add_argument('--yaml', help='also copy the learned parameter file here')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default %(default)s)')
    parser.add_argument('--epochs', type=int, default=epochs,
                        help='passes over the data' + (f' (default {epochs})' if epochs else
                                                       ' (default: per method)'))
    parser.add_argument('--lr', type=float, default=lr,
                        help='learning rate' + (f' (default {lr})' if lr else ' (default: per optimizer)'))
    parser.add_argument('--optimizer', choices=('adam', 'lbfgs'),
                        help='optimizer (default: lbfgs for sysid, adam otherwise)')
    parser.add_argument('--batch-size', type=int, default=0,
                        help='items per step over all processes; 0 = all (default)')
    parser.add_argument('--val-fraction', type=float, default=0.25,
                        help='fraction of the runs (the last ones) kept for validation')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--resume', help='checkpoint.pt to continue from')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--no-plots', action='store_true', help='no PNG plots')


def _mpc_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--params-file', help='mpc_node parameters to start from '
                                              '(default: config/mpc.yaml)')
    parser.add_argument('--learned-file', help='learned mpc_node file applied on top')
    parser.add_argument('--dt', type=float, help='window step (s); default: the command period '
                                                 '(sysid; the state period if commands are '
                                                 'irregular) or the MPC dt (through the MPC)')
    parser.add_argument('--state-topic',
                        help='Odometry topic of the states (default /ground_truth/odom, else /odom); '
                             'through the MPC: the topic the recorded controller used')
    parser.add_argument('--stride', type=int,
                        help='grid steps between windows (default: steps/5 for sysid, else 1)')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros learn',
        description='Learn from recorded rosbag2 runs, end to end through the optimizers, and '
                    'write ROS parameter files that mpc_node / slam_node load unchanged '
                    '(learned_params_file). Runs under torchrun for data-parallel training.')
    sub = parser.add_subparsers(dest='task', metavar='TASK', required=True)

    dyn = sub.add_parser('dynamics', help='the MPC model: gains and lags (model.*)',
                         description='Fit DiffDriveLag (model.gain_v, model.gain_omega, '
                                     'model.tau_v, model.tau_omega) by system identification or '
                                     'by imitation through the MPC.')
    _common(dyn, 'learned/dynamics', None, None)
    _mpc_files(dyn)
    dyn.add_argument('--method', choices=('sysid', 'e2e'), default='sysid',
                     help='sysid: multi-step prediction of the recorded states; e2e: imitate the '
                          'recorded commands through the MPC (demonstrations) (default sysid)')
    dyn.add_argument('--backward', choices=('implicit', 'unroll'), default='implicit',
                     help='gradient through the MPC (e2e; default implicit)')
    dyn.add_argument('--steps', type=int,
                     help='prediction steps per window (sysid; 1 = one-step) (default: 0.5 s)')
    dyn.add_argument('--robust', type=float, default=0.3,
                     help='Cauchy loss scale of sysid errors (units of 0.1 m, rad, m/s, rad/s); '
                          '0 = squared errors (default %(default)s)')
    dyn.add_argument('--residual', action='store_true',
                     help='also learn a neural residual (sysid; kept in checkpoint.pt only)')
    dyn.add_argument('--model', choices=('diff_drive_lag', 'bicycle'), default='diff_drive_lag',
                     help='the robot base: diff_drive_lag, or bicycle for an Ackermann car '
                          '(sysid; learns model.gain_v, model.tau_v, model.tau_steer) '
                          '(default %(default)s)')

    cost = sub.add_parser('cost', help='the MPC cost weights (weights.*) from demonstrations',
                          description='Learn the MPC cost weights by imitating demonstrations '
                                      'through the MPC (inverse optimal control); '
                                      'weights.position stays fixed (it sets the scale).')
    _common(cost, 'learned/cost', 40, 0.05)
    _mpc_files(cost)
    cost.add_argument('--backward', choices=('implicit', 'unroll'), default='implicit')
    cost.add_argument('--with-dynamics', action='store_true', help='learn model.* at the same time')

    slam = sub.add_parser('slam', help='the SLAM factor weights (weights.*, robust.scale)',
                          description='Learn slam_node weights by back-propagating the trajectory '
                                      'error against /ground_truth/odom through the pose-graph solve.')
    _common(slam, 'learned/slam', 30, 0.1)
    slam.add_argument('--backward', choices=('implicit', 'unroll', 'truncated', 'dlm'),
                      default='implicit', help='gradient through the solve (default implicit)')
    slam.add_argument('--params-file', help='slam_node parameters to start from '
                                            '(default: config/slam.yaml)')
    slam.add_argument('--learned-file', help='learned slam_node file applied on top')
    slam.add_argument('--window', type=int, default=10,
                      help='keyframes per training graph: each training run is cut into windows '
                           'of this many keyframes, half overlapping (0: whole runs; default 10; '
                           'whole runs overfit the run, see README)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``diffopt-ros learn TASK ...``; 0 on success, 2 on bad input."""
    args = _parser().parse_args(argv)
    from diffopt_ros.learn import api

    common = dict(device=args.device, batch_size=args.batch_size, val_fraction=args.val_fraction,
                  seed=args.seed, resume=args.resume, progress=not args.no_progress, lr=args.lr,
                  optimizer=args.optimizer, plots=not args.no_plots)
    try:
        if args.task == 'dynamics':
            result = api.learn_dynamics(
                args.runs, args.out, method=args.method, backward=args.backward, epochs=args.epochs,
                steps=args.steps, dt=args.dt, residual=args.residual, robust=args.robust or None,
                params_file=args.params_file, learned_file=args.learned_file, stride=args.stride,
                state_topic=args.state_topic, model=args.model, **common)
        elif args.task == 'cost':
            result = api.learn_cost(
                args.runs, args.out, backward=args.backward, epochs=args.epochs, dt=args.dt,
                params_file=args.params_file, learned_file=args.learned_file,
                with_dynamics=args.with_dynamics, stride=args.stride or 1,
                state_topic=args.state_topic, **common)
        else:
            result = api.learn_slam(args.runs, args.out, backward=args.backward, epochs=args.epochs,
                                    params_file=args.params_file, learned_file=args.learned_file,
                                    window=args.window, **common)
    except (BagError, DatasetError, ExportError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f'diffopt-ros learn {args.task}: error: {exc}', file=sys.stderr)
        return 2
    if result.yaml_path is not None:   # rank 0
        if args.yaml:
            Path(args.yaml).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.yaml_path, args.yaml)
        m = result.metrics
        print(f'learned {", ".join(f"{k}={v:.6g}" for k, v in result.params.items())}')
        print(f'loss {m["train_loss_before"]:.4g} -> {m["train_loss"]:.4g} (validation '
              f'{m["val_loss_before"]:.4g} -> {m["val_loss"]:.4g}) in {m["seconds"]:.1f} s; '
              f'wrote {result.yaml_path}' + (f' and {args.yaml}' if args.yaml else ''))
        if 'ate_before' in m:
            print(f'keyframe ATE (RMSE, validation runs or else training runs) '
                  f'{m["ate_before"]:.4f} m -> {m["ate_after"]:.4f} m')
    return 0


if __name__ == '__main__':
    sys.exit(main())
