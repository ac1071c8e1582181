"""Thread pools of a process that solves small problems: torch's intra-op pool and the BLAS pools
numpy and scipy load (OpenBLAS here, MKL elsewhere).

The SLAM back end's dense steps are a few hundred rows at most; a second BLAS thread makes the
calling thread spin-wait for it, which on a robot's busy CPU costs more than it saves (measured in
bench/RESULTS.md, "w10000 stream ... one BLAS thread"). Nodes and the ``drive`` command set both
pools from one value; ``diffopt-ros pgo`` sets them before it imports numpy and torch.
"""
from __future__ import annotations

import os
import sys

# what the OpenMP runtime (torch's intra-op pool) and the BLAS libraries read when they load
_POOL_VARIABLES = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def limit_threads(count: int) -> None:
    """Use ``count`` threads for torch's intra-op work and for every BLAS library loaded."""
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS so that the limit below reaches it)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(limits=count, user_api='blas')


def limit_threads_before_import(count: int) -> None:
    """The same limit for a command that has not imported numpy or torch yet: through the
    environment variables their runtimes read when they load (a value the user set is kept).
    Without it, ``import torch`` and numpy's OpenBLAS start a pool of one thread per core whose
    spin-waits cost the single-threaded ``diffopt-ros pgo`` 0.1-0.2 s of CPU (measured on
    sphere2500, 2 cores). Once either is loaded (a command run inside another program) the pools
    exist, and the environment, which only child processes would still read, is left alone."""
    if 'numpy' in sys.modules or 'torch' in sys.modules:
        return
    for name in _POOL_VARIABLES:
        os.environ.setdefault(name, str(count))
