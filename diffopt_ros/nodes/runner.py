"""Process entry points for nodes: init, spin, clean shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from diffopt_ros.nodes.params import ParameterError


def run_node(make_node: Callable[[], Node], args: list[str] | None = None,
             multithreaded: bool = False) -> int:
    """Create the node made by ``make_node`` and spin it until shutdown.

    SIGINT and SIGTERM (``ExternalShutdownException``) and Ctrl-C end the spin normally; the
    node is destroyed (its ``destroy_node`` closes files, e.g. the recorder's bag) and rclpy is
    shut down. A :class:`ParameterError` at start-up is logged and gives exit status 2.

    Returns:
        The process exit status.
    """
    rclpy.init(args=sys.argv if args is None else args)
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
