"""Where the CPU time of ``diffopt-ros pgo``'s Levenberg-Marquardt solve goes, part by part.

Solves a gtsam/Data pose graph (default sphere2500) with the command's objective and optimizer
(:func:`diffopt_ros.nlls.pgo_cli.command_optimizer`), as ``bench/nlls.py``'s LM rows do, and
prints the process CPU time of each part per solve (mean of ``--repeat`` solves after one
warm-up): linearization (residuals, Jacobians, Gauss-Newton blocks), assembly of the sparse
matrix, damping, error evaluations of trial steps, retractions, the sparse factorization's
symbolic analysis (once per solve) and numeric factorizations, and the triangular solves.

The parts are timed by wrapping the library's methods for the duration of this script, so the
counts are exact and the times include the wrappers' few microseconds per call. Run:
``python bench/lm_parts.py [NAME] [--repeat N]`` (NAME: a key of ``bench/gtsam_pgo.py``'s files).
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gtsam_pgo import FILES  # noqa: E402
from bench.nlls import ours_lm  # noqa: E402
from diffopt_ros.nlls import linear, objective, optimizer, supernodal  # noqa: E402

# (class, method, label): the parts, in the order printed; the symbolic analysis runs inside the
# first factorization (supernodal back end), and is printed as a part of it
PARTS = [
    (objective.Objective, 'linearize', 'linearize'),
    (linear.SparseCholesky, 'assemble', 'assemble'),
    (optimizer.Optimizer, '_damped', 'damping'),
    (linear.SparseCholesky, 'factorize', 'factorizations'),
    (supernodal.SupernodalCholesky, '__init__', 'of which symbolic'),
    (linear.SparseCholesky, 'solve', 'triangular solves'),
    (objective.Objective, 'error', 'error'),
    (objective.Objective, 'retract', 'retract'),
]
NESTED = {'of which symbolic'}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text}: must be at least 1')
    return value


def _timed(function, label, seconds, calls):
    def wrapper(*args, **kwargs):
        t0 = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label] += time.process_time() - t0
            calls[label] += 1
    return wrapper


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('name', nargs='?', default='sphere2500', choices=sorted(FILES),
                   help='gtsam/Data file (default sphere2500)')
    p.add_argument('--repeat', type=_positive, default=3, help='timed solves after one warm-up (default 3)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seconds, calls = collections.defaultdict(float), collections.Counter()
    for cls, method, label in PARTS:
        setattr(cls, method, _timed(getattr(cls, method), label, seconds, calls))
    ours_lm(args.name)  # warm-up: lazy imports, allocator
    seconds.clear()
    calls.clear()
    total = 0.0
    for _ in range(args.repeat):
        *_, solver, cpu = ours_lm(args.name)
        total += cpu
    n = args.repeat
    print(f'{args.name}: LM solve {total / n:.3f} s CPU per solve, mean of {n}, linear solver {solver}; '
          f'torch {torch.__version__}, 1 thread')
    for _, _, label in PARTS:
        if calls[label]:
            print(f'  {label:18s} {1e3 * seconds[label] / n:8.1f} ms  {calls[label] // n:4d} calls  '
                  f'{1e3 * seconds[label] / calls[label]:7.2f} ms each')
    rest = total - sum(v for k, v in seconds.items() if k not in NESTED)
    print(f'  {"the rest":18s} {1e3 * rest / n:8.1f} ms')
    return 0


if __name__ == '__main__':
    sys.exit(main())
