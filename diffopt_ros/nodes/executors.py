"""Executors for the node processes and for several nodes in one process, and every
work-around of rclpy's executors in one place.

rclpy behaviour worked around here (ros-rclpy 9.1.2, the ROS 2 Kilted wheels; see
:data:`CHECKED_RCLPY` for the version gate):

- The ``EventsExecutor``'s ``spin()`` and ``spin_once()`` without timeout busy-loop at 100 % CPU,
  run no timer and never return on SIGINT/SIGTERM (:func:`events_executor` says why): it is only
  ever spun in bounded ``spin_once`` steps (:func:`spin_until_shutdown`, :class:`ExecutorThread`).
  That loop is kept on every rclpy (it also ends a spin on a ``stop`` event).
- ``rclpy.experimental.EventsExecutor`` (a factory) calls ``faulthandler.enable()``, which needs a
  real ``sys.stderr`` (pytest's capture has none): then the executor is built the same way from
  rclpy's private C++ binding (:func:`events_executor`).
- ``MultiThreadedExecutor.shutdown`` neither waits for the callbacks still running in its thread
  pool nor keeps the guard condition they trigger on completion: :meth:`ExecutorThread.stop`
  shuts the pool (the private ``executor._executor``) down first.

The private parts (``rclpy.impl.implementation_singleton``, ``executor._executor``) are used only
on the rclpy releases they were checked on (:func:`workarounds_apply`); on a newer one only rclpy's
public API is used (an ``EventsExecutor`` that cannot be built gives the Python executors) until
they are checked there and :data:`CHECKED_RCLPY` is raised.
"""
from __future__ import annotations

import importlib.metadata
import io
import os
import re
import threading
from functools import cache

import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

#: rcl's error type (rclpy has no public name for it): refused ROS arguments, a context shut down
#: while a wait set is built.
RCLError = _rclpy.RCLError

#: The newest rclpy release ``(major, minor)`` the work-arounds of this module were checked on
#: (ros-rclpy 9.1.2): on it and older ones they apply.
CHECKED_RCLPY = (9, 1)


@cache
def rclpy_version() -> tuple[int, ...] | None:
    """rclpy's version ``(major, minor, patch)``: from its Python distribution (the wheels), else
    from its ``package.xml`` (a colcon or apt install); None when neither says."""
    try:
        text = importlib.metadata.version('rclpy')
    except importlib.metadata.PackageNotFoundError:
        try:
            from ament_index_python.packages import get_package_share_directory

            xml = (os.path.join(get_package_share_directory('rclpy'), 'package.xml'))
            with open(xml, encoding='utf-8') as file:
                found = re.search(r'<version>\s*([^<]+?)\s*</version>', file.read())
            text = found.group(1) if found else ''
        except (ImportError, LookupError, OSError):
            return None
    numbers = re.match(r'(\d+)\.(\d+)(?:\.(\d+))?', text)
    return tuple(int(n) for n in numbers.groups() if n is not None) if numbers else None


def workarounds_apply(version: tuple[int, ...] | None = None) -> bool:
    """Whether the private-API work-arounds apply to rclpy ``version`` (default: the installed
    one): a release up to :data:`CHECKED_RCLPY`, or an unknown one."""
    version = rclpy_version() if version is None else version
    return version is None or tuple(version[:2]) <= CHECKED_RCLPY


#: Longest single wait (s) of the ``EventsExecutor`` spin loop (:func:`spin_until_shutdown`):
#: how late at most a SIGINT/SIGTERM is noticed by an idle node (any event ends a wait at once).
SPIN_SLICE = 0.1


#: Environment variable: ``python`` makes node processes spin rclpy's Python executors (the
#: ``MultiThreadedExecutor``/``SingleThreadedExecutor`` with rclpy's signal handling) even where
#: the ``EventsExecutor`` exists; for comparisons and as a way back should it misbehave.
EXECUTOR_ENV = 'DIFFOPT_ROS_EXECUTOR'


def has_events_executor() -> bool:
    """Whether node processes use rclpy's ``EventsExecutor``: this rclpy has it
    (rclpy.experimental, Jazzy and later) and :data:`EXECUTOR_ENV` is not ``python``."""
    if os.environ.get(EXECUTOR_ENV, '').strip().lower() == 'python':
        return False
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        return False
    return hasattr(_rclpy, 'EventsExecutor')


