"""diffopt-ros pgo FILE: solve a g2o/TORO/GTSAM pose graph with LM or GN, print progress and errors.

The first pose (or the poses the file FIXes) gets a tight prior, as GTSAM's examples do; errors
are GTSAM's 0.5 sum ||r||^2_Sigma. Point landmarks (VERTEX_XY, EDGE_SE2_XY, LANDMARK2, BR,
LANDMARK, VERTEX_TRACKXYZ, EDGE_SE3_TRACKXYZ) are solved together with the poses. --out writes
the input file back with the optimized vertices (every other line kept), --plot draws the graph
before and after (x-y projection for 3D). Exit status: 0 solved, 1 the file or the solve
failed, 2 a usage error (checked before anything is read or solved).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

# Measured (bench/RESULTS.md, "diffopt-ros pgo as a user runs it, and its thread default"): on the
# 2-core machine with other jobs running, the w10000 and sphere2500 solves took 2.5-5x longer
# with two intra-op threads than with one; the sparse factorization is single-threaded either way
# and the per-edge tensor operations are too small to split.
DEFAULT_THREADS = 1
LAMBDA_FACTOR = 10.0
_PLOT_FORMATS = ('png', 'pdf', 'svg', 'jpg', 'jpeg', 'eps', 'ps', 'tif', 'tiff', 'webp')
_DEVICE = re.compile(r'^(cpu|cuda(:\d+)?)$')


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not >= 1')
    return value


def command_optimizer(objective, solver: str = 'lm', linear: str = 'auto', max_iterations: int = 100,
                      **options):
    """The command's :class:`~diffopt_ros.nlls.optimizer.Optimizer` for ``objective``: GTSAM's
    damping schedule (divide / multiply by ``LAMBDA_FACTOR``; on the hard gtsam/Data files,
    w20000 and victoria_park, Nielsen's adaptive update stalls at several times GTSAM's error)
    and GTSAM's count of iterations, ``max_iterations`` accepted steps (the tries of a step are
    bounded by the damping's range). ``options``: further :class:`Optimizer` arguments (the
    benchmarks' tolerances and sparse back end)."""
    from diffopt_ros.nlls.optimizer import Optimizer
    return Optimizer(objective, method=solver, linear_solver=linear, max_iterations=None,
                     max_steps=max_iterations, lambda_factor=LAMBDA_FACTOR, **options)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='diffopt-ros pgo', description=__doc__.split('\n\n')[0],
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('file', help='pose graph (.g2o, or TORO .graph / sphere2500-style .txt)')
    p.add_argument('--solver', choices=('lm', 'gn'), default='lm', help='nonlinear solver (default lm)')
    p.add_argument('--linear', choices=('auto', 'dense', 'sparse'), default='auto',
                   help='linear solver (default auto: sparse Cholesky on the CPU except for tiny problems)')
    p.add_argument('--device', default='cpu', help='torch device: cpu, cuda or cuda:N (default cpu)')
    p.add_argument('--dtype', choices=('float64', 'float32'), default='float64',
                   help='floating-point type of the solve (default float64)')
    p.add_argument('--max-iterations', type=_positive_int, default=100,
                   help='iteration cap of the solver, counted as GTSAM counts them: an iteration '
                        'linearizes once and tries dampings until a step decreases the error '
                        '(default 100)')
    p.add_argument('--threads', type=_positive_int, default=DEFAULT_THREADS,
                   help=f'torch intra-op threads (default {DEFAULT_THREADS}: measured fastest, '
                        f'see bench/RESULTS.md)')
    p.add_argument('--out', help='write the input file with the optimized vertices to this path')
    p.add_argument('--plot', help=f'draw the graph before/after to this image ({", ".join(_PLOT_FORMATS)})')
    p.add_argument('--quiet', action='store_true', help='no progress lines (one per try)')
    return p


def _usage_error(args) -> str | None:
    """What is wrong with the arguments, checked before reading or solving; None if nothing."""
    src = Path(args.file)
    if not src.exists():
        return f'{args.file}: no such file'
    if not src.is_file():
        return f'{args.file}: not a regular file'
    if not os.access(src, os.R_OK):
        return f'{args.file}: not readable'
    if not _DEVICE.match(args.device):
        return f'--device {args.device!r}: choose cpu, cuda or cuda:N'
    for option, value in (('--out', args.out), ('--plot', args.plot)):
        if value is None:
            continue
        target = Path(value)
        parent = target.parent if str(target.parent) else Path('.')
        if target.is_dir():
            return f'{option} {value}: is a folder; give a file name'
        if not parent.is_dir():
            return f'{option} {value}: folder {parent} does not exist'
        if not os.access(parent, os.W_OK):
            return f'{option} {value}: folder {parent} is not writable'
        if target.resolve() == src.resolve():
            return f'{option} {value}: would overwrite the input file'
    if args.plot is not None:
        suffix = Path(args.plot).suffix.lower().lstrip('.')
        if suffix not in _PLOT_FORMATS:
            return (f'--plot {args.plot}: unknown image format {suffix!r}; '
                    f'use one of {", ".join(_PLOT_FORMATS)}')
    return None


