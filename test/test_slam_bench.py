"""bench/slam.py --stream as a user runs it: a pose-graph file fed to our incremental smoother and
to GTSAM's iSAM2 in turns, both ending at batch Levenberg-Marquardt's optimum."""
import re
import subprocess
import sys

import bench_script
import pytest

ROW = re.compile(r'^\s+(ours \(incremental\)|GTSAM iSAM2 \(C\+\+\))\s+.*\s([-+]\d\.\d+e[-+]\d+)\s*$')


def test_stream_feeds_both_solvers_in_turns_to_the_batch_optimum():
    """The first 250 poses of w10000 (three turns of 100, 100 and 49 updates each): both rows and
    the ratios are printed, and both final errors are within 1e-3 (relative) of batch LM's (the
    issue's bound for ours; iSAM2 is at +1.2e-4 on the whole file)."""
    pytest.importorskip('gtsam')
    done = subprocess.run([sys.executable, str(bench_script.BENCH / 'slam.py'), '--stream', 'w10000',
                           '--poses', '250'], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    relative = dict(m.groups() for m in map(ROW.match, done.stdout.splitlines()) if m)
    assert set(relative) == {'ours (incremental)', 'GTSAM iSAM2 (C++)'}, done.stdout
    assert all(abs(float(r)) < 1e-3 for r in relative.values()), done.stdout
    assert 'ratios ours / iSAM2: median' in done.stdout
