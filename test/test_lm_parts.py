"""bench/lm_parts.py, as a user runs it: the parts of the command's LM solve on w100."""
import re
import subprocess
import sys

import bench_script
import pytest

pytest.importorskip('gtsam')  # the gtsam/Data files


def test_lm_parts_counts_every_call_of_the_solve():
    done = subprocess.run([sys.executable, str(bench_script.BENCH / 'lm_parts.py'), 'w100', '--repeat', '2'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('w100: LM solve') and 'mean of 2' in lines[0], lines[0]
    calls = {m.group(1).strip(): int(m.group(2))
             for m in (re.match(r'\s+(\D+?)\s+[\d.]+ ms\s+(\d+) calls', line) for line in lines[1:]) if m}
    # w100 converges in 3 tries, each accepted: every part runs once per try
    assert calls == {'linearize': 3, 'assemble': 3, 'damping': 3, 'factorizations': 3,
                     'triangular solves': 3, 'error': 3, 'retract': 3}, done.stdout
    assert lines[-1].strip().startswith('the rest')
