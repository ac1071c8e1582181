"""Global planner on the inflated grid: doorways, enclosed goals, clearance of the path."""
from dataclasses import replace

import numpy as np
import torch

from diffopt_ros.maps import world_grid
from diffopt_ros.planning import GridPlanner
from diffopt_ros.sim import World

RADIUS = 0.2


def _room_with_door(door_width: float) -> World:
    """Two 4 m x 4 m rooms side by side; the wall between them at x = 4 has a door centred at y = 1."""
    lower, upper = 1.0 - door_width / 2, 1.0 + door_width / 2
    return World.from_dict({'start': [1.0, 1.0, 0.0],
                            'walls': [{'box': [0, 0, 8, 4]}, [4, 0, 4, lower], [4, upper, 4, 4]]})


def _min_clearance(world: World, path: np.ndarray) -> float:
    dense = np.concatenate([np.linspace(a, b, 20) for a, b in zip(path[:-1], path[1:])])
    return min(world.clearance(p) for p in dense)


def test_path_through_a_doorway():
    world = _room_with_door(1.5 * 2 * RADIUS + 0.1)         # 0.7 m: 1.75x the robot's width
    planner = GridPlanner.from_occupancy(world_grid(world, 0.05), RADIUS)
    plan = planner.plan([1.0, 3.0], [7.0, 3.0])
    assert plan.reachable, plan.reason
    crossing = plan.path[np.argmin(np.abs(plan.path[:, 0] - 4.0))]
    assert abs(crossing[1] - 1.0) < 0.35, 'the path goes through the door'
    assert _min_clearance(world, plan.path) > RADIUS
    straight = np.hypot(6.0, 0.0)
    assert straight < plan.length < straight + 2 * 2.1       # down to the door and back up


def test_enclosed_goal_is_unreachable():
    world = World.from_dict({'start': [1.0, 1.0, 0.0],
                             'walls': [{'box': [0, 0, 8, 4]}, {'box': [5, 1, 7, 3]}]})
    planner = GridPlanner.from_occupancy(world_grid(world, 0.05), RADIUS)
    plan = planner.plan([1.0, 2.0], [6.0, 2.0])
    assert not plan.reachable and 'no collision-free path' in plan.reason
    assert len(plan.path) == 0 and plan.length == np.inf
    # a door narrower than the robot is no way in either
    narrow = _room_with_door(0.3)
    plan = GridPlanner.from_occupancy(world_grid(narrow, 0.05), RADIUS).plan([1.0, 3.0], [7.0, 3.0])
    assert not plan.reachable
    # a goal on a wall is reported as such
    plan = planner.plan([1.0, 2.0], [5.0, 2.0])
    assert not plan.reachable and 'robot radius' in plan.reason


def test_walls_leave_no_gap_in_the_grid():
    """A wall on a cell boundary, off it, or diagonal: the room behind it stays unreachable."""
    for wall in ([4.0, 0, 4.0, 4], [4.025, 0, 4.025, 4], [4.0133, 0, 4.0133, 4], [3.0, 0, 5.0, 4],
                 [3.3, 0, 4.1, 4]):
        world = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}, wall]})
        plan = GridPlanner.from_occupancy(world_grid(world, 0.05), 0.05).plan([1.0, 2.0], [7.0, 2.0])
        assert not plan.reachable, f'the grid has a gap in wall {wall}'
    # the clutter world's east wall (x = 8) runs along cell edges: the way round is by its door
    world = World.load('clutter')
    plan = GridPlanner.from_occupancy(world_grid(world, 0.05), RADIUS).plan([7.0, 5.0], [9.0, 5.0])
    assert plan.reachable and plan.length > 6.0
    assert _min_clearance(world, plan.path) > RADIUS


