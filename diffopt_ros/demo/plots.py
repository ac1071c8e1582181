"""The demo's plot of one drive: walls, obstacles, goals, global paths, ground truth, odometry,
SLAM estimate and MPC predictions (matplotlib, imported when a plot is drawn: the command line
starts without it).

Positions in m (map frame).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_run(path: Path, world, traces: dict, goals: np.ndarray, plans: list, predicted: list,
             title: str) -> Path:
    """Save a PNG of walls, obstacles, goals, global paths, ground truth, odometry, SLAM
    estimate and MPC predictions.

    Args:
        path: PNG file to write.
        world: :class:`diffopt_ros.sim.World` (walls ``(M, 4)``, discs ``(K, 3)``).
        traces: ``{'ground truth' | 'odometry' | 'SLAM': (N, 2) positions in the map frame}``.
        goals: the course's goals ``(K, 2)``.
        plans: the MPC's global paths, each ``(M, 2)`` (empty ones are skipped).
        predicted: MPC predicted paths, each ``(T + 1, 2)``.
        title: figure title.
    """
    import matplotlib  # here: drawing is the only use, and matplotlib is slow to import
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(10, 6.5))
    ax.add_collection(LineCollection(world.walls.reshape(-1, 2, 2), colors='0.2', linewidths=1.5))
    for x, y, radius in world.discs:
        ax.add_patch(plt.Circle((x, y), radius, color='0.5'))
    for i, pred in enumerate(predicted):
        ax.plot(pred[:, 0], pred[:, 1], color='tab:orange', lw=0.6, alpha=0.5,
                label='MPC predictions' if i == 0 else None)
    styles = {'ground truth': ('k', '-'), 'odometry': ('tab:red', '--'),
              'SLAM': ('tab:blue', '-')}
    for name, xy in traces.items():
        if len(xy):
            color, style = styles.get(name, ('tab:green', '-'))
            ax.plot(xy[:, 0], xy[:, 1], style, color=color, lw=1.3, label=name)
    for i, plan in enumerate(p for p in plans if len(p)):
        ax.plot(plan[:, 0], plan[:, 1], ':', color='tab:green', lw=1,
                label='global paths' if i == 0 else None)
    ax.plot(goals[:, 0], goals[:, 1], 'o', mfc='none', mec='tab:green', ms=9, label='goals')
    for i, (x, y) in enumerate(goals):
        ax.annotate(str(i + 1), (x, y), xytext=(6, 6), textcoords='offset points',
                    color='tab:green', fontsize=9)
    ax.set_aspect('equal')
    ax.set_xlabel('x (m, map)')
    ax.set_ylabel('y (m, map)')
    ax.set_title(title)
    ax.legend(loc='best', fontsize=8)
    ax.autoscale_view()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
