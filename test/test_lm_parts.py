"""bench/lm_parts.py, as a user runs it: the parts of the command's LM solve on w100 (qdldl) and
on sphere2500 (supernodal, whose symbolic analysis is printed as a part of the factorizations)."""
import re
import subprocess
import sys

import bench_script
import pytest

pytest.importorskip('gtsam')  # the gtsam/Data files


def _parts(*args):
    done = subprocess.run([sys.executable, str(bench_script.BENCH / 'lm_parts.py'), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    calls = {m.group(1).strip(): int(m.group(2))
             for m in (re.match(r'\s+(\D+?)\s+[\d.]+ ms\s+(\d+) calls', line) for line in lines[1:]) if m}
    assert lines[-1].strip().startswith('the rest'), done.stdout
    return lines[0], calls, done.stdout


def test_lm_parts_counts_every_call_of_the_solve():
    head, calls, out = _parts('w100', '--repeat', '2')
    assert head.startswith('w100: LM solve') and 'mean of 2' in head and 'sparse (qdldl)' in head, head
    # w100 converges in 3 tries, each accepted: every part runs once per try
    assert calls == {'linearize': 3, 'assemble': 3, 'damping': 3, 'factorizations': 3,
                     'triangular solves': 3, 'error': 3, 'retract': 3}, out


def test_lm_parts_shows_the_supernodal_symbolic_analysis_once_per_solve():
    head, calls, out = _parts('sphere2500', '--repeat', '1')
    assert 'sparse (supernodal)' in head, head
    # one analysis; a try per factorization, of which some are rejected (no linearization)
    assert calls['of which symbolic'] == 1, out
    assert calls['factorizations'] == calls['error'] == calls['triangular solves'] > calls['linearize'], out


def test_lm_parts_refuses_a_repeat_below_one():
    done = subprocess.run([sys.executable, str(bench_script.BENCH / 'lm_parts.py'), 'w100', '--repeat', '0'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and '--repeat' in done.stderr and 'Traceback' not in done.stderr
