"""The demo's course: ``config/demo.yaml`` (world, goals, run settings, node overrides), and the
world's map as the MPC navigates on it.

A course is goals only: ``mpc_node`` plans each goal on the map and reaches it with the obstacle
cost (``navigation.enabled``). Numpy and yaml only (the demo's command line reads it without
torch). Positions in m (map frame), times in s (sim time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from diffopt_ros.params import schema_for

#: Keys of the ``course`` section, all numbers >= 0 (s, m).
_NUMBERS = ('reach_tolerance', 'goal_timeout', 'settle_time')


class DemoError(RuntimeError):
    """The demo cannot run (bad course file, a node that does not start, ...)."""


@dataclass
class Course:
    """What ``config/demo.yaml`` describes.

    Attributes:
        world: world name under ``config/worlds`` or a world file.
        seed: simulator noise seed.
        real_time_factor: cap on simulated s per wall s (0: none).
        state_topic: what the MPC closes the loop on (``/slam/odom`` or ``/odom``).
        goals: ``(K, 2)`` goals (m, the world's map frame), driven in order; empty: the world's
            route.
        reach_tolerance: a goal counts as reached when the true robot ends this close (m).
        goal_timeout: sim time allowed per goal (s).
        settle_time: sim time before the first goal (s; SLAM and the MPC start up).
        learn: settings of the learning phase (``dynamics_epochs``, ``slam``).
        overrides: node parameters changed for the demo, ``{node: {name: value}}``.
    """

    world: str = 'clutter'
    seed: int = 0
    real_time_factor: float = 0.0
    state_topic: str = '/slam/odom'
    goals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    reach_tolerance: float = 0.4
    goal_timeout: float = 60.0
    settle_time: float = 1.0
    learn: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)

    def mpc_value(self, name: str):
        """``mpc_node`` parameter ``name`` as the demo runs it: its override, else the schema's
        default (the learned file changes only the model)."""
        values = self.overrides.get('mpc_node', {})
        if name in values:
            return values[name]
        return next(p.default for p in schema_for('mpc_node') if p.name == name)


def load_course(path: str | Path) -> Course:
    """Read a demo course YAML file (see ``config/demo.yaml``).

    Raises:
        DemoError: unreadable file, unknown key or a value of the wrong kind (file and key named).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f'{path}: cannot read the demo course: {exc}') from exc
    if not isinstance(data, dict):
        raise DemoError(f'{path}: expected a mapping')
    known = {'world', 'seed', 'real_time_factor', 'state_topic', 'course', 'learn', 'overrides'}
    unknown = (set(data) - known | set(data.get('course') or {}) - {'goals', *_NUMBERS}
               | set(data.get('learn') or {}) - {'dynamics_epochs', 'slam'})
    if unknown:
        raise DemoError(f'{path}: unknown key(s) {sorted(unknown)}')
    flat = {k: v for k, v in data.items() if k not in ('course', 'learn', 'overrides')}
    flat.update(data.get('course') or {})
    try:
        course = Course(**{k: v for k, v in flat.items() if k != 'goals'},
                        learn=dict(data.get('learn') or {}),
                        overrides={node: dict(values or {}) for node, values
                                   in (data.get('overrides') or {}).items()})
        unknown_nodes = set(course.overrides) - {'sim_node', 'slam_node', 'mpc_node',
                                                 'recorder_node'}
        if unknown_nodes:
            raise ValueError(f'overrides: unknown node(s) {sorted(unknown_nodes)}')
        course.overrides = {node: schema_for(node).check(values, f'overrides.{node}')
                            for node, values in course.overrides.items()}
        course.goals = np.asarray(flat.get('goals') or [], dtype=np.float64).reshape(-1, 2)
        if not np.all(np.isfinite(course.goals)):
            raise ValueError('course.goals must be finite [x, y] pairs')
        for name in ('real_time_factor', *_NUMBERS):
            value = float(getattr(course, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} = {value} must be a finite number >= 0')
            setattr(course, name, value)
        if course.goal_timeout <= 0:
            raise ValueError('course.goal_timeout must be > 0')
    except (TypeError, ValueError) as exc:
        raise DemoError(f'{path}: {exc}') from exc
    return course


def write_world_map(world, stem: str | Path, frame_origin=(0.0, 0.0, 0.0)) -> Path:
    """Write the world's occupancy grid (0.05 m cells, what a map_server would serve for it) as
    ``<stem>.yaml`` + ``<stem>.pgm`` (map_server format), in a frame whose origin is
    ``frame_origin`` ``[x, y, yaw]`` in the world (``/odom``'s: the robot's start pose).

    Returns:
        The YAML file (``mpc_node``'s ``map_file``).

    Raises:
        DemoError: a frame rotated against the world (map files cannot be rotated).
    """
    from diffopt_ros.maps import world_grid  # here: these import torch (not for --help)
    from diffopt_ros.slam.occupancy import save_map

    x, y, yaw = (float(v) for v in frame_origin)
    if abs(math.remainder(yaw, 2 * math.pi)) > 1e-9:
        raise DemoError(f'world {world.name}: its start yaw is {yaw:g} rad; a map in that frame '
                        'would be rotated, which map files cannot be: use --state-topic /slam/odom')
    grid = world_grid(world, 0.05)
    grid = replace(grid, origin=(grid.origin[0] - x, grid.origin[1] - y))
    return save_map(grid, stem)[1]