def _plot(path: str, data, before, after) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch

    def xy(p):
        p = p.detach().cpu().double()
        return (p[:, 0], p[:, 1]) if p.dim() == 2 else (p[:, 0, 3], p[:, 1, 3])

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, poses, title in zip(axes, (before, after), ('initial', 'optimized')):
        x, y = xy(poses)
        ax.plot(x.numpy(), y.numpy(), '-', lw=0.5, color='tab:blue')
        loops = (data.j - data.i).abs() > 1
        xs = torch.stack((x[data.i[loops]], x[data.j[loops]]))
        ys = torch.stack((y[data.i[loops]], y[data.j[loops]]))
        ax.plot(xs.numpy(), ys.numpy(), '-', lw=0.2, color='tab:red', alpha=0.3)
        ax.set_title(f'{title} ({len(x)} poses, {int(loops.sum())} loop edges)')
        ax.set_aspect('equal')
        ax.set_xlabel('x (m)')
        ax.set_ylabel('y (m)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``diffopt-ros pgo``."""
    args = _parser().parse_args(argv)
    problem = _usage_error(args)
    if problem:
        print(f'diffopt-ros pgo: error: {problem}', file=sys.stderr)
        return 2
    from diffopt_ros.threads import limit_threads_before_import
    limit_threads_before_import(args.threads)
    # the file is read and checked before torch is imported: a malformed file answers at once
    from diffopt_ros.nlls.io import GraphFormatError, parse_graph, to_tensors, write_solution

    t0 = time.perf_counter()
    try:
        parsed = parse_graph(args.file)
    except GraphFormatError as exc:
        print(f'diffopt-ros pgo: {exc}', file=sys.stderr)
        return 1
    except OSError as exc:
        print(f'diffopt-ros pgo: {args.file}: {exc.strerror or exc}', file=sys.stderr)
        return 1
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    import torch

    from diffopt_ros.nlls.pose_graph import objective_from_data
    t_import = time.perf_counter() - t0

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print(f'diffopt-ros pgo: error: --device {args.device}: CUDA is not available here', file=sys.stderr)
        return 2
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        print(f'diffopt-ros pgo: error: --device {args.device}: this machine has '
              f'{torch.cuda.device_count()} CUDA device(s)', file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    data = to_tensors(parsed, dtype)
    t0 = time.perf_counter()
    objective, poses, points = objective_from_data(data, device, dtype)
    opt = command_optimizer(objective, args.solver, args.linear, args.max_iterations)
    t_setup = time.perf_counter() - t0
    n_points = 0 if points is None else points.num
    n_sightings = sum(len(p.pose) for p in data.point_edges)
    print(f'{args.file}: {data.group.name}, {len(data.ids)} poses, {len(data.i)} edges'
          + (f', {n_points} points, {n_sightings} point edges' if n_points else '')
          + f', {opt.objective.dim} unknowns, {opt.linear.kind} Cholesky'
          + (f' ({opt.linear.backend})' if opt.linear.kind == 'sparse' else '') + f' on {device}, '
          f'{args.threads} thread{"s" if args.threads > 1 else ""} '
          f'(read {t_read:.2f} s, torch import {t_import:.2f} s, structure {t_setup:.2f} s)')
    for note in data.notes:
        print(f'  note: {note}')
    t_start = time.perf_counter()

    def progress(it, err, lam, accepted):
        print(f'  try {it + 1:3d}  error {float(err[0]):.6g}  lambda {float(lam[0]):.1e}  '
              f'{"accepted" if bool(accepted[0]) else "rejected"}  {time.perf_counter() - t_start:.2f} s',
              flush=True)

    with torch.no_grad():
        result = opt.solve(callback=None if args.quiet else progress)
    status = result.status[0]
    print(f'initial error {float(result.initial_error[0]):.6f}  final error {float(result.error[0]):.6f}  '
          f'iterations {int(result.steps[0])} ({int(result.iterations[0])} tries)  {status}  '
          f'time {result.seconds:.3f} s')
    solved = {v.name: x[0] for v, x in zip(objective.variables, result.values)}
    pose_solution = solved['poses']
    point_solution = solved.get('points', None if points is None else points.value[0])
    try:
        if args.out:
            write_solution(args.out, data, pose_solution, point_solution)
            print(f'wrote {args.out}')
        if args.plot:
            _plot(args.plot, data, poses.value[0], pose_solution)
            print(f'wrote {args.plot}')
    except OSError as exc:
        print(f'diffopt-ros pgo: cannot write: {exc}', file=sys.stderr)
        return 1
    if status not in ('converged', 'max_iterations'):
        print(f'diffopt-ros pgo: the solver stopped: {status} (no step could decrease the error)',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
