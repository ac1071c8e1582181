"""The two layouts of ``Objective.linearize`` on the command's objectives: the measurement behind
``EDGES_LAST_MAX_DIM`` (diffopt_ros/nlls/objective.py).

For each gtsam/Data file, the command's objective (:func:`~diffopt_ros.nlls.pose_graph.
objective_from_data`) is built twice, once with every factor linearized with the edges last and
once with every factor by batched matrix products, and both linearize the file's initial values
and assemble the sparse matrix, alternately. Prints the process CPU milliseconds per
linearization and per assembly (mean of ``--repeat`` after one warm-up, 1 torch thread), and
checks that both layouts give the same error, gradient and matrix (to 1e-12 relative of its
largest entry). Run: ``python bench/linearize_layout.py [NAME ...] [--repeat N]`` (NAME: keys of
``bench/gtsam_pgo.py``'s files; default w10000, sphere2500).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gtsam_pgo import FILES, data_file  # noqa: E402
from diffopt_ros.nlls import objective as objective_module  # noqa: E402
from diffopt_ros.nlls.io import read_graph  # noqa: E402
from diffopt_ros.nlls.linear import SparseCholesky  # noqa: E402
from diffopt_ros.nlls.pose_graph import objective_from_data  # noqa: E402

DT = torch.float64
LAYOUTS = {'edges last': 1 << 30, 'batched products': 0}  # EDGES_LAST_MAX_DIM for each


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text}: must be at least 1')
    return value


def _objective(name: str, max_dim: int):
    saved = objective_module.EDGES_LAST_MAX_DIM
    objective_module.EDGES_LAST_MAX_DIM = max_dim  # read when an Objective is built
    try:
        objective, _, _ = objective_from_data(read_graph(data_file(name)), torch.device('cpu'), DT)
    finally:
        objective_module.EDGES_LAST_MAX_DIM = saved
    return objective


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('names', nargs='*', metavar='NAME',
                   help=f'gtsam/Data files: {", ".join(sorted(FILES))} (default w10000 sphere2500)')
    p.add_argument('--repeat', type=_positive, default=10, help='timed calls per layout (default 10)')
    args = p.parse_args(argv)
    names = args.names or ['w10000', 'sphere2500']
    unknown = sorted(set(names) - set(FILES))
    if unknown:
        p.error(f'unknown file {", ".join(unknown)}: choose from {", ".join(sorted(FILES))}')
    torch.set_num_threads(1)
    print(f'torch {torch.__version__}, 1 thread; ms of process CPU per call, mean of {args.repeat}')
    for name in names:
        runs = {}
        for layout, max_dim in LAYOUTS.items():
            objective = _objective(name, max_dim)
            runs[layout] = (objective, objective.initial_values(), objective.sqrt_informations(),
                            SparseCholesky(objective, 'supernodal'))
        seconds = {(layout, part): 0.0 for layout in LAYOUTS for part in ('linearize', 'assemble')}
        results = {}
        with torch.no_grad():
            for k in range(args.repeat + 1):  # the first round warms up
                for layout, (objective, values, sqrt_infos, system) in runs.items():
                    t0 = time.process_time()
                    lin = objective.linearize(values, sqrt_infos)
                    t1 = time.process_time()
                    H = system.assemble(lin.blocks)
                    t2 = time.process_time()
                    if k:
                        seconds[layout, 'linearize'] += t1 - t0
                        seconds[layout, 'assemble'] += t2 - t1
                    results[layout] = (lin.error, lin.gradient, H)
        (e1, g1, H1), (e2, g2, H2) = results.values()
        scale = float(H1.abs().max())
        same = (torch.allclose(e1, e2, rtol=1e-12) and torch.allclose(g1, g2, rtol=0, atol=1e-12 * scale)
                and torch.allclose(H1, H2, rtol=0, atol=1e-12 * scale))
        objective = runs['edges last'][0]
        shapes = ', '.join(f'{type(f).__name__} m={f.dim} E={f.num_edges}' for f in objective.factors)
        print(f'{name} ({shapes}); the layouts agree: {same}')
        for layout in LAYOUTS:
            print(f'  {layout:17s} linearize {1e3 * seconds[layout, "linearize"] / args.repeat:8.2f}  '
                  f'assemble {1e3 * seconds[layout, "assemble"] / args.repeat:8.2f}')
        if not same:
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
