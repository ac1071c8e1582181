"""executors: the node processes' executor (rclpy's EventsExecutor, spun in bounded waits) and
the version gate of the rclpy work-arounds."""
import threading
import time

import pytest
import rclpy

from diffopt_ros.nodes import executors

needs_events_executor = pytest.mark.skipif(not executors.has_events_executor(),
                                           reason='this rclpy has no EventsExecutor')


@needs_events_executor
def test_events_executor_runs_timers_and_stops_between_callbacks(context):
    """``EventsExecutor.spin()`` busy-loops and runs no timer in the rclpy 9.1.2 wheels; the
    bounded ``spin_once`` loop of :func:`executors.spin_until_shutdown` runs a 20 Hz timer on time
    and returns soon after ``stop`` is set."""
    node = rclpy.create_node('runner_timer_probe', context=context)
    ticks = []
    node.create_timer(0.05, lambda: ticks.append(time.monotonic()))
    executor = executors.node_executor(multithreaded=True, context=context)
    assert executors.is_events_executor(executor)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    start = time.monotonic()
    try:
        executor.add_node(node)
        executors.spin_until_shutdown(executor, context, stop=stop)
        elapsed = time.monotonic() - start
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
    assert 1.0 <= elapsed < 1.0 + 2 * executors.SPIN_SLICE + 0.2
    assert 15 <= len(ticks) <= 21, len(ticks)


@needs_events_executor
def test_python_executors_on_request(monkeypatch, context):
    monkeypatch.setenv(executors.EXECUTOR_ENV, 'python')
    assert not executors.has_events_executor()
    executor = executors.node_executor(multithreaded=True, context=context)
    assert not executors.is_events_executor(executor)
    executor.shutdown()


def test_workarounds_are_gated_on_the_checked_rclpy_releases():
    """The private-API work-arounds apply up to the rclpy release they were checked on (and to
    an unknown one), not to a newer one; the installed rclpy's version is found."""
    assert executors.workarounds_apply((9, 1, 2)) and executors.workarounds_apply((7, 1, 1))
    assert not executors.workarounds_apply((9, 2, 0)) and not executors.workarounds_apply((10, 0))
    version = executors.rclpy_version()
    assert version is not None and len(version) >= 2 and version[0] >= 1
    assert executors.workarounds_apply() == executors.workarounds_apply(version)
