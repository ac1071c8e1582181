"""Pose-graph file reading and writing: conventions of each tag, and write -> read round trips
with point landmarks (the CLI's behaviour on real and malformed files: test_nlls_pgo_cli.py)."""
import numpy as np
import pytest
import torch

from diffopt_ros.lie import SE3
from diffopt_ros.nlls.io import parse_graph, read_graph, write_g2o, write_solution

gtsam = pytest.importorskip('gtsam')


def test_victoria_park_conventions(tmp_path):
    """ODOMETRY entries are a covariance (g2o order); LANDMARK sightings become bearing-range
    with GTSAM's sigmas (sqrt(v/10) rad, sqrt(v) m when vxx = vyy, else 1 and 1)."""
    path = tmp_path / 'vp.txt'
    path.write_text('ODOMETRY 0 1 1 0 0 0.01 0 0 0.04 0 0.25\n'
                    'LANDMARK 1 7 3 4 0.4 0 0.4\n'
                    'LANDMARK 0 7 3 4 0.4 0 0.5\n')
    data = read_graph(path)
    DT = torch.float64
    assert torch.allclose(data.information[0], torch.diag(torch.tensor([100.0, 25.0, 4.0], dtype=DT)))
    (br,) = data.point_edges
    assert br.kind == 'bearing_range' and br.pose.tolist() == [1, 0] and br.point.tolist() == [0, 0]
    assert torch.allclose(br.measurement[0], torch.tensor([np.arctan2(4, 3), 5.0], dtype=torch.float64))
    assert torch.allclose(torch.diagonal(br.information[0]), torch.tensor([1 / 0.04, 1 / 0.4], dtype=DT))
    assert torch.diagonal(br.information[1]).tolist() == [1.0, 1.0]
    # the point at its first sighting (line 2, from pose 1 at x = 1): (1 + 3, 4)
    assert torch.allclose(data.points[0], torch.tensor([4.0, 4.0], dtype=torch.float64))


def test_fix_anchors_and_vertex3_written_back(tmp_path):
    path = tmp_path / 'v3.graph'
    upper = ' '.join(f'{v:g}' for v in np.eye(6)[np.triu_indices(6)])
    path.write_text('VERTEX3 0 0 0 0 0 0 0\nVERTEX3 1 1 0 0 0.1 -0.2 0.3\n'
                    f'EDGE3 0 1 1 0 0 0 0 0 {upper}\nFIX 1\n')
    data = read_graph(path)
    assert data.fixed.tolist() == [1]
    moved = data.poses.clone()
    moved[1, :, 3] += 0.5
    out = tmp_path / 'out.graph'
    write_solution(out, data, moved)
    lines = out.read_text().splitlines()
    assert lines[0].startswith('VERTEX3 0 ') and lines[1].startswith('VERTEX3 1 1.5 ')
    assert lines[2:] == path.read_text().splitlines()[2:]
    back = read_graph(out)
    assert torch.allclose(back.poses, moved, atol=1e-15)


LANDMARK_FILES = ['cityTrees_reduced_1k.g2o', 'example.graph', 'known_landmark_localization_3.g2o',
                  'edge_se3_trackxyz_nonidentity_offset.g2o']


@pytest.mark.parametrize('name', LANDMARK_FILES)
def test_landmark_files_round_trip(tmp_path, name):
    data = read_graph(gtsam.findExampleDataFile(name))
    assert len(data.points) and data.point_edges
    for writer in (write_g2o, write_solution):
        out = tmp_path / f'{writer.__name__}.g2o'
        writer(out, data)
        back = read_graph(out)
        assert torch.equal(back.ids, data.ids) and torch.equal(back.point_ids, data.point_ids)
        assert torch.allclose(back.poses, data.poses, atol=1e-7)
        assert torch.allclose(back.points, data.points, atol=1e-7)
        for a, b in zip(back.point_edges, data.point_edges):
            assert a.kind == b.kind and torch.equal(a.pose, b.pose) and torch.equal(a.point, b.point)
            assert torch.allclose(a.measurement, b.measurement, atol=1e-7)
            assert torch.allclose(a.information, b.information, rtol=1e-6)


def test_sensor_offset_is_applied():
    """EDGE_SE3_TRACKXYZ with a PARAMS_SE3OFFSET: the residual of the read measurement equals
    the offset-frame residual ``R_o^T (x^-1 p - t_o) - z`` in norm."""
    data = read_graph(gtsam.findExampleDataFile('edge_se3_trackxyz_nonidentity_offset.g2o'))
    (pe,) = data.point_edges
    x, p = data.poses[0], data.points[0]
    q = SE3.act(SE3.inverse(x), p)
    raw = torch.tensor([2.0, 1, 3], dtype=torch.float64)
    to = torch.tensor([0.1, 0, 0], dtype=torch.float64)
    u = [72.57142857142857, -13.71428571428571, -41.14285714285714, 93.14285714285714,
         -20.57142857142857, 38.28571428571429]
    lam = torch.tensor([[u[0], u[1], u[2]], [u[1], u[3], u[4]], [u[2], u[4], u[5]]], dtype=torch.float64)
    r_file = (q - to) - raw
    r_ours = q - pe.measurement[0]
    assert torch.allclose(r_ours @ pe.information[0] @ r_ours, r_file @ lam @ r_file)


def test_parse_without_torch_import():
    """The reader checks a file with numpy only (what lets the CLI answer bad files at once)."""
    import subprocess
    import sys
    code = ('import sys; from diffopt_ros.nlls.io import parse_graph; '
            f'parse_graph({gtsam.findExampleDataFile("w100.graph")!r}); print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
    assert parse_graph(gtsam.findExampleDataFile('w100.graph')).ids.shape == (100,)
