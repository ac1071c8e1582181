"""mpc_node in-process with the robot bases other than diff_drive_lag, tracking a goal without
navigation: ``model: unicycle``, ``model: bicycle`` (a Twist), and ``cmd_steering_angle``
(angular.z is the car's steering angle). The rig is test_mpc_node's."""
import math

import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
from test_mpc_node import Rig, rig  # noqa: F401  (rig: the fixture)

from diffopt_ros.nodes.mpc_node import MpcNode
from diffopt_ros.nodes.params import ParameterError

AT_REST = [0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize('model', ['unicycle', 'bicycle'])
def test_tracks_a_goal_with_each_base(rig, model):  # noqa: F811
    r = rig(model=model)
    r.goal(2.0, 1.0)
    r.spin_for(0.5, AT_REST)
    r.spin_until_tracking(AT_REST)
    v, omega = r.last_cmd()
    assert v > 0.1 and omega > 0.05                       # forward, turning left towards y > 0
    xy = [(p.pose.position.x, p.pose.position.y) for p in r.paths[-1].poses]
    assert math.dist(xy[-1], (2.0, 1.0)) < math.dist(xy[0], (2.0, 1.0)) - 0.3
    assert r.last_status()[1] == 'goal'


def test_car_sends_its_steering_angle_within_the_limit():
    """A goal sharply to the left: the steering saturates at bounds.max_steer, and angular.z carries
    that angle (rad), not the yaw rate v tan(steer) / wheelbase the Twist car sends."""
    max_steer, wheelbase = 0.4, 0.5
    params = {'model': 'bicycle', 'bounds.max_steer': max_steer, 'model.wheelbase': wheelbase}
    sent = {}
    for steering_angle in (True, False):     # one after the other: one node name at a time
        r = Rig(**params, cmd_steering_angle=steering_angle)
        try:
            r.goal(0.5, 1.5)
            r.spin_for(0.5, AT_REST)
            sent[steering_angle] = r.last_cmd()
        finally:
            r.close()
    v, steer = sent[True]
    assert v > 0.05 and steer == pytest.approx(max_steer, abs=1e-9)
    v, omega = sent[False]
    assert v > 0.05 and omega == pytest.approx(v * math.tan(max_steer) / wheelbase, rel=1e-9)


def test_steering_angle_only_with_the_car(rig):  # noqa: F811
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ParameterError, match='cmd_steering_angle needs model bicycle'):
            MpcNode(context=context, parameter_overrides=[Parameter('cmd_steering_angle', value=True)])
    finally:
        rclpy.try_shutdown(context=context)
    r = rig(model='bicycle', cmd_steering_angle=True)
    result = r.mpc.set_parameters([Parameter('model', value='diff_drive_lag')])[0]
    assert not result.successful and 'cmd_steering_angle needs model bicycle' in result.reason
    assert r.mpc.get_parameter('model').value == 'bicycle'
