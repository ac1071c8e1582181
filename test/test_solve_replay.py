"""bench/solve_replay.py: the kept problems of a drive solve again to the drive's own solutions."""
import torch
from bench_script import load


def test_replays_the_kept_solves_and_saves_their_solutions(tmp_path, capsys):
    replay = load('solve_replay')
    mpc, problems = replay.record('clutter', 'diff_drive', (10.0, 7.0), (1.0, 1.0, 0.0), 2)
    assert len(problems) == 2 and mpc.cost is not problems[0][0]     # copies, not the live cost
    out = tmp_path / 'solutions.pt'
    replay.main(['--robot', 'diff_drive', '--solves', '2', '--repeats', '2', '--save', str(out)])
    assert '2 solves' in capsys.readouterr().out
    solutions = torch.load(out, weights_only=True)
    assert len(solutions) == 2
    for controls, states, costs, iterations in solutions:
        assert controls.shape[0] == states.shape[0] == 1 and bool(torch.isfinite(costs).all())
        assert int(iterations.sum()) >= 1
    cost, args, kwargs = problems[0]          # the drive is deterministic: the same first problem
    mpc.cost = cost
    assert torch.equal(mpc(*args, **kwargs).controls, solutions[0][0])


def test_compares_cost_tolerances_with_a_reference_solve(capsys):
    replay = load('solve_replay')
    replay.main(['--robot', 'diff_drive', '--solves', '3', '--cost-tolerances', '0', '1e-2',
                 '--reference-iterations', '5'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('reference: 5 iterations')
    # the cost test off at the reference's cap (the diff drive navigator's 5) is the reference itself
    assert [line.split(':')[0] for line in lines[1:]] == ['cost_tolerance 0e+00', 'cost_tolerance 1e-02']
    assert 'cost above the reference p50/p90/max 0.0e+00/0.0e+00/0.0e+00' in lines[1]
