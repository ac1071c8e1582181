"""Process entry points for nodes: init, spin, clean shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from diffopt_ros import params_file
from diffopt_ros.nodes.executors import RCLError, has_events_executor, node_executor, spin_until_shutdown
from diffopt_ros.nodes.params import ParameterError
from diffopt_ros.params.schema import NodeSchema

#: Seconds a node process may take to shut down (executor, node, rclpy) after its spin ended
#: before the stacks of all its threads are written to stderr (once; the shutdown goes on): a
#: node that hangs there says where (``ros2 launch`` sends SIGTERM after 5 s, SIGKILL after 15).
SHUTDOWN_DUMP_SECONDS = 4.0


def wants_help(args: list[str]) -> bool:
    """``-h``/``--help`` among the command-line arguments before ``--ros-args``."""
    own = args[:args.index('--ros-args')] if '--ros-args' in args else args
    return '-h' in own or '--help' in own


def node_help(executable: str, description: str, schema: NodeSchema) -> str:
    """The ``--help`` text of a node executable: usage, what it does, its parameters (from its
    schema)."""
    from diffopt_ros.cli import plain_text

    lines = [f'usage: {executable} [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] '
             '[-r FROM:=TO] ...]', '', plain_text(description.strip()), '',
             plain_text(schema.help_text())]
    return '\n'.join(lines)


def check_params_args(args: list[str], schema: NodeSchema) -> int | None:
    """Check the params files and ``-p`` values of a node's ROS arguments against its schema
    before ``rclpy.init`` reads them: warnings go to stderr; an error (unreadable file, YAML
    syntax error at file:line, a value of the wrong type or out of range) is printed naming the
    file, line, node and parameter, and gives the exit status 2 (else None)."""
    try:
        warnings = params_file.check_ros_args(args, schema.node)
    except params_file.ParamsFileError as exc:
        print(f'[ERROR] [{schema.node}]: {exc}', file=sys.stderr, flush=True)
        return 2
    for text in warnings:
        print(f'[WARN] [{schema.node}]: {text}', file=sys.stderr, flush=True)
    return None


def run_node(make_node: Callable[[], Node], args: list[str] | None = None,
             multithreaded: bool = False, description: str = '',
             params: NodeSchema | None = None) -> int:
    """Create the node made by ``make_node`` and spin it until shutdown.

    With ``-h``/``--help`` (before ``--ros-args``) it prints ``description`` and the parameters
    of the node's schema ``params`` and returns 0 without starting ROS. The params files and
    ``-p`` values of the ROS arguments are checked against the schema first
    (:func:`check_params_args`: exit status 2 on a bad value, before ROS starts). The executor
    is :func:`node_executor`'s (rclpy's ``EventsExecutor`` where it exists, else the
    ``MultiThreadedExecutor`` when ``multithreaded``). SIGINT and SIGTERM end the spin
    normally: with the ``EventsExecutor`` (in the main thread) through this function's own
    signal handlers, which stop the spin loop between two callbacks while the context is still
    valid (rclpy's handlers shut the context down at once, so a callback running then fails to
    publish); with the Python executors through rclpy's (``ExternalShutdownException``,
    Ctrl-C). The objects alive once the node is made are frozen out of the garbage
    collector's generations (``gc.freeze``). Then the node's own threads are stopped (its
    ``stop_work()``, where it has one), the executor is shut down, the node is
    destroyed (its ``destroy_node`` closes files, e.g. the recorder's bag) and rclpy is shut
    down; if that takes more than :data:`SHUTDOWN_DUMP_SECONDS`, the stacks of the process's
    threads are written to stderr. A :class:`ParameterError` at start-up is logged and gives
    exit status 2.

    Returns:
        The process exit status.
    """
    args = sys.argv if args is None else args
    if params is not None and wants_help(args):
        print(node_help(os.path.basename(sys.argv[0]), description, params))
        return 0
    if params is not None:
        status = check_params_args(args, params)
        if status is not None:
            return status
    stop = threading.Event()
    own_signals = has_events_executor() and threading.current_thread() is threading.main_thread()
    try:
        rclpy.init(args=args,
                   signal_handler_options=SignalHandlerOptions.NO if own_signals else None)
    except RCLError as exc:     # ROS arguments rcl refuses (what the checks above miss)
        print(f'[ERROR] [{params.node if params else "diffopt_ros"}]: invalid ROS arguments: '
              f'{exc}', file=sys.stderr, flush=True)
        return 2
    if own_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    node = None
    executor = None
    status = 0
    try:
        node = make_node()
        # Everything alive after start-up (torch's and rclpy's modules, the node: ~200,000
        # objects) goes to the permanent generation: a full garbage collection, which otherwise
        # rescans them all (~0.1 s, at whichever callback allocates then), scans only what the
        # node made since.
        gc.freeze()
        if not stop.is_set():
            executor = node_executor(multithreaded)
            executor.add_node(node)
            spin_until_shutdown(executor, stop=stop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGINT/SIGTERM can shut the context down while spin builds its wait set: then rcl
        # reports an invalid context instead of ExternalShutdownException. Only that is a stop.
        if rclpy.ok():
            raise
    except ParameterError as exc:
        rclpy.logging.get_logger('diffopt_ros').error(str(exc))
        status = 2
    finally:
        faulthandler.dump_traceback_later(SHUTDOWN_DUMP_SECONDS, exit=False)
        stop_work = getattr(node, 'stop_work', None)
        if stop_work is not None:      # the node's own threads first: none publishes any more
            stop_work()
        if executor is not None:
            # Before destroy_node: the EventsExecutor holds the node's rcl handles (and their
            # event callbacks) until it lets the node go.
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.destroy_node()
        else:
            # make_node raised: its half-built node (held by the traceback's frames, a cycle)
            # still owns rcl handles; free them while the context is alive, not at interpreter
            # exit after the context is gone, where releasing them can crash the process
            gc.collect()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
    return status
