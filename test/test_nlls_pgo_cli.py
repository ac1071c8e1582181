"""``diffopt-ros pgo`` as a user runs it: a subprocess fed malformed files and arguments (exit
code, a ``file:line`` message, never a traceback), both EDGE2 information orders, point
landmarks written back without dropping a line, and GTSAM's optimum on the gtsam/Data files
that solve in seconds (the whole set: ``bench/pgo_files.py``, results in bench/RESULTS.md)."""
import os
import subprocess
import sys
from pathlib import Path

import bench_script
import pytest

ROOT = Path(__file__).resolve().parents[1]
gtsam = pytest.importorskip('gtsam')
pgo_files = bench_script.load('pgo_files')

TOL = 1e-4


def _spawn(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, '-m', 'diffopt_ros.cli', 'pgo', *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _run_all(cases):
    """Start every case at once (start-up dominates), then collect ``(rc, out, err)``."""
    procs = [_spawn(*c) for c in cases]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append((p.returncode, out, err))
    return results


V = 'VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\n'
E = 'EDGE_SE2 0 1 1 0 0 1 0 0 1 0 1\n'
Q = 'VERTEX_SE3:QUAT 0 0 0 0 0 0 0 1\nVERTEX_SE3:QUAT 1 1 0 0 0 0 0 1\n'
INFO6 = '1 0 0 0 0 0 1 0 0 0 0 1 0 0 0 1 0 0 1 0 1'  # identity, upper triangle

# name -> (file text, line named in the message, words of the message)
MALFORMED = {
    'undeclared_vertex': (V + 'EDGE_SE2 0 5 1 0 0 1 0 0 1 0 1\n', 3,
                          'vertex 5, which no vertex line declares'),
    'unknown_tag': (V + 'EDGE_SE2_FOO 0 1 1 0 0\n', 3, "unknown tag 'EDGE_SE2_FOO'"),
    'duplicate_vertex': ('VERTEX_SE2 1 0 0 0\nVERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 2 0 0\n' + E, 3,
                         'vertex 1 is already declared at line 1'),
    'zero_quaternion': (Q.replace('0 0 0 1\nVERTEX_SE3:QUAT 1', '0 0 0 0\nVERTEX_SE3:QUAT 1')
                        + f'EDGE_SE3:QUAT 0 1 1 0 0 0 0 0 1 {INFO6}\n', 1, 'quaternion has zero length'),
    'edge_zero_quaternion': (Q + f'EDGE_SE3:QUAT 0 1 1 0 0 0 0 0 0 {INFO6}\n', 3,
                             'quaternion has zero length'),
    'not_pd': (V + 'EDGE_SE2 0 1 1 0 0 1 0 0 -1 0 1\n', 3, 'information matrix is not positive definite'),
    'not_pd_edge2_either_order': (V + 'EDGE2 0 1 1 0 0 1 2 0 1 0 0\n', 3,
                                  'information matrix is not positive definite'),
    'index_beyond_int64': (V + 'EDGE_SE2 0 99999999999999999999 1 0 0 1 0 0 1 0 1\n', 3,
                           'ids must be integers in [0, 2^53)'),
    'negative_index': (V + 'EDGE_SE2 0 -1 1 0 0 1 0 0 1 0 1\n', 3, 'ids must be integers'),
    'number_count': (V + 'EDGE_SE2 0 1 1 0 0 1 0 0 1 0\n', 3, 'EDGE_SE2 needs 11 numbers, got 10'),
    'not_a_number': (V + 'EDGE_SE2 0 1 1 x 0 1 0 0 1 0 1\n', 3, "'x' is not a number"),
    'non_finite': (V + 'EDGE_SE2 0 1 1 nan 0 1 0 0 1 0 1\n', 3, 'non-finite number'),
    'mixed_2d_3d': (V + E + 'VERTEX_SE3:QUAT 7 0 0 0 0 0 0 1\n', 4, 'a file holds one or the other'),
    'undeclared_point': (V + E + 'EDGE_SE2_XY 0 3 1 1 1 0 1\n', 4, 'point 3, which no vertex line declares'),
    'missing_offset': (Q + 'VERTEX_TRACKXYZ 3 1 1 1\nEDGE_SE3_TRACKXYZ 0 3 4 1 1 1 1 0 0 1 0 1\n', 4,
                       'PARAMS_SE3OFFSET 4, which the file does not declare'),
    'bad_fix': (V + E + 'FIX 9\n', 4, 'FIX refers to vertex 9'),
}


@pytest.mark.slow
def test_malformed_files_name_file_and_line(tmp_path):
    files = {}
    for name, (text, _, _) in MALFORMED.items():
        files[name] = tmp_path / f'{name}.g2o'
        files[name].write_text(text)
    binary = tmp_path / 'binary.g2o'
    binary.write_bytes(b'VERTEX_SE2 0 0 0 0\n\x89PNG\r\n\x1a\n\xff\xfe')
    nul = tmp_path / 'nul.g2o'
    nul.write_bytes(b'VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0\x00 0 0\n')
    cases = [(files[n],) for n in MALFORMED] + [(binary,), (nul,)]
    expected = [(files[n], line, words) for n, (_, line, words) in MALFORMED.items()]
    expected += [(binary, 2, 'not a UTF-8 text file'), (nul, 2, 'not a text file')]
    for (path, line, words), (rc, out, err) in zip(expected, _run_all(cases)):
        assert rc == 1, (path.name, rc, out, err)
        assert f'{path}:{line}: ' in err and words in err, (path.name, err)
        assert 'Traceback' not in out + err, (path.name, err)


@pytest.mark.slow
def test_usage_errors_exit_2_before_reading(tmp_path):
    good = tmp_path / 'good.g2o'
    good.write_text(V + E)
    bad = tmp_path / 'bad.g2o'  # would fail to read: usage errors must be reported first
    bad.write_text('garbage\n')
    cases = [
        ((bad, '--device', 'gpu'), "--device 'gpu': choose cpu, cuda or cuda:N"),
        ((bad, '--out', tmp_path / 'missing' / 'out.g2o'), 'does not exist'),
        ((bad, '--plot', tmp_path / 'x.xyz'), "unknown image format 'xyz'"),
        ((bad, '--out', tmp_path), 'is a folder'),
        ((tmp_path / 'nothing.g2o',), 'no such file'),
        ((tmp_path,), 'not a regular file'),
        ((bad, '--threads', '0'), '--threads: 0 is not >= 1'),
        ((bad, '--max-iterations', 'many'), "'many' is not an integer"),
        ((good, '--out', good), 'would overwrite the input file'),
    ]
    import torch
    if not torch.cuda.is_available():
        cases.append(((good, '--device', 'cuda'), 'CUDA is not available'))
    for (args, words), (rc, out, err) in zip(cases, _run_all([c for c, _ in cases])):
        assert rc == 2, (args, rc, out, err)
        assert words in err, (args, err)
        assert 'Traceback' not in out + err and 'iter' not in out, (args, out, err)


def _buffered_env() -> dict:
    """The environment of a command whose stdout is block-buffered on a pipe (the Makefile
    exports PYTHONUNBUFFERED, which would hide output lost at exit)."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}
    env['PYTHONPATH'] = str(ROOT)
    return env


def test_the_process_ends_without_teardown_and_loses_nothing(tmp_path):
    """The command's process ends with ``os._exit`` (no interpreter teardown): on a block-buffered
    pipe every line it printed, its ``--out`` file, its plot and its exit status still arrive,
    for a solve (the installed ``diffopt-ros`` script, as docs/library.md shows it), a usage
    error and a malformed file (``python -m diffopt_ros.cli``, the other process entry)."""
    env = _buffered_env()
    w100 = gtsam.findExampleDataFile('w100.graph')
    out_file, plot = tmp_path / 'out.graph', tmp_path / 'graph.png'

    def run(*args, program=(sys.executable, '-m', 'diffopt_ros.cli')):
        return subprocess.run([*program, *map(str, args)], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300)

    solved = run('pgo', w100, '--out', out_file, '--plot', plot,
                 program=(str(Path(sys.executable).parent / 'diffopt-ros'),))
    assert solved.returncode == 0, solved.stderr
    lines = solved.stdout.splitlines()
    assert lines[-3].startswith('initial error ') and lines[-3].split()[-4] == 'converged', lines[-3:]
    assert lines[-2:] == [f'wrote {out_file}', f'wrote {plot}']
    assert len(out_file.read_text().splitlines()) == len(Path(w100).read_text().splitlines())
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    usage = run('pgo', tmp_path / 'none.g2o')
    assert (usage.returncode, usage.stdout) == (2, '') and 'no such file' in usage.stderr
    bad = tmp_path / 'bad.g2o'
    bad.write_text('garbage 1 2\n')
    failed = run('pgo', bad)
    assert failed.returncode == 1 and f'{bad}:1: unknown tag' in failed.stderr
    assert run('pgo', '--help').stdout.startswith('usage: diffopt-ros pgo')


def test_output_that_cannot_be_written_ends_the_command_with_1_and_no_traceback():
    """Its stdout a pipe whose reader is gone (as ``| head`` leaves it; closed here before the
    command starts) or a full disk (``/dev/full``): status 1, no traceback; the full disk named on
    stderr, the closed pipe silent; with and without per-iteration progress lines."""
    env = _buffered_env()
    w100 = gtsam.findExampleDataFile('w100.graph')
    for options in ((), ('--quiet',)):
        command = [sys.executable, '-m', 'diffopt_ros.cli', 'pgo', w100, *options]
        reader, writer = os.pipe()
        os.close(reader)
        try:
            gone = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True, env=env,
                                  cwd=ROOT, timeout=300)
        finally:
            os.close(writer)
        assert (gone.returncode, gone.stderr) == (1, ''), (options, gone.stderr)
        with open('/dev/full', 'w') as full:
            no_space = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=ROOT, timeout=300)
        assert no_space.returncode == 1, (options, no_space.stderr)
        lines = no_space.stderr.splitlines()  # the reason is the C library's (ENOSPC), locale's words
        assert len(lines) == 1 and lines[0].startswith('diffopt-ros pgo: cannot write its output: '), lines


@pytest.mark.slow
def test_edge2_orders_bom_landmarks_and_output(tmp_path):
    """Both EDGE2 orders solve to GTSAM's error; a BOM keeps vertex 0; point landmarks are read,
    solved and written back (every input line kept, vertices updated); the thread count is
    printed."""
    w100_30 = gtsam.findExampleDataFile('w100_30.g2o')  # EDGE2 in g2o order
    toro = tmp_path / 'toro.graph'  # the same graph, EDGE2 in TORO order
    lines = []
    for line in Path(w100_30).read_text().splitlines():
        p = line.split()
        if p and p[0] == 'EDGE2':
            xx, xy, xt, yy, yt, tt = p[6:12]
            p[6:12] = [xx, xy, yy, tt, xt, yt]
        lines.append(' '.join(p))
    toro.write_text('\n'.join(lines) + '\n')
    bom = tmp_path / 'bom.g2o'
    bom.write_bytes(b'\xef\xbb\xbf' + (V + E).encode())
    bom_out = tmp_path / 'bom_out.g2o'
    city = gtsam.findExampleDataFile('cityTrees_reduced_1k.g2o')
    city_out = tmp_path / 'city_out.g2o'
    runs = _run_all([(w100_30, '--quiet'), (toro, '--quiet'), (bom, '--out', bom_out, '--quiet'),
                     (city, '--out', city_out, '--quiet')])
    for rc, out, err in runs:
        assert rc == 0 and 'Traceback' not in err, (out, err)
        assert ', 1 thread ' in out
    ref = pgo_files.compare('w100_30.g2o')['gtsam']['final']
    for _, out, _ in runs[:2]:
        final = float(out.split('final error ')[1].split()[0])
        assert abs(final - ref) <= TOL * ref
    assert 'read in g2o order' in runs[0][1] and 'read in g2o order' not in runs[1][1]
    assert ' 2 poses,' in runs[2][1] and bom_out.read_text().startswith('VERTEX_SE2 0 ')
    src, dst = Path(city).read_text().splitlines(), city_out.read_text().splitlines()
    assert dst[:len(src)] == src  # no vertex lines in the input: all kept verbatim
    added = dst[len(src):]
    assert sum(x.startswith('VERTEX_SE2 ') for x in added) == 1000
    assert sum(x.startswith('VERTEX_XY ') for x in added) == 66
    assert ', 66 points, 406 point edges' in runs[3][1]
    final = float(runs[3][1].split('final error ')[1].split()[0])
    ref = pgo_files.compare('cityTrees_reduced_1k.g2o')['gtsam']['final']
    assert abs(final - ref) <= TOL * ref


def test_max_iterations_counts_iterations_as_gtsam_does():
    """``--max-iterations`` caps the iterations as GTSAM counts them (linearizations, whatever
    dampings each tries): the progress has a line per try, the last line both counts."""
    w100 = gtsam.findExampleDataFile('w100.graph')
    (rc, out, err), (rc2, capped, err2) = _run_all([(w100,), (w100, '--max-iterations', '2')])
    assert rc == rc2 == 0 and not err2, (err, err2)
    assert out.count('\n  try ') == 3 and 'iterations 3 (3 tries)  converged' in out, out
    assert 'iterations 2 (2 tries)  max_iterations' in capped, capped
    # the library's side of the count, with tries that are not steps: test_nlls_lm.py


# every gtsam/Data file of pgo_files.LOADERS that solves in under a second; the rest (w10000,
# sphere2500, w20000, victoria_park, the ground-truth sphere) run in bench/pgo_files.py
QUICK = ['w100.graph', 'w100_30.g2o', 'example.graph', 'noisyToyGraph.txt', 'optimizedNoisyToyGraph.txt',
         'orientationsNoisyToyGraph.txt', 'pose2example.txt', 'cityTrees_reduced_1k.g2o',
         'victoriaPark_reduced_1k.g2o', 'pose3example.txt', 'pose3example-grid.txt',
         'pose3example-offdiagonal.txt', 'pose3example-offdiagonal-rewritten.txt',
         'pose3Localizationexample.txt', 'simpleGraph10gradIter.txt', 'Klaus3.g2o', 'toyExample.g2o',
         'known_landmark_localization_3.g2o', 'known_landmark_localization_20.g2o',
         'edge_se3_trackxyz_example.g2o', 'edge_se3_trackxyz_nonidentity_offset.g2o',
         'edge_se3_trackxyz_zero_range.g2o']


@pytest.mark.parametrize('name', QUICK)
def test_matches_gtsam_optimum(name):
    row = pgo_files.compare(name)
    assert row['ours']['status'] == 'converged'
    assert row['rel'] <= TOL, row


def test_every_loader_file_is_tested_or_benchmarked():
    slow = {'w10000.graph', 'sphere2500.txt', 'w20000.txt', 'victoria_park.txt', 'sphere2500_groundtruth.txt'}
    assert set(pgo_files.LOADERS) == set(QUICK) | slow
