"""Same-process A/B of the supernodal factorization: another checkout's ``supernodal.py`` against this one.

Both modules are loaded in one process and factorize (and solve with) the same matrix, alternating
run by run, so both see the same machine load: the damped Gauss-Newton matrix of w10000 and
sphere2500 (gtsam/Data) at their initial values, damping 1e-5 (the first LM try of
``diffopt-ros pgo``). Prints, per file and per checkout, the minimum and median CPU milliseconds
(process time) of one factorization and of one solve, and the largest difference of the two
solutions relative to the largest entry. Run:
``python bench/supernodal_ab.py --base /path/to/other/checkout [--runs 15]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))

from diffopt_ros.nlls.io import read_graph  # noqa: E402
from diffopt_ros.nlls.optimizer import Optimizer  # noqa: E402
from diffopt_ros.nlls.pose_graph import objective_from_data  # noqa: E402

MODULE = Path('diffopt_ros', 'nlls', 'supernodal.py')


def load(name: str, root: Path):
    """The ``supernodal`` module of the checkout at ``root``, under the name ``name``."""
    spec = importlib.util.spec_from_file_location(name, root / MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def damped_matrix(path: str):
    """``(system, values (nnz,))``: the sparse pattern of the file's objective and its damped
    Gauss-Newton matrix at the initial values."""
    obj, _, _ = objective_from_data(read_graph(path))
    opt = Optimizer(obj, sparse_backend='superlu')  # the pattern only; no factorization here
    lin = obj.linearize(obj.initial_values(), obj.sqrt_informations())
    H, _ = opt._damped(opt.linear.assemble(lin.blocks), torch.full((1,), 1e-5, dtype=torch.float64))
    return opt.linear, H[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--base', required=True, help='root of the other checkout')
    p.add_argument('--runs', type=int, default=15, help='runs per checkout and file (default 15)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import gtsam
    modules = {'base': load('supernodal_base', Path(args.base)),
               'this': load('supernodal_this', HERE.parents[1])}
    for name in ('sphere2500.txt', 'w10000.graph'):
        system, values = damped_matrix(gtsam.findExampleDataFile(name))
        pattern = (system.n, system._rows_np, system._cols_np, system._block_start, system._block_dof,
                   system._block_pairs)
        symbolic = {k: m.SupernodalCholesky(*pattern) for k, m in modules.items()}
        b = np.random.default_rng(0).random(system.n)
        times = {k: ([], []) for k in modules}
        x = {}
        for _ in range(args.runs):
            for k, sym in symbolic.items():
                t0 = time.process_time()
                factor = sym.factorize(values)
                t1 = time.process_time()
                x[k] = factor.solve(b)
                times[k][0].append(t1 - t0)
                times[k][1].append(time.process_time() - t1)
        diff = np.abs(x['this'] - x['base']).max() / np.abs(x['base']).max()
        print(f'{name}: solutions differ by {diff:.1e} (relative)')
        for k, (tf, ts) in times.items():
            print(f'  {k}: factorize min {min(tf) * 1e3:.1f} median {np.median(tf) * 1e3:.1f} ms, '
                  f'solve min {min(ts) * 1e3:.1f} median {np.median(ts) * 1e3:.1f} ms')
    return 0


if __name__ == '__main__':
    sys.exit(main())