def events_executor(context: Context | None = None):
    """rclpy's ``EventsExecutor`` (C++ event queue: timers and callbacks dispatched without a
    Python wait set) on ``context`` (default: the default context), or ``None`` where this rclpy
    lacks it or it cannot be built.

    Spin it with :func:`spin_until_shutdown`, never with its ``spin()`` or a ``spin_once()``
    without timeout: in the rclpy 9.1.2 wheels (libstdc++ fallback without
    ``pthread_cond_clockwait``: the .so imports only ``pthread_cond_timedwait``) the unbounded
    wait, ``condition_variable::wait_until(steady_clock::time_point::max())``, overflows when
    libstdc++ converts it to a system-clock deadline, so every wait returns at once: ``spin()``
    busy-loops at 100 % CPU in ``system_clock::now()``, runs no timer and never returns on
    SIGINT/SIGTERM. ``spin_once(timeout_sec=...)`` waits correctly.
    """
    if not has_events_executor():
        return None
    from rclpy.experimental import EventsExecutor
    context = rclpy.get_default_context() if context is None else context
    try:
        return EventsExecutor(context=context)
    except (io.UnsupportedOperation, ValueError):
        # rclpy's factory calls faulthandler.enable(), which needs a real sys.stderr (pytest's
        # capture has none); the same construction without it (private binding: gated):
        if not workarounds_apply():
            return None
        executor = _rclpy.EventsExecutor(context)
        context.on_shutdown(executor.wake)
        return executor
    except (RuntimeError, _rclpy.RCLError):
        return None


def is_events_executor(executor) -> bool:
    events_type = getattr(_rclpy, 'EventsExecutor', None)
    return events_type is not None and isinstance(executor, events_type)


def spin_until_shutdown(executor, context: Context | None = None,
                        stop: threading.Event | None = None) -> None:
    """Spin ``executor`` until ``stop`` is set or ``context`` (default: the default context) is
    shut down: ``spin_once`` waits of at most :data:`SPIN_SLICE` (for the ``EventsExecutor`` see
    :func:`events_executor` why not ``spin()``), returning between callbacks. The same loop for
    rclpy's Python executors, so ``stop`` ends any of them (their ``spin_once`` raises
    ``ExternalShutdownException`` when rclpy's signal handlers shut the context down).
    """
    context = rclpy.get_default_context() if context is None else context
    while context.ok() and not (stop is not None and stop.is_set()):
        executor.spin_once(timeout_sec=SPIN_SLICE)


def node_executor(multithreaded: bool = False, context: Context | None = None):
    """The executor of a node process: rclpy's ``EventsExecutor`` (:func:`events_executor`),
    else (an rclpy without it) a ``MultiThreadedExecutor`` when ``multithreaded``, or a
    ``SingleThreadedExecutor``.

    The Python executors rebuild the wait set in Python for every callback under the GIL: with
    each node in its own process the 20 Hz MPC loop missed its rate under load on 2 cores (see
    README, "Control loop"). The ``EventsExecutor`` runs the callbacks of the process one after
    another (callback groups do not run in parallel): nodes that need parallel work keep their
    own threads (slam_node's graph worker).
    """
    executor = events_executor(context)
    if executor is not None:
        return executor
    return MultiThreadedExecutor(context=context) if multithreaded \
        else SingleThreadedExecutor(context=context)


class ExecutorThread:
    """Spins an executor on a background thread until :meth:`stop`.

    :meth:`stop` ends the spinning, waits for the callbacks still running in the executor's
    thread pool, then shuts the executor down: rclpy 9.1's ``Executor.shutdown`` neither waits
    for them nor keeps the guard condition they trigger on completion, which otherwise raises in
    them ("exception was never retrieved") and races with destroying the nodes.
    """

    def __init__(self, executor):
        self.executor = executor
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._spin, name='executor', daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stopping.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def stop(self) -> None:
        """Stop spinning and wait for running callbacks; the nodes can be destroyed after."""
        self._stopping.set()
        self._thread.join(timeout=10.0)
        # MultiThreadedExecutor's pool (private attribute: gated)
        pool = getattr(self.executor, '_executor', None) if workarounds_apply() else None
        if pool is not None:
            pool.shutdown(wait=True)
        self.executor.shutdown(timeout_sec=1.0)


def in_process_executor(context):
    """The executor for several nodes in one process (the demo, the e2e test): rclpy's
    ``EventsExecutor`` (C++ event queue; :func:`events_executor`, spun
    by :class:`ExecutorThread` in bounded ``spin_once`` steps) where this rclpy has it and
    ``DIFFOPT_ROS_EXECUTOR`` is not ``python``, else a ``MultiThreadedExecutor``.

    Measured on the 2-core machine (2-goal course, load average ~3): with the
    ``MultiThreadedExecutor`` the process spent 5.5 s of CPU in the executor's Python wait-set
    handling for 18 s of sim time (sim_node's 100 Hz ``/clock`` reaches every node's time source,
    and each callback rebuilds the wait set of all nodes under the GIL); the 7 ms MPC solve took
    40 ms p50 (13 ms of its own CPU, the rest waiting for the GIL). With the ``EventsExecutor``
    the solve took 15 ms p50 and the process used 9 s of CPU instead of 14 s. slam_node keeps
    its own worker thread for the graph updates either way.
    """
    executor = events_executor(context)
    if executor is None:
        return MultiThreadedExecutor(num_threads=4, context=context)
    return executor
