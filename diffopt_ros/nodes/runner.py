"""Process entry points for nodes: init, spin, clean shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from diffopt_ros.nodes.params import ParameterError, ParamSpec


def wants_help(args: list[str]) -> bool:
    """``-h``/``--help`` among the command-line arguments before ``--ros-args``."""
    own = args[:args.index('--ros-args')] if '--ros-args' in args else args
    return '-h' in own or '--help' in own


def node_help(executable: str, description: str, params: Iterable[ParamSpec]) -> str:
    """The ``--help`` text of a node executable: usage, what it does, its parameters."""
    lines = [f'usage: {executable} [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] '
             '[-r FROM:=TO] ...]', '', description.strip(), '', 'parameters (default; range):']
    for spec in params:
        bounds = ''
        if spec.low is not None or spec.high is not None:
            bounds = f'; {"" if spec.low is None else spec.low} .. {"" if spec.high is None else spec.high}'
        elif spec.choices:
            bounds = f'; one of {", ".join(spec.choices)}'
        lines.append(f'  {spec.name} ({spec.default!r}{bounds})')
        lines.append(f'      {spec.description}{" [read-only]" if spec.read_only else ""}')
    return '\n'.join(lines)


def run_node(make_node: Callable[[], Node], args: list[str] | None = None,
             multithreaded: bool = False, description: str = '',
             params: Iterable[ParamSpec] = ()) -> int:
    """Create the node made by ``make_node`` and spin it until shutdown.

    With ``-h``/``--help`` (before ``--ros-args``) it prints ``description`` and ``params`` and
    returns 0 without starting ROS. SIGINT and SIGTERM (``ExternalShutdownException``) and
    Ctrl-C end the spin normally; the node is destroyed (its ``destroy_node`` closes files,
    e.g. the recorder's bag) and rclpy is shut down. A :class:`ParameterError` at start-up is
    logged and gives exit status 2.

    Returns:
        The process exit status.
    """
    args = sys.argv if args is None else args
    if wants_help(args):
        print(node_help(os.path.basename(sys.argv[0]), description, params))
        return 0
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = make_node()
        executor = MultiThreadedExecutor() if multithreaded else None
        if executor is None:
            rclpy.spin(node)
        else:
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _rclpy.RCLError:
        # SIGINT/SIGTERM can shut the context down while spin builds its wait set: then rcl
        # reports an invalid context instead of ExternalShutdownException. Only that is a stop.
        if rclpy.ok():
            raise
    except ParameterError as exc:
        rclpy.logging.get_logger('diffopt_ros').error(str(exc))
        status = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status
