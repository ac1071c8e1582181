"""bench/navigation.py: a pair's drive file, the resumed sweep's summary, and the navigator's
iteration cap."""
import json

import bench_script
import numpy as np
import pytest
import torch

from diffopt_ros.maps import world_grid
from diffopt_ros.mpc.receding import MpcSettings
from diffopt_ros.navigation import Navigator, NavSettings
from diffopt_ros.sim import World

bench = bench_script.load('navigation')

# a 4 m x 2 m room with a post between start and goal
WORLD = {'name': 'tiny', 'start': [0.6, 1.0, 0.0], 'walls': [{'box': [0, 0, 4, 2]}],
         'obstacles': [[2.0, 0.8, 0.2]]}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_drive_task_writes_the_pair_file(tmp_path):
    world_file = tmp_path / 'tiny.yaml'
    world_file.write_text(json.dumps(WORLD))
    out = tmp_path / 'pair.json'
    line = bench.drive_task(str(world_file), 'diff_drive', 'ilqr', 0, 0, [0.6, 1.0, 0.0], [3.4, 1.0],
                            str(out))
    data = json.loads(out.read_text())
    assert data['reached'] and data['collisions'] == 0, data
    assert data['goal'] == [3.4, 1.0] and data['start'] == [0.6, 1.0, 0.0]
    assert data['min_clearance'] > 0.2 and data['path_length'] > 2.8
    assert data['tick_p99_ms'] >= data['tick_p50_ms'] > 0 and data['control_p99_ms'] > 0
    assert data['slam_p99_ms'] > 0 and data['load_before'] >= 0
    # CPU and wall time come from different clocks and intervals: no order between them is asserted
    assert data['tick_cpu_p99_ms'] >= data['tick_cpu_p50_ms'] > 0
    assert len(data['tick_cpu_ms']) == data['ticks']       # every tick's CPU time, rounded to 10 us
    assert np.percentile(data['tick_cpu_ms'], 99) == pytest.approx(data['tick_cpu_p99_ms'], abs=0.01)
    assert 'reached' in line and not (tmp_path / 'pair.part').exists()


def _pair_file(world, robot, controller, i, reached, collisions, clearance):
    return dict(world=world, robot=robot, controller=controller, seed=0, pair=i, reached=reached,
                collisions=collisions, min_clearance=clearance, path_length=4.0 + i, time=10.0 + i,
                status='reached' if reached else 'timeout', tick_p50_ms=10.0 + i, tick_p99_ms=20.0 + i,
                control_p50_ms=8.0, control_p99_ms=15.0 + i, slam_p99_ms=5.0, tick_cpu_p50_ms=6.0 + i,
                tick_cpu_p99_ms=12.0 + i, tick_cpu_ms=[float(t) for t in range(100 * i, 100 * i + 100)],
                load_before=1.0, load_after=2.0 + i)


def test_sweep_resumes_from_the_pair_files_and_summarises_them(tmp_path, capsys):
    """Files already there are not driven again; the summary counts, sums and bounds them."""
    out = tmp_path / 'pairs'
    out.mkdir()
    results = [(True, 0, 0.31), (False, 0, 0.25), (True, 2, 0.18)]
    for i, (reached, collisions, clearance) in enumerate(results):
        (out / f'loop_diff_drive_ilqr_0_{i}.json').write_text(
            json.dumps(_pair_file('loop', 'diff_drive', 'ilqr', i, reached, collisions, clearance)))
    summary = tmp_path / 'summary.json'
    code = bench.main(['--out', str(out), '--pairs', '3', '--worlds', 'loop', '--robots', 'diff_drive',
                       '--controllers', 'ilqr', '--solve-points', '0', '--json', str(summary)])
    assert code == 0
    assert '# 0 tasks to run' in capsys.readouterr().out
    (row,) = json.loads(summary.read_text())
    assert (row['pairs'], row['reached'], row['collisions']) == (3, 2, 2)
    assert row['min_clearance'] == 0.18 and row['path_length'] == 5.0 and row['time'] == 11.0
    assert row['tick_p50_ms'] == 11.0 and row['tick_p99_ms'] == 22.0 and row['control_p99_ms'] == 17.0
    assert (row['load_min'], row['load_max']) == (1.0, 4.0)
    assert row['tick_cpu_p50_ms'] == 7.0 and row['tick_cpu_p99_ms'] == 14.0
    # over every tick of the three pairs (0, 1, ..., 299 ms): p50 149.5, p99 0.99 * 299
    assert row['tick_cpu_all_p50_ms'] == 149.5 and row['tick_cpu_all_p99_ms'] == pytest.approx(296.01)
    assert [f['pair'] for f in row['failed']] == [1, 2]
    # a sweep stopped early: --summary-only summarises the files there are and runs nothing
    code = bench.main(['--out', str(out), '--pairs', '5', '--worlds', 'loop', '--robots', 'diff_drive',
                       '--controllers', 'ilqr', '--solve-points', '0', '--json', str(summary),
                       '--summary-only'])
    assert code == 0 and '2 pair files missing (not run)' in capsys.readouterr().out
    assert json.loads(summary.read_text())[0]['pairs'] == 3


def test_random_pairs_are_free_apart_and_reachable():
    world = World.load('clutter')
    planner = Navigator(world_grid(world, 0.05)).planner
    pairs = bench.random_pairs(world, planner, 5, 0.2, np.random.default_rng(3))
    for start, goal, plan in pairs:
        assert plan.reachable and 3.0 <= np.hypot(*(goal - start[:2])) <= 12.0
        assert min(world.clearance(start[:2]), world.clearance(goal)) >= 0.5


def test_navigator_caps_iterations_per_tick(monkeypatch):
    import diffopt_ros.navigation as navigation

    world = World.from_dict(WORLD)
    navigator = Navigator(world_grid(world, 0.05), MpcSettings(max_iterations=10),
                          NavSettings(max_iterations=2))
    assert navigator.mpc.max_iterations == 2
    assert navigator.mpc.cost_tolerance == NavSettings().cost_tolerance == 1e-4
    iterations = []
    solve = navigation.receding_step

    def counted(*args, **kwargs):
        sol = solve(*args, **kwargs)
        iterations.append(int(sol.iterations.max()))
        return sol

    monkeypatch.setattr(navigation, 'receding_step', counted)
    navigator.set_goal([0.6, 1.0], [3.4, 1.0])
    navigator.step(np.array([0.6, 1.0, 0.0, 0.0, 0.0]), 0.0)        # cold: would take more
    assert iterations == [2]
    assert NavSettings().max_iterations == 5 and NavSettings(robot='ackermann').max_iterations == 6
    with pytest.raises(ValueError, match='NavSettings.max_iterations'):
        NavSettings(max_iterations=0)
    with pytest.raises(ValueError, match='NavSettings.cost_tolerance'):
        NavSettings(cost_tolerance='1e-4')
