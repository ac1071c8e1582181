"""bench/linearize_layout.py, as a user runs it: both layouts of the linearization on w100 agree,
and an unknown file name is a usage error."""
import subprocess
import sys

import bench_script
import pytest

pytest.importorskip('gtsam')  # the gtsam/Data files


def _run(*args):
    return subprocess.run([sys.executable, str(bench_script.BENCH / 'linearize_layout.py'), *args],
                          capture_output=True, text=True, timeout=300)


def test_both_layouts_agree_and_are_timed():
    done = _run('w100', '--repeat', '2')
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith('w100 (Prior m=3 E=1, Between m=3 E=300)'), lines
    assert lines[1].endswith('the layouts agree: True'), lines
    assert [line.split()[:3] for line in lines[2:]] == [['edges', 'last', 'linearize'],
                                                        ['batched', 'products', 'linearize']], lines


def test_an_unknown_file_is_a_usage_error():
    done = _run('nope')
    assert done.returncode == 2 and 'unknown file nope' in done.stderr and 'Traceback' not in done.stderr
