"""Same-process A/B of what ``diffopt-ros pgo`` does before its solve: another checkout's reading
(``diffopt_ros/nlls/io/parse.py``) and sparse structure (``diffopt_ros/nlls/linear.py``) against
this one's.

Both versions of each module are loaded in one process and run alternately on the same files
(w10000 and sphere2500 of gtsam/Data), so both see the same machine load: ``parse_graph`` of the
file, and ``SparseCholesky`` of the command's objective with the backend ``sparse_backend('auto')``
takes without scikit-sparse (cholespy for w10000, supernodal for sphere2500; the supernodal
symbolic analysis runs at the first factorization and is not part of this). Prints, per file and
checkout, the minimum and median CPU milliseconds (process time) of each, and whether the two
versions' outputs are equal. Run: ``python bench/pgo_setup_ab.py --base /path/to/other/checkout
[--runs 7]``.
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

from bench.gtsam_pgo import data_file  # noqa: E402
from diffopt_ros.nlls.io import to_tensors  # noqa: E402
from diffopt_ros.nlls.pose_graph import objective_from_data  # noqa: E402

MODULES = {'parse': Path('diffopt_ros', 'nlls', 'io', 'parse.py'),
           'linear': Path('diffopt_ros', 'nlls', 'linear.py')}
BACKEND = {'w10000': 'cholespy', 'sphere2500': 'supernodal'}


def load(name: str, path: Path):
    """The module at ``path`` under the name ``name`` (its own imports resolve to this checkout)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_ms(fn, *args) -> tuple[float, object]:
    """CPU milliseconds of ``fn(*args)`` and its result."""
    t0 = time.process_time()
    out = fn(*args)
    return (time.process_time() - t0) * 1e3, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--base', required=True, help='root of the other checkout')
    p.add_argument('--runs', type=int, default=7, help='runs per checkout and file (default 7)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    roots = {'base': Path(args.base).resolve(), 'this': HERE.parents[1]}
    mods = {tree: {kind: load(f'{kind}_{tree}', root / rel) for kind, rel in MODULES.items()}
            for tree, root in roots.items()}
    for name in ('w10000', 'sphere2500'):
        path = data_file(name)
        times = {(tree, what): [] for tree in roots for what in ('read', 'structure')}
        outputs = {}
        for _ in range(args.runs):
            for tree, m in mods.items():
                ms, parsed = _cpu_ms(m['parse'].parse_graph, path)
                times[tree, 'read'].append(ms)
                objective, _, _ = objective_from_data(to_tensors(parsed, torch.float64), torch.device('cpu'),
                                                      torch.float64)
                ms, system = _cpu_ms(m['linear'].SparseCholesky, objective, BACKEND[name])
                times[tree, 'structure'].append(ms)
                csc = [getattr(system, a, None) for a in ('_csc_order', '_csc_rows', '_csc_indptr')]
                outputs[tree] = (parsed.info, parsed.meas, system.rows.numpy(), system.cols.numpy(),
                                 system.scatter.numpy(), *[c for c in csc if c is not None])
        same = all(np.array_equal(a, b) for a, b in zip(outputs['base'], outputs['this']))
        for (tree, what), t in times.items():
            print(f'{name:10s} {what:9s} {tree:4s} ({roots[tree]}): min {min(t):7.1f} ms  '
                  f'median {float(np.median(t)):7.1f} ms')
        print(f'{name:10s} outputs equal: {same}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
