"""bench/solve_ab.py: a checkout against itself gives the same solutions, bit for bit."""
from pathlib import Path

from bench_script import load


def test_a_checkout_against_itself_gives_the_same_solutions(capsys):
    ab = load('solve_ab')
    ab.main(['--base', str(Path(__file__).resolve().parents[1]), '--robot', 'ackermann', '--solves', '2',
             '--repeats', '1'])
    out = capsys.readouterr().out
    assert '2 solves' in out and 'bitwise the same solutions: True' in out