def test_navigator_replans_round_an_obstacle_the_map_lacks():
    from diffopt_ros.navigation import Navigator

    mapped = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 2]}]})
    navigator = Navigator(world_grid(mapped, 0.05))
    plan = navigator.set_goal([1.0, 1.0], [7.0, 1.0])
    assert abs(plan.path[len(plan.path) // 2, 1] - 1.0) < 0.1, 'the empty corridor: down the middle'
    state = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    navigator.step(state, 0.0)
    # a scan sees a post at (2.5, 0.7) (radius 0.3) and the corridor walls
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    post = np.column_stack([2.5 + 0.3 * np.cos(angles), 0.7 + 0.3 * np.sin(angles)])
    walls = np.column_stack([np.linspace(0, 8, 80), np.zeros(80)])
    navigator.set_scan_points(np.concatenate([post, walls]))
    step = navigator.step(state, 0.05)
    assert step.replanned and navigator.plan.reachable
    gaps = np.hypot(*(navigator.plan.path[:, None] - post[None]).transpose(2, 0, 1)).min()
    assert gaps > RADIUS, 'the new path keeps the robot radius from the post'
    assert not navigator.step(state, 0.1).replanned, 'the new path is not blocked'


def test_a_goal_blocked_only_by_scan_points_is_tried_again():
    from diffopt_ros.navigation import Navigator, NavSettings

    mapped = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 2]}]})
    navigator = Navigator(world_grid(mapped, 0.05), nav=NavSettings(retry_period=1.0))
    navigator.set_goal([1.0, 1.0], [7.0, 1.0])
    state = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    navigator.step(state, 0.0)
    # a scan sees a wall across the corridor at x = 2.5 (a door closed, a person standing)
    across = np.column_stack([np.full(40, 2.5), np.linspace(0.0, 2.0, 40)])
    navigator.set_scan_points(across)
    step = navigator.step(state, 0.05)
    assert step.mode == 'blocked' and not step.command.any()
    assert navigator.step(state, 0.5).mode == 'blocked', 'stands still until the next try'
    navigator.set_scan_points(np.zeros((0, 2)))            # the way is clear again
    assert navigator.step(state, 0.9).mode == 'blocked', 'not tried before retry_period'
    step = navigator.step(state, 1.1)
    assert step.replanned and step.mode == 'tracking' and navigator.plan.reachable


def test_scan_points_near_mapped_walls_do_not_block_points_in_free_space_do():
    """A scan placed with a pose estimate 0.28 m off puts the corridor's wall 0.28 m off the
    map's: within ``scan_map_margin`` the points are the map's and do not block a goal 0.45 m
    from the wall; a post in the free corridor still does."""
    from diffopt_ros.navigation import Navigator, NavSettings

    mapped = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 2]}]})
    state = np.array([5.5, 1.0, 0.0, 0.0, 0.0])
    shifted_wall = np.column_stack([np.linspace(0, 8, 160), np.full(160, 0.28)])
    for margin, mode in ((0.3, 'tracking'), (0.1, 'blocked')):
        navigator = Navigator(world_grid(mapped, 0.05), nav=NavSettings(scan_map_margin=margin))
        assert navigator.set_goal(state[:2], [7.0, 0.45]).reachable
        navigator.step(state, 0.0)
        navigator.set_scan_points(shifted_wall)
        assert navigator.step(state, 0.05).mode == mode, f'margin {margin}'
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    post = np.column_stack([6.5 + 0.3 * np.cos(angles), 0.7 + 0.3 * np.sin(angles)])
    navigator = Navigator(world_grid(mapped, 0.05))
    navigator.set_goal(state[:2], [7.5, 1.0])
    navigator.step(state, 0.0)
    navigator.set_scan_points(np.concatenate([post, shifted_wall]))
    step = navigator.step(state, 0.05)
    assert step.replanned and navigator.plan.reachable
    gaps = np.hypot(*(navigator.plan.path[:, None] - post[None]).transpose(2, 0, 1)).min()
    assert gaps > RADIUS, 'the new path keeps the robot radius from the post'


