"""slam_node in-process (sim data in, /slam/* out, services, bad inputs, parameters) and as a
separate process from the installed console script with config/slam.yaml."""
import gc
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import LaserScan
from std_srvs.srv import Trigger

from diffopt_ros.nodes import ros_convert, slam_node
from diffopt_ros.nodes.executors import ExecutorThread
from diffopt_ros.nodes.params import ParameterError, read_params_file
from diffopt_ros.nodes.slam_node import PARAMS, SlamNode
from diffopt_ros.paths import config_path
from diffopt_ros.sim import SensorParams, Simulator, World
from diffopt_ros.sim.cli import expand_script, route_script
from diffopt_ros.slam.config import PARAMETERS, SlamConfig, config_from_params

from ros_wait import wait_for

SENSORS = SensorParams()
DT = 0.05


@pytest.fixture(scope='module')
def drive():
    """The first 12 s of the loop route: odometry at 20 Hz, scans at 10 Hz."""
    world = World.load('loop')
    sim = Simulator(world, seed=0)
    commands = expand_script(route_script(world.start, world.route, sim.robot), DT)[:240]
    return sim.rollout(commands, DT, scan_every=2)


class Feeder:
    """Publishes /odom and /scan and records everything slam_node publishes."""

    def __init__(self, context):
        self.node = rclpy.create_node('slam_feeder', context=context)
        self.odom = self.node.create_publisher(Odometry, '/odom', 50)
        self.scan = self.node.create_publisher(LaserScan, '/scan', qos_profile_sensor_data)
        self.got = {'pose': [], 'odom': [], 'path': [], 'diag': []}
        sub = self.node.create_subscription
        sub(PoseWithCovarianceStamped, '/slam/pose', self.got['pose'].append, 100)
        sub(Odometry, '/slam/odom', self.got['odom'].append, 1000)
        sub(PathMsg, '/slam/path', self.got['path'].append, 100)
        sub(DiagnosticArray, '/diagnostics', self.got['diag'].append, 100)

    def publish_odom(self, t, state):
        self.odom.publish(ros_convert.state_to_odometry(state, ros_convert.sec_to_stamp(t)))

    def publish_scan(self, t, ranges):
        self.scan.publish(ros_convert.ranges_to_scan(
            ranges, ros_convert.sec_to_stamp(t), 'base_scan', SENSORS.lidar_angles()[0],
            SENSORS.lidar_increment, SENSORS.lidar_range_min, SENSORS.lidar_range_max))

    def play(self, rollout, until=None, pace=0.01, handled=None):
        """Publish the rollout in stamp order (odometry first at equal stamps).

        With ``handled`` (a function giving how many scans the node has dealt with), wait after
        each scan until the node has dealt with the one before it (the newest may wait for the
        next odometry message): lock-step, so a loaded machine changes the timing but not what
        the node sees.
        """
        scans = dict(zip(rollout.scan_steps.tolist(), rollout.scans))
        published = 0
        for k in range(len(rollout.time) if until is None else until):
            self.publish_odom(rollout.time[k], rollout.odometry[k])
            if k in scans:
                self.publish_scan(rollout.time[k], scans[k])
                published += 1
                if handled is not None:   # the newest scan may wait for the next odometry
                    wait_for(lambda n=published: handled() >= n - 1, timeout=30.0)
            time.sleep(pace)


def scans_handled(stats):
    """Scans the node has dealt with: processed, dropped, skipped or rejected."""
    return stats.scans + stats.dropped_scans + stats.skipped_scans + stats.rejected_scans


def start(context, nodes) -> ExecutorThread:
    """``nodes`` spun by a 3-thread executor in the background until :func:`stop`."""
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    for node in nodes:
        executor.add_node(node)
    return ExecutorThread(executor)


def stop(spinner: ExecutorThread, nodes):
    spinner.stop()
    for node in nodes:
        node.destroy_node()


def start_with_feeder(context, slam) -> tuple[Feeder, ExecutorThread]:
    """``slam`` and a :class:`Feeder` spun in the background, once each sees the other's topics."""
    feeder = Feeder(context)
    spinner = start(context, [slam, feeder.node])
    if not wait_for(lambda: slam.count_subscribers('/slam/pose') > 0
                    and feeder.node.count_subscribers('/scan') > 0):
        stop(spinner, [slam, feeder.node])
        raise AssertionError('slam_node and the feeder did not discover each other')
    return feeder, spinner


def make_node(context, **values):
    return SlamNode(context=context, parameter_overrides=[Parameter(k, value=v)
                                                           for k, v in values.items()])


