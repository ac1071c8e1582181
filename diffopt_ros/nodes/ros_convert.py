"""Message <-> array conversions shared by the nodes (REP-103 axes, SI units).

Planar states follow the package convention ``(x, y, yaw, v, omega)``: position in m, yaw in
rad (counter-clockwise, z up), forward speed in m/s and yaw rate in rad/s, both in the body
frame (``base_link``).
"""
from __future__ import annotations

import array
import math

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Quaternion, Twist
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import LaserScan


class MessageError(ValueError):
    """A message that cannot be used (non-finite values, wrong shape); says what and where."""


def stamp_to_sec(stamp: Time) -> float:
    """``builtin_interfaces/Time`` -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    """Seconds -> ``builtin_interfaces/Time`` (rounded to the nanosecond)."""
    nanos = int(round(seconds * 1e9))
    return Time(sec=nanos // 1_000_000_000, nanosec=nanos % 1_000_000_000)


def yaw_to_quaternion(yaw: float) -> Quaternion:
    """Rotation about z by ``yaw`` rad -> ``geometry_msgs/Quaternion``."""
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0))


#: Quaternions with a norm below this are rejected: no rotation can be read from them (an
#: all-zero quaternion is what an unset orientation field holds).
MIN_QUATERNION_NORM = 1e-6


def quaternion_to_yaw(q: Quaternion, where: str = 'orientation') -> float:
    """Yaw (rad, in (-pi, pi]) of a quaternion (roll and pitch are ignored).

    The quaternion is normalised first: ``(0, 0, 2.12, 2.12)`` is a yaw of 90 degrees.

    Raises:
        MessageError: a component is not finite, or the norm is below
            :data:`MIN_QUATERNION_NORM` (e.g. ``(0, 0, 0, 0)``); ``where`` names the field.
    """
    x, y, z, w = q.x, q.y, q.z, q.w
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(norm):
        raise MessageError(f'{where}: non-finite quaternion ({x}, {y}, {z}, {w})')
    if norm < MIN_QUATERNION_NORM:
        raise MessageError(f'{where}: quaternion ({x}, {y}, {z}, {w}) has norm {norm:.3g}: '
                           'no rotation (an unset orientation?)')
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise MessageError(f'{what}: non-finite value in {values.tolist()}')
    return values


def odometry_to_state(msg: Odometry, where: str = 'odometry') -> np.ndarray:
    """``nav_msgs/Odometry`` -> state ``(5,)`` ``[x, y, yaw, v, omega]`` (float64).

    Raises:
        MessageError: a NaN or Inf anywhere in pose or twist, or a zero quaternion (``where``
            names the topic).
    """
    p, q, t = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
    yaw = quaternion_to_yaw(q, f'{where}: orientation')
    state = np.array([p.x, p.y, yaw, t.linear.x, t.angular.z], dtype=np.float64)
    return _finite(state, f'{where}: state')


def state_to_odometry(state, stamp: Time, frame_id: str = 'odom',
                      child_frame_id: str = 'base_link', pose_covariance=None,
                      twist_covariance=None, out: Odometry | None = None) -> Odometry:
    """State ``[x, y, yaw, v, omega]`` -> ``nav_msgs/Odometry`` (covariances 6x6 row-major).

    ``out``: an Odometry to fill in place and return (a publisher at high rate saves building
    the nested message each time; fields not set here keep their values).
    """
    x, y, yaw, v, omega = (float(s) for s in state[:5])
    msg = Odometry() if out is None else out
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x = x
    msg.pose.pose.position.y = y
    msg.pose.pose.orientation = yaw_to_quaternion(yaw)
    msg.twist.twist.linear.x = v
    msg.twist.twist.angular.z = omega
    if pose_covariance is not None:  # a float64 array is taken as is (a list is checked per item)
        msg.pose.covariance = np.asarray(pose_covariance, dtype=np.float64).reshape(36)
    if twist_covariance is not None:
        msg.twist.covariance = np.asarray(twist_covariance, dtype=np.float64).reshape(36)
    return msg


def pose_to_xy_yaw(msg: PoseStamped, where: str = 'pose') -> np.ndarray:
    """``geometry_msgs/PoseStamped`` -> ``(3,)`` ``[x, y, yaw]``; raises MessageError if not
    finite or the quaternion is zero (:func:`quaternion_to_yaw`)."""
    p, q = msg.pose.position, msg.pose.orientation
    _finite(np.array([p.x, p.y]), f'{where}: position')
    return np.array([p.x, p.y, quaternion_to_yaw(q, f'{where}: orientation')], dtype=np.float64)


def xy_yaw_to_pose(pose, stamp: Time, frame_id: str) -> PoseStamped:
    """``[x, y, yaw]`` -> ``geometry_msgs/PoseStamped``."""
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x = float(pose[0])
    msg.pose.position.y = float(pose[1])
    msg.pose.orientation = yaw_to_quaternion(float(pose[2]))
    return msg


def poses_to_path(poses, stamp: Time, frame_id: str) -> Path:
    """Array ``(T, >=3)`` of ``[x, y, yaw, ...]`` rows -> ``nav_msgs/Path``."""
    msg = Path()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.poses = [xy_yaw_to_pose(row, stamp, frame_id) for row in np.asarray(poses)]
    return msg


def path_to_poses(msg: Path, where: str = 'path') -> np.ndarray:
    """``nav_msgs/Path`` -> ``(T, 3)`` array of ``[x, y, yaw]``; raises MessageError if not finite."""
    if not msg.poses:
        return np.zeros((0, 3))
    return np.stack([pose_to_xy_yaw(p, f'{where}[{i}]') for i, p in enumerate(msg.poses)])


def twist(v: float, omega: float) -> Twist:
    """Forward speed (m/s) and yaw rate (rad/s) -> ``geometry_msgs/Twist``."""
    msg = Twist()
    msg.linear.x = float(v)
    msg.angular.z = float(omega)
    return msg


def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str,
                      values: dict) -> DiagnosticStatus:
    """A ``diagnostic_msgs/DiagnosticStatus`` with ``values`` as key/value strings.

    ``level`` is one of ``DiagnosticStatus.OK``, ``WARN``, ``ERROR``, ``STALE``.
    """
    return DiagnosticStatus(
        level=level, name=name, hardware_id=hardware_id, message=message,
        values=[KeyValue(key=str(k), value=f'{v:.6g}' if isinstance(v, float) else str(v))
                for k, v in values.items()])


def ranges_to_scan(ranges, stamp: Time, frame_id: str, angle_min: float, angle_increment: float,
                   range_min: float, range_max: float, scan_time: float = 0.0) -> LaserScan:
    """Ranges ``(N,)`` (m; ``inf`` = no return, REP-117) -> ``sensor_msgs/LaserScan``.

    Beam ``i`` points at ``angle_min + i * angle_increment`` (rad) in ``frame_id``; the scan is
    taken at one instant (``time_increment`` 0); ``scan_time`` is the time between scans (s).
    """
    ranges = np.asarray(ranges, dtype=np.float32).reshape(-1)
    msg = LaserScan()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.angle_min = float(angle_min)
    msg.angle_increment = float(angle_increment)
    msg.angle_max = float(angle_min + angle_increment * max(len(ranges) - 1, 0))
    msg.time_increment = 0.0
    msg.scan_time = float(scan_time)
    msg.range_min = float(range_min)
    msg.range_max = float(range_max)
    msg.ranges = array.array('f', ranges.tobytes())
    return msg


def check_scan_geometry(msg: LaserScan, where: str = 'scan') -> None:
    """Raise :class:`MessageError` unless the beam geometry of a ``LaserScan`` is usable.

    ``angle_min``, ``angle_max``, ``angle_increment``, ``range_min`` and ``range_max`` must be
    finite, ``angle_increment`` non-zero, ``0 <= range_min < range_max``, and the last beam,
    ``angle_min + (N - 1) angle_increment``, must be ``angle_max`` within half a beam (drivers
    round the beam count; anything more is a wrong header: the beams would be drawn at the
    wrong angles).
    """
    angle_min, angle_max, increment = msg.angle_min, msg.angle_max, msg.angle_increment
    numbers = {'angle_min': angle_min, 'angle_max': angle_max, 'angle_increment': increment,
               'range_min': msg.range_min, 'range_max': msg.range_max}
    bad = [f'{name} {value}' for name, value in numbers.items() if not math.isfinite(value)]
    if bad:
        raise MessageError(f'{where}: non-finite {", ".join(bad)}')
    if increment == 0.0:
        raise MessageError(f'{where}: angle_increment is 0')
    if not 0.0 <= msg.range_min < msg.range_max:
        raise MessageError(f'{where}: range_min {msg.range_min} and range_max {msg.range_max} '
                           'do not satisfy 0 <= range_min < range_max')
    count = len(msg.ranges)
    if count == 0:      # no beams: nothing drawn at a wrong angle (a user skips it as empty)
        return
    last = angle_min + (count - 1) * increment
    if abs(last - angle_max) > 0.5 * abs(increment) + 1e-6:
        raise MessageError(
            f'{where}: {count} beams from angle_min {angle_min:.6g} rad in steps of '
            f'angle_increment {increment:.6g} rad end at {last:.6g} rad, not at angle_max '
            f'{angle_max:.6g} rad')


def scan_to_ranges(msg: LaserScan, where: str = 'scan') -> tuple[np.ndarray, np.ndarray]:
    """``sensor_msgs/LaserScan`` -> ``(ranges (N,), angles (N,))`` float64 (m, rad in the scan
    frame). Ranges outside ``[range_min, range_max]`` or non-finite become ``inf``.

    Raises:
        MessageError: the beam geometry is not usable (:func:`check_scan_geometry`).
    """
    check_scan_geometry(msg, where)
    ranges = np.array(msg.ranges, dtype=np.float64)
    angles = msg.angle_min + msg.angle_increment * np.arange(len(ranges))
    valid = np.isfinite(ranges) & (ranges >= msg.range_min) & (ranges <= msg.range_max)
    ranges[~valid] = np.inf
    return ranges, angles