def test_the_stop_zone_cuts_the_speed_to_the_free_distance_along_the_heading():
    from diffopt_ros.navigation import Navigator, NavSettings

    world = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}]})
    navigator = Navigator(world_grid(world, 0.05), nav=NavSettings(radius=RADIUS, stop_margin=0.05))
    reach = RADIUS + 0.05
    state = np.array([2.0, 2.0, np.pi / 2, 0.0, 0.0])            # heading +y
    navigator.set_scan_points([[2.0, 2.5]])                        # 0.5 m straight ahead
    assert np.isclose(navigator._free_distance(state, 0.5), 0.5 - reach)
    assert navigator._free_distance(state, -0.5) is None           # reversing: behind is free
    navigator.set_scan_points([[2.1, 2.4]])                        # ahead, 0.1 m to the side
    assert np.isclose(navigator._free_distance(state, 0.5), 0.4 - np.sqrt(reach ** 2 - 0.1 ** 2))
    navigator.set_scan_points([[2.0 - reach - 0.01, 2.3]])        # beside the swept band
    assert navigator._free_distance(state, 0.5) is None
    navigator.set_scan_points([[2.0, 2.2]])                        # inside the margin: stop
    assert navigator._free_distance(state, 0.5) == 0.0
    navigator.set_scan_points([[2.0, 1.8]])                        # behind, inside the margin
    assert navigator._free_distance(state, -0.2) == 0.0 and navigator._free_distance(state, 0.2) is None
    off = Navigator(world_grid(world, 0.05), nav=NavSettings(radius=RADIUS, stop_margin=-1.0))
    off.set_scan_points([[2.0, 2.2]])
    assert off._free_distance(state, 0.5) is None


def test_arc_contact_is_the_first_touch_of_a_dense_sweep_along_the_arc():
    """The closed form against the disc swept along the arc in 0.1 mm steps: for points on
    every side, turns of both signs from gentle to tight, and the straight line."""
    from diffopt_ros.navigation import arc_contact

    rng = np.random.default_rng(3)
    points = rng.uniform([-1.5, -1.5], [1.5, 1.5], (60, 2))
    reach, step = 0.25, 1e-4
    for curvature in (0.0, 0.4, -0.4, 2.0, -2.0, 6.0, -6.0, 30.0):
        length = 2 * np.pi / abs(curvature) if curvature else 3.0
        s = np.arange(0.0, length, step)
        if curvature:
            turn = 1.0 / curvature
            path = np.stack([np.sin(s / turn) * turn, (1 - np.cos(s / turn)) * turn], 1)
        else:
            path = np.stack([s, 0 * s], 1)
        gaps = np.hypot(*(path[:, None] - points[None]).transpose(2, 0, 1))     # (K, N)
        for n in range(len(points)):
            touching = gaps[:, n] <= reach
            if touching[0]:
                expected = 0.0 if gaps[1, n] < gaps[0, n] else np.inf     # approaching or leaving
            else:
                expected = s[touching.argmax()] if touching.any() else np.inf
            got = arc_contact(points[n:n + 1, 0], points[n:n + 1, 1], curvature, reach)
            if np.isinf(expected):
                assert np.isinf(got) or got > length - 2 * step, (curvature, points[n], got)
            else:
                assert abs(got - expected) <= 2 * step, (curvature, points[n], got, expected)
    # a gentle turn is the straight line in the limit
    ahead, side = points[:, 0], points[:, 1]
    assert np.isclose(arc_contact(ahead, side, 1e-7, reach), arc_contact(ahead, side, 0.0, reach))


def test_the_stop_zone_follows_the_turn_onto_a_point_the_straight_line_misses():
    from diffopt_ros.navigation import Navigator, NavSettings

    world = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}]})
    navigator = Navigator(world_grid(world, 0.05), nav=NavSettings(radius=RADIUS, stop_margin=0.05))
    state = np.array([2.0, 2.0, 0.0, 0.5, 0.0])                  # heading +x
    navigator.set_scan_points([[2.3, 2.4]])                        # ahead on the left, off the band
    assert navigator._free_distance(state, 0.5) is None
    left = navigator._free_distance(state, 0.5, (2.0,))            # turning left onto it
    assert left is not None and 0.0 < left < 0.5
    assert navigator._free_distance(state, 0.5, (-2.0,)) is None   # turning away from it
    # the measured turn counts too: the command turns away, the robot still turns left
    turning = np.array([2.0, 2.0, 0.0, 0.5, 1.0])
    assert navigator._curvatures(turning, np.array([0.5, -1.0])) == (-2.0, 2.0)
    # reversing now, a forward command: the measured turn is not the path ahead
    assert navigator._curvatures(turning * [1, 1, 1, -1, 1], np.array([0.5, -1.0])) == (-2.0,)


