"""Scans paired with odometry (diffopt_ros.slam.inputs.ScanSync, slam_node's input logic)."""
import pytest

from diffopt_ros.slam.inputs import ScanSync
from diffopt_ros.slam.odometry import StampError


def test_a_scan_waits_for_odometry_and_a_newer_one_replaces_it():
    sync = ScanSync()
    sync.clock(10.0)
    assert sync.add_odometry(1.0, (0.0, 0.0, 0.0), 0.1) is None
    assert sync.add_scan((1.05, 'a'), 0.1) is None           # odometry not there yet: it waits
    assert sync.add_scan((1.08, 'b'), 0.1) is None           # replaces the waiting one
    assert sync.dropped == 1
    scan, pose = sync.add_odometry(1.1, (1.0, 0.0, 0.0), 0.1)
    assert scan == (1.08, 'b') and pose == pytest.approx((0.8, 0.0, 0.0))
    assert sync.add_odometry(1.2, (2.0, 0.0, 0.0), 0.1) is None   # nothing waits any more
    scan, pose = sync.add_scan((1.15, 'c'), 0.1)                 # odometry is ahead: paired now
    assert pose == pytest.approx((1.5, 0.0, 0.0))
    _, none = sync.add_scan((0.5, 'old'), 0.1)                   # no odometry within 0.1 s
    assert none is None


def test_stamps_must_increase_until_the_clock_jumps_back():
    sync = ScanSync()
    sync.clock(5.0)
    sync.check_scan_stamp(1.0)
    with pytest.raises(StampError, match='not after the previous scan'):
        sync.check_scan_stamp(1.0)
    sync.add_odometry(2.0, (0.0, 0.0, 0.0), 0.1)
    with pytest.raises(StampError):
        sync.add_odometry(1.5, (0.0, 0.0, 0.0), 0.1)
    assert sync.clock(6.0) == 0.0
    assert sync.clock(1.0) == pytest.approx(5.0)               # a simulator reset
    sync.check_scan_stamp(0.2)
    assert sync.add_odometry(0.1, (0.0, 0.0, 0.0), 0.1) is None
