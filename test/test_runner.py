"""runner: the node processes' executor (rclpy's EventsExecutor, spun in bounded waits)."""
import threading
import time

import pytest
import rclpy

from diffopt_ros.nodes import runner

pytestmark = pytest.mark.skipif(not runner.has_events_executor(),
                                reason='this rclpy has no EventsExecutor')


def test_events_executor_runs_timers_and_stops_between_callbacks(context):
    """``EventsExecutor.spin()`` busy-loops and runs no timer in the rclpy 9.1.2 wheels; the
    bounded ``spin_once`` loop of :func:`runner.spin_until_shutdown` runs a 20 Hz timer on time
    and returns soon after ``stop`` is set."""
    node = rclpy.create_node('runner_timer_probe', context=context)
    ticks = []
    node.create_timer(0.05, lambda: ticks.append(time.monotonic()))
    executor = runner.node_executor(multithreaded=True, context=context)
    assert runner.is_events_executor(executor)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    start = time.monotonic()
    try:
        executor.add_node(node)
        runner.spin_until_shutdown(executor, context, stop=stop)
        elapsed = time.monotonic() - start
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
    assert 1.0 <= elapsed < 1.0 + 2 * runner.SPIN_SLICE + 0.2
    assert 15 <= len(ticks) <= 21, len(ticks)


def test_python_executors_on_request(monkeypatch, context):
    monkeypatch.setenv(runner.EXECUTOR_ENV, 'python')
    assert not runner.has_events_executor()
    executor = runner.node_executor(multithreaded=True, context=context)
    assert not runner.is_events_executor(executor)
    executor.shutdown()
