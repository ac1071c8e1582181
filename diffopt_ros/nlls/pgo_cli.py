"""``diffopt-ros pgo FILE``: solve a g2o/TORO pose graph with LM or GN, print progress and errors.

The first pose gets a tight prior (as GTSAM's examples do), errors are GTSAM's
``0.5 sum ||r||^2_Sigma``. ``--out`` writes the solution as g2o, ``--plot`` draws the graph
before and after (x-y projection for 3D).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from diffopt_ros.nlls.factors import Between, Prior
from diffopt_ros.nlls.io import GraphFormatError, read_graph, write_g2o
from diffopt_ros.nlls.objective import Objective
from diffopt_ros.nlls.optimizer import Optimizer
from diffopt_ros.nlls.variables import Variable


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='diffopt-ros pgo', description=__doc__.split('\n\n')[0])
    p.add_argument('file', help='pose graph (.g2o, or TORO .graph / sphere2500-style .txt)')
    p.add_argument('--solver', choices=('lm', 'gn'), default='lm', help='nonlinear solver (default lm)')
    p.add_argument('--linear', choices=('auto', 'dense', 'sparse'), default='auto',
                   help='linear solver (default auto: sparse CHOLMOD on the CPU except for tiny problems)')
    p.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda (default cpu)')
    p.add_argument('--dtype', choices=('float64', 'float32'), default='float64')
    p.add_argument('--max-iterations', type=int, default=100)
    p.add_argument('--out', help='write the solution to this g2o file')
    p.add_argument('--plot', help='draw the graph before/after to this image (e.g. result.png)')
    p.add_argument('--quiet', action='store_true', help='no per-iteration progress lines')
    return p


def _plot(path: str, data, before: torch.Tensor, after: torch.Tensor) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

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
    dtype = getattr(torch, args.dtype)
    try:
        device = torch.device(args.device)
        if device.type == 'cuda' and not torch.cuda.is_available():
            print('pgo: --device cuda requested but CUDA is not available', file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        data = read_graph(args.file, dtype=dtype)
    except (OSError, GraphFormatError) as exc:
        print(f'pgo: {exc}', file=sys.stderr)
        return 1
    t_read = time.perf_counter() - t0
    poses0 = data.poses.to(device)
    var = Variable(data.group, poses0, name='poses')
    d = data.group.dof
    prior = Prior(var, [0], poses0[:1], 1e6 * torch.eye(d, dtype=dtype, device=device))
    between = Between(var, data.i, data.j, data.measurements.to(device), data.information.to(device))
    t0 = time.perf_counter()
    opt = Optimizer(Objective([prior, between]), method=args.solver, linear_solver=args.linear,
                    max_iterations=args.max_iterations)
    t_setup = time.perf_counter() - t0
    print(f'{args.file}: {data.group.name}, {len(data.ids)} poses, {len(data.i)} edges, '
          f'{opt.objective.dim} unknowns, {opt.linear.kind} Cholesky on {device} '
          f'(read {t_read:.2f} s, structure {t_setup:.2f} s)')
    t_start = time.perf_counter()

    def progress(it, err, lam, accepted):
        print(f'  iter {it + 1:3d}  error {float(err[0]):.6g}  lambda {float(lam[0]):.1e}  '
              f'{"accepted" if bool(accepted[0]) else "rejected"}  {time.perf_counter() - t_start:.2f} s',
              flush=True)

    with torch.no_grad():
        result = opt.solve(callback=None if args.quiet else progress)
    print(f'initial error {float(result.initial_error[0]):.6f}  final error {float(result.error[0]):.6f}  '
          f'iterations {int(result.iterations[0])}  {result.status[0]}  time {result.seconds:.3f} s')
    solution = result.values[0][0]
    if args.out:
        write_g2o(args.out, data, solution)
        print(f'wrote {args.out}')
    if args.plot:
        _plot(args.plot, data, poses0, solution)
        print(f'wrote {args.plot}')
    return 0 if result.status[0] in ('converged', 'max_iterations') else 1


if __name__ == '__main__':
    sys.exit(main())
