"""Test-wide set-up: isolated ROS logging and domain, deterministic small-thread torch."""
import os
import signal
import subprocess
import tempfile

import pytest

os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='diffopt_ros_log_'))
os.environ.setdefault('ROS_DOMAIN_ID', str(40 + os.getpid() % 50))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('MPLBACKEND', 'Agg')

import torch  # noqa: E402  (after the environment is set)

# Small batched problems are overhead-bound; one intra-op thread is faster and repeatable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def context():
    """A private rclpy context, initialised for one test and shut down after it."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture
def stop_process():
    """``stop(proc, sig=SIGINT, timeout=20) -> output``: signal a node process and collect its
    output; a process that does not exit in ``timeout`` s is killed (return code -9)."""
    def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 20.0) -> str:
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return out
    return stop
