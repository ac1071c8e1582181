"""The demo's course: ``config/demo.yaml`` (world, goals, run settings, node overrides) and its
legs (timed straight lines between goals).

Numpy and yaml only (the demo's command line reads it without torch). Positions in m (map
frame), times in s (sim time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from diffopt_ros.params import schema_for


class DemoError(RuntimeError):
    """The demo cannot run (bad course file, a node that does not start, ...)."""


@dataclass
class Course:
    """What ``config/demo.yaml`` describes (units: m, s, m/s)."""

    world: str = 'loop'
    seed: int = 0
    real_time_factor: float = 0.0
    state_topic: str = '/slam/odom'
    goals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    speed: float = 0.5
    turn_rate: float = 0.8
    reach_tolerance: float = 0.4
    goal_timeout: float = 25.0
    settle_time: float = 1.0
    learn: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)


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
    course_keys = {'goals', 'speed', 'turn_rate', 'reach_tolerance', 'goal_timeout',
                   'settle_time'}
    unknown = (set(data) - known | set(data.get('course') or {}) - course_keys
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
        for name in ('real_time_factor', 'speed', 'turn_rate', 'reach_tolerance', 'goal_timeout',
                     'settle_time'):
            value = float(getattr(course, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} = {value} must be a finite number >= 0')
            setattr(course, name, value)
        if course.speed <= 0 or course.turn_rate <= 0:
            raise ValueError('course.speed and course.turn_rate must be > 0')
    except (TypeError, ValueError) as exc:
        raise DemoError(f'{path}: {exc}') from exc
    return course


@dataclass
class Leg:
    """One leg of a course: turn in place towards ``goal``, then a timed straight line.

    Positions in m (map frame), times in s (sim time).
    """

    start: np.ndarray
    goal: np.ndarray
    t0: float            # when the leg starts (the turn in place)
    speed: float         # m/s along the line
    turn: float = 0.0    # s of turning in place before the reference moves

    @classmethod
    def towards(cls, start_pose, goal, t0: float, speed: float, turn_rate: float) -> Leg:
        """The leg from ``start_pose`` ``[x, y, yaw]`` to ``goal`` ``[x, y]``: the turn lasts
        the heading change over ``turn_rate`` (rad/s)."""
        start = np.asarray(start_pose, dtype=np.float64)
        goal = np.asarray(goal, dtype=np.float64)
        heading = math.atan2(goal[1] - start[1], goal[0] - start[0])
        turn = abs(math.remainder(heading - start[2], 2 * math.pi)) / turn_rate
        return cls(start=start[:2].copy(), goal=goal[:2].copy(), t0=t0, speed=speed, turn=turn)

    @property
    def duration(self) -> float:
        """Planned duration (s), turn included."""
        return self.turn + float(np.hypot(*(self.goal - self.start))) / self.speed

    def reference(self, t: np.ndarray) -> np.ndarray:
        """Reference positions ``(N, 2)`` at times ``t`` ``(N,)`` (held at the ends)."""
        moving = max(self.duration - self.turn, 1e-9)
        frac = np.clip((t - self.t0 - self.turn) / moving, 0.0, 1.0)[:, None]
        return self.start + frac * (self.goal - self.start)

    def waypoints(self, step: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Strictly increasing times ``(K,)`` and positions ``(K, 2)``: the start, then every
        ``step`` s along the line."""
        moving = self.duration - self.turn
        times = self.t0 + self.turn + np.append(np.arange(0.0, moving, step), moving)
        if self.turn > 0:
            times = np.concatenate([[self.t0], times])
        return times, self.reference(times)
