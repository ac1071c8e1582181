"""``diffopt-ros learn``: learn the MPC dynamics or cost, or the SLAM weights, from recorded runs.

Examples::

    diffopt-ros learn dynamics runs/run_1 --out out/dyn            # system identification
    diffopt-ros learn dynamics runs/ --method e2e --backward implicit --out out/dyn_e2e
    diffopt-ros learn cost runs/demos --learned-file out/dyn/mpc.yaml --out out/cost
    diffopt-ros learn slam runs/ --backward implicit --out out/slam
    torchrun --nproc_per_node 2 -m diffopt_ros.learn.cli dynamics runs/ --out out/dyn

Each writes ``metrics.csv``, ``loss.png``, a task plot, ``checkpoint.pt`` (``--resume`` it)
and the learned ROS parameter file (``mpc.yaml`` / ``slam.yaml``; ``--yaml`` copies it
elsewhere) into ``--out``; an earlier result there is kept (exit 2) unless ``--force``.
A run argument may be a folder of runs at any depth (the demo's ``runs/demo_<date>-<time>``).
Relaunch a node with the result:
``mpc_node --ros-args -p learned_params_file:=out/dyn/mpc.yaml``.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path


def _whole(minimum: int):
    """argparse type: a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value
    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'expected a finite number, got {text!r}')
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f'must be in [0, 1) (at least one run trains), got {text}')
    return value


def _common(parser: argparse.ArgumentParser, default_out: str, epochs: str, lr: str,
            optimizer: str) -> None:
    parser.add_argument('runs', nargs='+', metavar='RUN',
                        help='rosbag2 runs (folders or .mcap/.db3 files) or folders of runs, at '
                             'any depth (such as the demo\'s runs/demo_<date>-<time>)')
    parser.add_argument('--out', default=default_out,
                        help='output folder (default %(default)s); an earlier result there is '
                             'not overwritten unless --force')
    parser.add_argument('--force', action='store_true',
                        help='overwrite an earlier result in --out (and the --yaml file)')
    parser.add_argument('--yaml', help='also copy the learned parameter file here')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default %(default)s)')
    parser.add_argument('--epochs', type=_whole(0),
                        help=f'passes over the data (default {epochs}); 0 evaluates the starting '
                             'values without training (losses, plots and their parameter file)')
    parser.add_argument('--lr', type=_positive, help=f'learning rate (default {lr})')
    parser.add_argument('--optimizer', choices=('adam', 'lbfgs'),
                        help=f'optimizer (default {optimizer})')
    parser.add_argument('--batch-size', type=_whole(0), default=0,
                        help='items per step over all processes; 0 = all (default)')
    parser.add_argument('--val-fraction', type=_fraction, default=0.25,
                        help='fraction of the runs (the last ones) kept for validation, in [0, 1) '
                             '(default %(default)s; a single run always trains)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--resume', help='checkpoint.pt to continue from')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar: a plain line every 10 s instead (as in a log file)')
    parser.add_argument('--no-plots', action='store_true', help='no PNG plots')


