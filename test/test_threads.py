"""limit_threads sets torch's pool and every loaded BLAS pool (numpy's and scipy's)."""
import torch
from threadpoolctl import threadpool_info

from diffopt_ros.threads import limit_threads


def test_limit_threads_sets_torch_and_every_blas_pool():
    before = torch.get_num_threads()
    try:
        limit_threads(1)
        pools = [p for p in threadpool_info() if p['user_api'] == 'blas']
        assert pools, 'numpy and scipy load a BLAS library'
        assert {p['num_threads'] for p in pools} == {1}
        assert torch.get_num_threads() == 1
    finally:
        limit_threads(before)