def test_a_navigator_step_never_commands_more_than_the_free_distance_per_step():
    from diffopt_ros.navigation import Navigator, NavSettings

    world = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}]})
    navigator = Navigator(world_grid(world, 0.05), nav=NavSettings(radius=RADIUS, stop_margin=0.05))
    navigator.use_obstacles(False)          # the MPC alone would drive on at full speed
    state = np.array([1.0, 2.0, 0.0, 0.2, 0.0])
    navigator.set_goal(state[:2], [7.0, 2.0])
    # 0.13 m ahead, 0.22 m beside the path: not on it (no replanning round it), but in the band
    # the disc and its margin sweep
    navigator.set_scan_points([[1.13, 1.78]])
    step = navigator.step(state, 0.0)
    assert step.mode == 'tracking' and not step.replanned
    free = 0.13 - np.sqrt((RADIUS + 0.05) ** 2 - 0.22 ** 2)
    assert np.isclose(step.stop_distance, free)
    coast = 0.2 * navigator.settings.tau_v        # the nominal model's lag, gain 1
    assert 0 < coast < free
    assert np.isclose(step.command[0], (free - coast) / navigator.settings.dt)
    assert navigator.last_command[0] == step.command[0]       # the next solve starts from it
    # the predicted path begins with the command sent, not with the MPC's uncut one
    x = torch.as_tensor(navigator.model_state(state), dtype=navigator.dtype)
    sent = torch.as_tensor(navigator.last_command, dtype=navigator.dtype)
    with torch.no_grad():
        first = navigator.model(x[None], sent[None])[0].numpy()
    np.testing.assert_allclose(step.states[1], first, rtol=0, atol=1e-12)


def test_the_stop_zone_leaves_the_robot_room_to_brake_with_its_lag():
    """With the simulated robot's speed lag in the model (gain 0.8, tau 0.25 s: what
    ``learn dynamics`` finds), the cut command held for one step and zero after it stops the
    true robot (the simulator's exact lag response, acceleration-limited) within the free
    distance whenever it still can (else it brakes at once); the cut to ``free / dt`` alone,
    blind to the robot's momentum, carries it past (0.102 m against 0.081 m free at 0.3 m/s)."""
    from diffopt_ros.mpc.receding import MpcSettings
    from diffopt_ros.navigation import Navigator, NavSettings
    from diffopt_ros.sim import RobotParams, lag_response

    true = RobotParams()
    world = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}]})
    navigator = Navigator(world_grid(world, 0.05), mpc=MpcSettings(gain_v=true.gain_v, tau_v=true.tau_v),
                          nav=NavSettings(radius=RADIUS, stop_margin=0.05))
    navigator.use_obstacles(False)
    dt = navigator.settings.dt

    def travel(speed, command):
        """The true robot's distance (m) under ``command`` for one step, then zero for 3 s."""
        speed, first = lag_response(speed, command, true.gain_v, true.tau_v, true.drag_v,
                                    true.max_accel_v, dt)
        return first + lag_response(speed, 0.0, true.gain_v, true.tau_v, true.drag_v,
                                    true.max_accel_v, 3.0)[1]

    cut = 0
    for speed in (0.1, 0.3, 0.5):
        for ahead in (0.2, 0.3, 0.45):
            state = np.array([1.0, 2.0, 0.0, speed, 0.0])
            navigator.set_goal(state[:2], [7.0, 2.0])
            # 0.22 m beside the path (not blocking it), in the band the disc and margin sweep
            navigator.set_scan_points([[1.0 + ahead, 1.78]])
            step = navigator.step(state, 0.0)
            free = ahead - np.sqrt((RADIUS + 0.05) ** 2 - 0.22 ** 2)
            assert step.mode == 'tracking' and 0.0 <= step.command[0] < free / dt, (speed, ahead)
            if step.stop_distance is not None:
                cut += 1
                assert np.isclose(step.stop_distance, free)
            if speed * true.tau_v > free:      # too late: momentum alone carries it past, brake
                assert step.command[0] == 0.0
            else:
                assert travel(speed, step.command[0]) <= free + 1e-9, (speed, ahead)
            navigator.stop()
    assert cut >= 2
    # a live loop's latency (the state's age and the solve) is travel at the measured speed too
    state = np.array([1.0, 2.0, 0.0, 0.3, 0.0])
    for latency in (0.0, 0.1):
        navigator.set_goal(state[:2], [7.0, 2.0])
        navigator.set_scan_points([[1.2, 1.78]])
        step = navigator.step(state, 0.0, latency=latency)
        free = 0.2 - np.sqrt((RADIUS + 0.05) ** 2 - 0.22 ** 2)
        expected = (free - 0.3 * (true.tau_v + latency)) / (true.gain_v * dt)
        assert np.isclose(step.stop_distance, free) and np.isclose(step.command[0], max(expected, 0.0))
        navigator.stop()


