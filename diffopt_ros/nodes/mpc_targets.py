"""What ``mpc_node`` drives to: a position goal (``goal_pose``) or a path (``plan``), and the MPC's
reference towards it.

A :class:`Target` is made from each goal or plan message and replaced, never changed, by the next
one (only its progress along an untimed path and whether it was reached change as the robot
drives), so a control tick still working on the old target cannot disturb a new one. The
numerics are :mod:`diffopt_ros.mpc.receding`'s; units m, rad, s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path

from diffopt_ros.mpc.receding import goal_reference, path_reference, timed_reference
from diffopt_ros.nodes import ros_convert


@dataclass
class Target:
    """A goal, or a path to follow, in the message's frame.

    Attributes:
        goal: ``(2,)`` position to reach (m): the goal, or the path's last pose.
        frame: ``header.frame_id`` of the message.
        path: ``(N, 3)`` poses ``(x, y, yaw)`` (m, rad) of a path, or None for a goal.
        times: ``(N,)`` pose stamps (s) of a timed path (strictly increasing), None when the path
            is followed at ``reference_speed``.
        length: arc length of the path (m; 0 for a goal).
        progress: arc length reached along an untimed path (m).
        ended: how the target ended, '' until then: ``'goal reached'`` (the goal, or a path's
            end) or ``'no progress'`` (navigation gave the goal up); zero command until the
            next target.
    """

    goal: np.ndarray
    frame: str
    path: np.ndarray | None = None
    times: np.ndarray | None = None
    length: float = 0.0
    progress: float = 0.0
    ended: str = ''

    @classmethod
    def from_goal(cls, msg: PoseStamped) -> Target:
        """The goal of a ``goal_pose`` message (its orientation is checked, not used).

        Raises:
            ros_convert.MessageError: non-finite numbers or a zero quaternion (names the topic).
        """
        goal = ros_convert.pose_to_xy_yaw(msg, 'goal_pose')
        return cls(goal[:2], msg.header.frame_id)

    @classmethod
    def from_plan(cls, msg: Path) -> Target | None:
        """The path of a ``plan`` message: timed when its pose stamps strictly increase; None for
        an empty path (stop).

        Raises:
            ros_convert.MessageError: a pose that is not finite or has a zero quaternion.
        """
        poses = ros_convert.path_to_poses(msg, 'plan')
        if len(poses) == 0:
            return None
        stamps = np.array([ros_convert.stamp_to_sec(p.header.stamp) for p in msg.poses])
        timed = len(stamps) > 1 and bool(np.all(np.diff(stamps) > 0))
        length = float(np.sum(np.hypot(*np.diff(poses[:, :2], axis=0).T)))
        return cls(poses[-1, :2], msg.header.frame_id, poses, stamps if timed else None, length)

    def reference(self, state: np.ndarray, now: float, horizon: int, dt: float,
                  speed: float) -> np.ndarray:
        """The MPC reference ``(horizon, 5)`` from ``state (5,)`` at node time ``now`` (s): to the
        goal, along the path at ``speed`` (m/s; advances :attr:`progress`), or along the timed path
        at ``now + k dt``."""
        if self.path is None:
            return goal_reference(state, self.goal, horizon)
        if self.times is None:
            reference, self.progress = path_reference(state, self.path, self.progress, horizon, dt,
                                                      speed)
            return reference
        return timed_reference(state, self.path, self.times, now, horizon, dt)

    def at_end(self, state: np.ndarray, now: float, tolerance: float) -> bool:
        """Whether ``state`` is within ``tolerance`` (m) of the goal and, for a path, the path is
        done (travelled to within ``tolerance`` of its length, or past its last stamp)."""
        if self.path is None:
            done = True
        elif self.times is None:
            done = self.progress >= self.length - tolerance
        else:
            done = now >= self.times[-1]
        return done and float(np.hypot(*(state[:2] - self.goal))) <= tolerance
