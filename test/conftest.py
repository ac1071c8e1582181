"""Test-wide set-up: isolated ROS logging and domain, deterministic small-thread torch, and the
``ros`` marker on every test of a module that needs rclpy (see :func:`pytest_collection_modifyitems`).

Waiting helpers for the node tests (spin an executor until a condition holds) are in
``test/ros_wait.py``.
"""
import os
import re
import signal
import subprocess
import tempfile

import pytest

os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='diffopt_ros_log_'))
os.environ.setdefault('ROS_DOMAIN_ID', str(40 + os.getpid() % 50))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('MPLBACKEND', 'Agg')

import torch  # noqa: E402  (after the environment is set)

#: A test module needs rclpy and the ROS 2 message packages when its source imports rclpy (at any
#: level) or the ROS shell (``diffopt_ros.nodes``: nodes, demo, executors, launch helpers). A test
#: elsewhere that starts a node executable carries ``@pytest.mark.ros`` itself.
_ROS_SOURCE = re.compile(r'\brclpy\b|\bdiffopt_ros\.nodes\b|from diffopt_ros import nodes\b')


def needs_ros(source: str) -> bool:
    """Whether a test module with this source needs rclpy (see :data:`_ROS_SOURCE`)."""
    return _ROS_SOURCE.search(source) is not None


def pytest_collection_modifyitems(config, items):
    """Mark every test of a module that needs rclpy ``ros`` (``-m "not ros"`` runs the ROS-free
    core alone). ``slow`` is set in the modules, on the tests that take over ~4 s."""
    needs = {}
    for item in items:
        path = item.path
        if path not in needs:
            needs[path] = needs_ros(path.read_text(encoding='utf-8'))
        if needs[path]:
            item.add_marker(pytest.mark.ros)

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