def test_node_in_process_publishes_pose_odom_path_map_and_saves(context, drive, tmp_path):
    thresholds = gc.get_threshold()
    slam = make_node(context, **{'save.directory': str(tmp_path), 'map.publish_period': 0.2,
                                 'gc.full_collection_period': 0.05})
    feeder, spinner = start_with_feeder(context, slam)
    try:
        # full garbage collections only when the worker is idle (diffopt_ros.idle_gc)
        assert gc.get_threshold()[2] > thresholds[2]
        stats = slam.stats
        feeder.play(drive, handled=lambda: scans_handled(stats))   # lock-step: load changes timing only
        assert wait_for(lambda: stats.scans + stats.dropped_scans >= 0.9 * len(drive.scans)
                        and feeder.got['path']
                        and len(feeder.got['path'][-1].poses) == stats.keyframes)
        # no throughput assertion (bench/slam.py measures speed): only what is published
        assert stats.scans >= 2 and stats.keyframes >= 2
        pose = feeder.got['pose'][-1]
        assert pose.header.frame_id == 'map'
        cov = np.array(pose.pose.covariance).reshape(6, 6)
        assert cov[0, 0] > 0 and cov[5, 5] > 0 and np.allclose(cov, cov.T)
        # /slam/odom at odometry rate, in the map frame, close to the truth (map = start frame)
        assert len(feeder.got['odom']) >= 0.5 * len(drive.time)
        last = feeder.got['odom'][-1]
        assert (last.header.frame_id, last.child_frame_id) == ('map', 'base_link')
        travelled = drive.true_states[-1, 0] - drive.true_states[0, 0]
        assert abs(last.pose.pose.position.x - travelled) < 0.2
        assert len(feeder.got['path'][-1].poses) == stats.keyframes
        status = feeder.got['diag'][-1].status[0]
        values = {v.key: v.value for v in status.values}
        assert 'slam' in status.name and {'update_time_ms', 'keyframes', 'loop_closures',
                                          'full_gc_collections'} <= set(values)
        assert values['unmatched_keyframes'] == str(slam.slam.unmatched_keyframes)
        assert slam._collector.collections >= 1     # scans handled one by one: idle between
        # a late subscriber still gets the (transient-local) map
        maps = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        feeder.node.create_subscription(OccupancyGrid, '/map', maps.append, latched)
        assert wait_for(lambda: maps)
        grid = maps[-1]
        assert grid.info.width * grid.info.height == len(grid.data) and 100 in grid.data
        # services
        for name, files in (('save_graph', ('slam_graph.g2o', 'slam_graph.npz')),
                            ('save_map', ('map.pgm', 'map.yaml'))):
            client = feeder.node.create_client(Trigger, f'/slam_node/{name}')
            assert client.wait_for_service(timeout_sec=5.0)
            future = client.call_async(Trigger.Request())
            assert wait_for(future.done)
            assert future.result().success, future.result().message
            assert all((tmp_path / f).is_file() for f in files)
        assert yaml.safe_load((tmp_path / 'map.yaml').read_text())['image'] == 'map.pgm'
    finally:
        stop(spinner, [slam, feeder.node])
    assert gc.get_threshold() == thresholds        # given back when the node is destroyed


def test_a_long_map_cast_does_not_hold_up_scans(context, drive, monkeypatch):
    """/map is cast on its own thread, outside the SLAM lock: while a cast is stuck (as a long
    re-cast after a loop closure would be), every scan is still processed."""
    entered, release = threading.Event(), threading.Event()
    cast = slam_node.updated_mapper

    def stuck(*args):
        entered.set()
        release.wait(300.0)
        return cast(*args)

    monkeypatch.setattr(slam_node, 'updated_mapper', stuck)
    slam = make_node(context, **{'map.publish_period': 0.05})
    feeder, spinner = start_with_feeder(context, slam)
    try:
        stats = slam.stats
        scans, published = dict(zip(drive.scan_steps.tolist(), drive.scans)), 0
        for k in range(60):    # lock-step, as Feeder.play, but failing at the first stall
            feeder.publish_odom(drive.time[k], drive.odometry[k])
            # odometry has passed every scan sent so far: each must be processed (waiting for
            # it also keeps a scan from being replaced while it waits for the next odometry)
            assert wait_for(lambda n=published: stats.scans >= n, timeout=20.0), (
                f'scan {published} not processed while /map is being cast')
            if k in scans:
                feeder.publish_scan(drive.time[k], scans[k])
                published += 1
            time.sleep(0.01)
        assert entered.is_set() and not release.is_set()   # the cast is still stuck
        assert stats.keyframes >= 2 and stats.dropped_scans == 0 and stats.scans >= published - 1
    finally:
        release.set()
        stop(spinner, [slam, feeder.node])


