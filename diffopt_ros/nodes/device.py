"""The torch device a node computes on, from its ``device`` parameter."""
from __future__ import annotations

import torch
from rclpy.node import Node


def available_device(node: Node, requested: str) -> str:
    """``requested`` (``'cpu'`` or ``'cuda'``, the node's ``device`` parameter), except that
    ``'cuda'`` without an available CUDA device gives ``'cpu'`` and a warning in ``node``'s log
    (the node keeps running instead of failing on its first tensor)."""
    if requested == 'cuda' and not torch.cuda.is_available():
        node.get_logger().warning('device "cuda" requested but CUDA is not available: using cpu')
        return 'cpu'
    return requested
