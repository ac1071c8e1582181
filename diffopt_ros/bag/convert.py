"""Recorded messages -> numpy arrays (REP-103 axes, SI units), and header stamps read directly
from serialized messages.

Works on the message objects of rosbags' typestore (or anything with the same fields).
Planar states are ``(x, y, yaw, v, omega)`` as in docs/CONTRACTS.md: position in m, yaw in rad
(counter-clockwise), forward speed in m/s, yaw rate in rad/s.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from rosbags.typesys.base import Nodetype


def quaternion_yaw(qx, qy, qz, qw) -> np.ndarray:
    """Yaw (rad, in (-pi, pi]) of quaternions given as arrays of equal shape."""
    qx, qy, qz, qw = (np.asarray(q, dtype=np.float64) for q in (qx, qy, qz, qw))
    return np.arctan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))


def header_stamps(msgs: Sequence) -> np.ndarray:
    """``(N,)`` header stamps (s, float64) of stamped messages."""
    return np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in msgs],
                    dtype=np.float64)


def _pose_rows(poses: Sequence) -> np.ndarray:
    """``geometry_msgs/Pose`` objects -> ``(N, 3)`` ``[x, y, yaw]``."""
    if not poses:
        return np.zeros((0, 3))
    raw = np.array([(p.position.x, p.position.y, p.orientation.x, p.orientation.y,
                     p.orientation.z, p.orientation.w) for p in poses], dtype=np.float64)
    return np.column_stack([raw[:, 0], raw[:, 1], quaternion_yaw(*raw[:, 2:].T)])


def odometry_states(msgs: Sequence) -> np.ndarray:
    """``nav_msgs/Odometry`` -> ``(N, 5)`` states ``[x, y, yaw, v, omega]`` (float64)."""
    if not msgs:
        return np.zeros((0, 5))
    pose = _pose_rows([m.pose.pose for m in msgs])
    vel = np.array([(m.twist.twist.linear.x, m.twist.twist.angular.z) for m in msgs],
                   dtype=np.float64)
    return np.column_stack([pose, vel])


def twist_commands(msgs: Sequence) -> np.ndarray:
    """``geometry_msgs/Twist`` or ``TwistStamped`` -> ``(N, 2)`` ``[v_cmd, omega_cmd]``."""
    twists = [m.twist if hasattr(m, 'twist') else m for m in msgs]
    return np.array([(t.linear.x, t.angular.z) for t in twists],
                    dtype=np.float64).reshape(-1, 2)


def planar_poses(msgs: Sequence) -> np.ndarray:
    """``PoseStamped``, ``PoseWithCovarianceStamped`` or ``Odometry`` -> ``(N, 3)`` ``[x, y, yaw]``."""
    poses = []
    for m in msgs:
        pose = m.pose
        poses.append(pose.pose if hasattr(pose, 'pose') else pose)
    return _pose_rows(poses)


def path_poses(msg) -> np.ndarray:
    """``nav_msgs/Path`` -> ``(T, 3)`` ``[x, y, yaw]`` of its poses."""
    return _pose_rows([p.pose for p in msg.poses])


def scan_angles(msg) -> np.ndarray:
    """``(B,)`` beam angles (rad, in the scan frame) of a ``sensor_msgs/LaserScan``."""
    return msg.angle_min + msg.angle_increment * np.arange(len(msg.ranges), dtype=np.float64)


def starts_with_header(typestore, msgtype: str) -> bool:
    """Whether ROS type ``msgtype`` (known to the rosbags ``typestore``) begins with a
    ``std_msgs/Header``, so :func:`cdr_header_stamp` applies to its serialized messages."""
    fields = typestore.fielddefs[msgtype][1]
    return bool(fields) and fields[0][1] == (Nodetype.NAME, 'std_msgs/msg/Header')


def cdr_header_stamp(data: bytes | memoryview) -> int | None:
    """Header stamp (ns) of a serialized (CDR) message that begins with a ``std_msgs/Header``,
    read without deserializing; None for a message too short to hold one."""
    if len(data) < 12:
        return None
    sec, nanosec = struct.unpack_from('<iI' if data[1] & 1 else '>iI', data, 4)
    return sec * 1_000_000_000 + nanosec
