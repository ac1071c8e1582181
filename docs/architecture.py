"""Draw docs/architecture.png: the nodes, the topics between them and the learning loop.

Run: ``.venv/bin/python docs/architecture.py`` (matplotlib only).
"""
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {  # name: (x, y, width, height, colour, text)
    'robot': (0.5, 5.2, 9.0, 0.9, '#e8e8e8', 'robot, Gazebo or sim_node'),
    'slam': (5.6, 3.2, 3.9, 1.1, '#d6e9f8', 'slam_node\ndifferentiable pose-graph SLAM'),
    'mpc': (0.5, 3.2, 3.9, 1.1, '#fde2c8', 'mpc_node\ndifferentiable MPC (iLQR)'),
    'rec': (3.0, 1.6, 4.0, 0.8, '#e2f3dc', 'recorder_node → runs/<name>/ (rosbag2)'),
    'learn': (3.0, 0.0, 4.0, 0.9, '#efe0f5', 'diffopt-ros learn\nthrough the optimizers'),
}
ARROWS = [  # (from (x, y), to (x, y), label, label position)
    ((8.0, 5.2), (8.0, 4.3), '/odom  /scan', (8.1, 4.75)),
    ((5.6, 3.75), (4.4, 3.75), '/slam/odom', (4.45, 3.95)),
    ((2.0, 4.3), (2.0, 5.2), '/cmd_vel', (2.1, 4.75)),
    ((2.5, 3.2), (4.0, 2.4), 'commands, plans', (1.3, 2.7)),
    ((7.5, 3.2), (6.0, 2.4), 'estimates, map', (7.0, 2.7)),
    ((5.0, 1.6), (5.0, 0.9), 'bags', (5.1, 1.2)),
]


OUT = Path(__file__).with_name('architecture.png')


def main(path=OUT):
    fig, ax = plt.subplots(figsize=(8, 5))
    for x, y, w, h, colour, text in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.05', fc=colour, ec='#555'))
        ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', fontsize=10)
    for start, end, label, at in ARROWS:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle='-|>', mutation_scale=14, color='#333'))
        ax.text(*at, label, fontsize=9, color='#333')
    # learned parameter files go back to the nodes
    ax.add_patch(FancyArrowPatch((3.0, 0.45), (1.2, 3.2), connectionstyle='arc3,rad=-0.3',
                                 arrowstyle='-|>', mutation_scale=14, color='#8a3fa0'))
    ax.add_patch(FancyArrowPatch((7.0, 0.45), (8.8, 3.2), connectionstyle='arc3,rad=0.3',
                                 arrowstyle='-|>', mutation_scale=14, color='#8a3fa0'))
    ax.text(0.0, 1.0, 'learned/*.yaml\n(relaunch)', fontsize=9, color='#8a3fa0')
    ax.text(8.3, 1.0, 'learned/*.yaml\n(relaunch)', fontsize=9, color='#8a3fa0')
    ax.set_xlim(-0.2, 10.2)
    ax.set_ylim(-0.3, 6.4)
    ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == '__main__':
    main()
