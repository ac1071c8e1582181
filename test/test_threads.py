"""limit_threads sets torch's pool and every loaded BLAS pool (numpy's and scipy's);
limit_threads_before_import does it for a process that has not loaded them yet."""
import os
import subprocess
import sys

import torch
from threadpoolctl import threadpool_info

from diffopt_ros.threads import limit_threads, limit_threads_before_import


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


def test_limit_threads_before_import_reaches_numpy_and_torch_and_keeps_the_users_value():
    """In a fresh process (as ``diffopt-ros pgo`` calls it): torch's intra-op pool and numpy's
    BLAS pool get the count; a value the user set in the environment stays."""
    program = ('from diffopt_ros.threads import limit_threads_before_import\n'
               'limit_threads_before_import(1)\n'
               'import numpy, torch\n'
               'from threadpoolctl import threadpool_info\n'
               "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()\n"
               "                                       if p['user_api'] == 'blas'}))\n")
    clean = {k: v for k, v in os.environ.items()
             if k not in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')}

    def run(**env):
        done = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True,
                              env={**clean, **env}, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split(None, 1)

    assert run() == ['1', '[1]\n']
    assert run(OMP_NUM_THREADS='2', OPENBLAS_NUM_THREADS='2', MKL_NUM_THREADS='2') == ['2', '[2]\n']


def test_limit_threads_before_import_leaves_the_environment_of_a_loaded_process(monkeypatch):
    """Called where numpy and torch are loaded already (a command run inside another program),
    it changes nothing that child processes would inherit."""
    for name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        monkeypatch.delenv(name, raising=False)
    limit_threads_before_import(1)
    assert not {'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'} & set(os.environ)