def _mpc_files(parser: argparse.ArgumentParser, imitation: bool) -> None:
    parser.add_argument('--params-file', help='mpc_node parameters to start from '
                                              '(default: config/mpc.yaml)')
    parser.add_argument('--learned-file', help='learned mpc_node file applied on top (e.g. the '
                                               'mpc.yaml of "learn dynamics")')
    if imitation:
        parser.add_argument('--dt', type=_positive, help='window step (s; default: the MPC dt)')
        parser.add_argument('--state-topic',
                            help='Odometry topic the recorded controller closed its loop on '
                                 '(default /ground_truth/odom, else /odom)')
        parser.add_argument('--stride', type=_whole(1), default=1,
                            help='grid steps between windows (default 1)')
    else:
        parser.add_argument('--dt', type=_positive,
                            help='window step (s); default: the command period (sysid; the state '
                                 'period if commands are irregular) or the MPC dt (e2e)')
        parser.add_argument('--state-topic',
                            help='Odometry topic of the states (default /ground_truth/odom, else '
                                 '/odom); e2e: the topic the recorded controller used')
        parser.add_argument('--stride', type=_whole(1),
                            help='grid steps between windows (default: steps/5 for sysid, 1 for '
                                 'e2e)')


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
    _common(dyn, 'learned/dynamics', '30 for sysid, 40 for e2e', '1 for lbfgs, 0.1 for adam',
            'lbfgs for sysid, adam for e2e')
    _mpc_files(dyn, imitation=False)
    dyn.add_argument('--method', choices=('sysid', 'e2e'), default='sysid',
                     help='sysid: multi-step prediction of the recorded states; e2e: imitate the '
                          'recorded commands through the MPC (demonstrations) (default sysid)')
    dyn.add_argument('--backward', choices=('implicit', 'unroll'), default='implicit',
                     help='gradient through the MPC (e2e; default implicit)')
    dyn.add_argument('--steps', type=_whole(1),
                     help='prediction steps per window (sysid; 1 = one-step) (default: 0.5 s)')
    dyn.add_argument('--robust', type=_non_negative, default=0.3,
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
    _common(cost, 'learned/cost', '40', '0.05', 'adam')
    _mpc_files(cost, imitation=True)
    cost.add_argument('--backward', choices=('implicit', 'unroll'), default='implicit',
                      help='gradient through the MPC: implicit (KKT conditions at the solution) '
                           'or unroll (through the solver iterations) (default implicit)')
    cost.add_argument('--with-dynamics', action='store_true', help='learn model.* at the same time')

    slam = sub.add_parser('slam', help='the SLAM factor weights (weights.*, robust.scale)',
                          description='Learn slam_node weights by back-propagating the trajectory '
                                      'error against /ground_truth/odom through the pose-graph solve.')
    _common(slam, 'learned/slam', '30', '0.1', 'adam')
    slam.add_argument('--backward', choices=('implicit', 'unroll', 'truncated', 'dlm'),
                      default='implicit', help='gradient through the solve (default implicit)')
    slam.add_argument('--params-file', help='slam_node parameters to start from '
                                            '(default: config/slam.yaml)')
    slam.add_argument('--learned-file', help='learned slam_node file applied on top')
    slam.add_argument('--window', type=_whole(0), default=10,
                      help='keyframes per training graph: each training run is cut into windows '
                           'of this many keyframes, half overlapping (0: whole runs; default 10; '
                           'whole runs overfit the run, see README)')
    return parser


RESULT_FILES = {'dynamics': 'mpc.yaml', 'cost': 'mpc.yaml', 'slam': 'slam.yaml'}


def _earlier_result(args: argparse.Namespace) -> tuple[str, str] | None:
    """Why writing this result would overwrite an earlier one, and the option to change
    (None: it would not).

    An earlier result is a learned parameter file, ``checkpoint.pt`` or ``metrics.csv`` in
    ``--out``, or an existing ``--yaml`` file. Continuing the run whose checkpoint is in
    ``--out`` (``--resume OUT/checkpoint.pt``) is not overwriting it.
    """
    out = Path(args.out)
    names = [n for n in (RESULT_FILES[args.task], 'checkpoint.pt', 'metrics.csv') if (out / n).exists()]
    resuming = args.resume is not None and Path(args.resume).resolve() == (out / 'checkpoint.pt').resolve()
    if names and not resuming:
        return f'{out}: holds an earlier result ({", ".join(names)})', '--out'
    if args.yaml and Path(args.yaml).exists():
        return f'{args.yaml}: exists', '--yaml'
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``diffopt-ros learn TASK ...``; 0 on success, 2 on bad input (arguments, runs, files),
    also when ``--out`` holds an earlier result and ``--force`` is not given."""
    parser = _parser()
    args = parser.parse_args(argv)
    where = f'diffopt-ros learn {args.task}'
    clash = None if args.force else _earlier_result(args)
    if clash:
        print(f'{where}: error: {clash[0]}; give --force to overwrite it, or another {clash[1]}',
              file=sys.stderr)
        return 2
    # torch and rosbags load only now: --help and argument errors answer at once
    from diffopt_ros.bag import BagError
    from diffopt_ros.learn import api
    from diffopt_ros.learn.datasets import DatasetError
    from diffopt_ros.learn.export import ExportError

    common = dict(device=args.device, batch_size=args.batch_size, val_fraction=args.val_fraction,
                  seed=args.seed, resume=args.resume, progress=not args.no_progress,
                  optimizer=args.optimizer, plots=not args.no_plots)
    common.update({k: v for k, v in (('epochs', args.epochs), ('lr', args.lr)) if v is not None})
    try:
        if args.task == 'dynamics':
            result = api.learn_dynamics(
                args.runs, args.out, method=args.method, backward=args.backward,
                steps=args.steps, dt=args.dt, residual=args.residual, robust=args.robust or None,
                params_file=args.params_file, learned_file=args.learned_file, stride=args.stride,
                state_topic=args.state_topic, model=args.model, **common)
        elif args.task == 'cost':
            result = api.learn_cost(
                args.runs, args.out, backward=args.backward, dt=args.dt,
                params_file=args.params_file, learned_file=args.learned_file,
                with_dynamics=args.with_dynamics, stride=args.stride,
                state_topic=args.state_topic, **common)
        else:
            result = api.learn_slam(args.runs, args.out, backward=args.backward,
                                    params_file=args.params_file, learned_file=args.learned_file,
                                    window=args.window, **common)
    except (BagError, DatasetError, ExportError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f'{where}: error: {exc}', file=sys.stderr)
        return 2
    if result.yaml_path is not None:   # rank 0
        if args.yaml:
            Path(args.yaml).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.yaml_path, args.yaml)
        print(summary(result, args.yaml))
    return 0


def summary(result, yaml_copy: str | None = None) -> str:
    """What was learned, the losses before -> after (validation only when runs were kept for
    it), the time and the files written."""
    m = result.metrics
    validation = (f' (validation {m["val_loss_before"]:.4g} -> {m["val_loss"]:.4g})'
                  if 'val_loss' in m else ' (no validation runs)')
    lines = [f'learned {", ".join(f"{k}={v:.6g}" for k, v in result.params.items())}',
             f'loss {m["train_loss_before"]:.4g} -> {m["train_loss"]:.4g}{validation} in '
             f'{m["epochs"]:.0f} epochs, {m["seconds"]:.1f} s; wrote {result.yaml_path}'
             + (f' and {yaml_copy}' if yaml_copy else '')]
    if 'ate_before' in m:
        lines.append(f'keyframe ATE (RMSE, validation runs or else training runs) '
                     f'{m["ate_before"]:.4f} m -> {m["ate_after"]:.4f} m')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