def test_nav_settings_from_mpc_node_parameters():
    from diffopt_ros.navigation import NavSettings

    assert NavSettings.from_params({}) == NavSettings()           # the node's defaults are the library's
    car = NavSettings.from_params({'model': 'bicycle', 'model.wheelbase': 0.5, 'bounds.max_steer': 0.4,
                                   'navigation.stop_margin': -1.0, 'reference_speed': 0.3})
    assert (car.robot, car.wheelbase, car.max_steer, car.stop_margin, car.reference_speed) == \
        ('ackermann', 0.5, 0.4, -1.0, 0.3)
    assert car.max_iterations == 6
    assert NavSettings.from_params({'model': 'bicycle'}, robot='diff_drive', radius=0.3).radius == 0.3


def test_a_goal_is_given_up_when_the_robot_makes_no_progress():
    """The progress checker: a robot that does not move ``progress_radius`` in
    ``progress_timeout`` s (here held where it is) has its goal given up, once; a moving robot,
    or one whose goal is unreachable on the map (final already), does not."""
    from diffopt_ros.navigation import Navigator, NavSettings

    world = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}]})
    nav = NavSettings(radius=RADIUS, progress_radius=0.3, progress_timeout=2.0)
    held, moving = (Navigator(world_grid(world, 0.05), nav=nav) for _ in range(2))
    start = np.array([1.0, 2.0, 0.0, 0.0, 0.0])
    for navigator in (held, moving):
        navigator.set_goal(start[:2], [7.0, 2.0])
    modes = []
    for i in range(13):                          # 0 to 3 s in 0.25 s ticks
        now = 0.25 * i
        modes.append(held.step(start, now).mode)
        creeping = start + [0.2 * now, 0, 0, 0, 0]       # 0.2 m/s: 0.3 m every 1.5 s
        assert moving.step(creeping, now).mode == 'tracking'
    assert modes[:9] == ['tracking'] * 9             # up to 2.0 s: not yet
    assert modes[9] == 'no progress' and held.goal is None and modes[10:] == ['idle'] * 3
    # a new goal starts the clock again
    held.set_goal(start[:2], [7.0, 2.0])
    assert held.step(start, 10.0).mode == 'tracking' and held.step(start, 11.0).mode == 'tracking'
    # an unreachable goal stays 'unreachable'; no timeout: never given up
    walled = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 4]}, [4, 0, 4, 4]]})
    for settings, goal, expected in ((nav, [7.0, 2.0], 'unreachable'),
                                     (replace(nav, progress_timeout=0.0), [3.0, 2.0], 'tracking')):
        navigator = Navigator(world_grid(walled, 0.05), nav=settings)
        navigator.set_goal(start[:2], goal)
        assert {navigator.step(start, 0.5 * i).mode for i in range(10)} == {expected}