def test_bad_inputs_are_rejected_or_skipped(context, drive):
    slam = make_node(context)
    feeder = Feeder(context)
    spinner = start(context, [slam, feeder.node])
    try:
        assert wait_for(lambda: feeder.node.count_subscribers('/scan') > 0
                        and feeder.node.count_subscribers('/odom') > 0)
        feeder.play(drive, until=21, handled=lambda: scans_handled(slam.stats))   # t = 0 .. 1 s
        assert wait_for(lambda: slam.stats.scans >= 8)
        stats = slam.stats
        feeder.publish_odom(1.1, np.array([math.nan, 0.0, 0.0, 0.0, 0.0]))     # NaN odometry
        feeder.publish_odom(0.5, drive.odometry[10])                          # back in time
        assert wait_for(lambda: stats.rejected_odom >= 2)
        feeder.publish_odom(1.1, drive.odometry[22])
        feeder.publish_scan(0.9, drive.scans[0])                              # back in time
        assert wait_for(lambda: stats.rejected_scans >= 1)
        skipped = stats.skipped_scans
        feeder.publish_scan(1.1, np.full(SENSORS.lidar_beams, np.inf))        # all inf
        feeder.publish_scan(1.15, np.zeros(0))                                # empty
        assert wait_for(lambda: stats.skipped_scans >= skipped + 2)
        assert stats.errors == 0 and slam.slam.num_keyframes >= 1
    finally:
        stop(spinner, [slam, feeder.node])


def test_parameters_are_validated_at_run_time(context):
    slam = make_node(context, device='cuda')
    try:
        expected = 'cuda' if torch.cuda.is_available() else 'cpu'   # falls back with a warning
        assert slam.slam.device.type == expected
        result = slam.set_parameters([Parameter('weights.odom_xy', value=-1.0)])[0]
        assert not result.successful and 'weights.odom_xy' in result.reason
        result = slam.set_parameters([Parameter('device', value='cuda')])[0]
        assert not result.successful and 'read-only' in result.reason.lower()
        result = slam.set_parameters([Parameter('icp.inlier_distance', value=5.0)])[0]
        assert not result.successful and 'icp.max_correspondence_distance' in result.reason
        assert slam.get_parameter('weights.odom_xy').value == SlamConfig().weights.odom_xy
        assert slam.set_parameters([Parameter('weights.scan_xy', value=555.0)])[0].successful
        assert slam.slam.config.weights.scan_xy == 555.0
    finally:
        slam.destroy_node()


def test_learned_params_file_overrides_and_bad_values_stop_the_node(context, tmp_path):
    learned = tmp_path / 'learned.yaml'
    learned.write_text('slam_node:\n  ros__parameters:\n    weights.odom_xy: 123\n'
                       '    robust.scale: 2.5\n')
    slam = make_node(context, learned_params_file=str(learned))
    try:
        assert slam.get_parameter('weights.odom_xy').value == 123.0
        assert slam.slam.config.weights.odom_xy == 123.0 and slam.slam.config.weights.robust_scale == 2.5
    finally:
        slam.destroy_node()
    learned.write_text('slam_node:\n  ros__parameters:\n    weights.scan_yaw: -4.0\n')
    with pytest.raises(ParameterError, match='weights.scan_yaw'):
        make_node(context, learned_params_file=str(learned))
    with pytest.raises(ParameterError, match='keyframe.distance'):
        make_node(context, **{'keyframe.distance': 0.0})


def test_params_file_declares_every_core_setting():
    declared = {spec.name: spec for spec in PARAMS}
    assert set(PARAMETERS) <= set(declared)
    values = read_params_file(str(config_path('slam.yaml')), 'slam_node')
    assert set(values) == set(declared)
    assert all(declared[name].reason_to_reject(value) is None for name, value in values.items())
    assert config_from_params(values) == SlamConfig()     # the file states the core defaults


# ---------------------------------------------------------------------- separate process
def _executable() -> str:
    return str(Path(sys.executable).parent / 'slam_node')


@pytest.mark.slow
def test_invalid_params_file_stops_the_process_with_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(config_path('slam.yaml').read_text().replace('loop.search_radius: 3.0',
                                                                'loop.search_radius: -2.0'))
    proc = subprocess.run([_executable(), '--ros-args', '--params-file', str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert 'loop.search_radius' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_process_with_params_file_publishes_pose_and_stops_cleanly(context, drive, stop_process):
    proc = subprocess.Popen([_executable(), '--ros-args', '--params-file',
                             str(config_path('slam.yaml'))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    feeder = Feeder(context)
    spinner = start(context, [feeder.node])
    try:
        assert wait_for(lambda: feeder.node.count_subscribers('/scan') > 0
                        and feeder.node.count_publishers('/slam/pose') > 0, timeout=30.0), \
            'slam_node did not appear'
        assert wait_for(lambda: feeder.node.count_subscribers('/odom') > 0)
        time.sleep(0.5)   # let the publisher see the subscriber's endpoints too
        feeder.play(drive, until=60)
        assert wait_for(lambda: feeder.got['pose'] and feeder.got['odom'], timeout=10.0)
        assert feeder.got['pose'][-1].header.frame_id == 'map'
    finally:
        stop(spinner, [feeder.node])
        out = stop_process(proc)
    assert proc.returncode == 0, out
