"""Thread pools of a process that solves small problems: torch's intra-op pool and the BLAS pools
numpy and scipy load (OpenBLAS here, MKL elsewhere).

The SLAM back end's dense steps are a few hundred rows at most; a second BLAS thread makes the
calling thread spin-wait for it, which on a robot's busy CPU costs more than it saves (measured in
bench/RESULTS.md, "w10000 stream ... one BLAS thread"). Nodes and the ``drive`` command set both
pools from one value.
"""
from __future__ import annotations

import scipy.linalg  # noqa: F401  (loads scipy's own BLAS so that the limit below reaches it)
import torch
from threadpoolctl import threadpool_limits


def limit_threads(count: int) -> None:
    """Use ``count`` threads for torch's intra-op work and for every BLAS library loaded."""
    torch.set_num_threads(count)
    threadpool_limits(limits=count, user_api='blas')
