"""Every pose-graph file of gtsam/Data through ``diffopt_ros.nlls`` and through GTSAM's own loader
and Levenberg-Marquardt: final errors (GTSAM's ``0.5 sum ||r||^2_Sigma``), their relative
difference, iterations (as GTSAM counts them: linearizations; ours also with its tries, each a
factorization) and seconds, one row per file.

GTSAM's side reads each file with the loader GTSAM uses for it (``readG2o`` for g2o-order
information, ``load2D`` for TORO files, victoria_park's ``ODOMETRY``/``LANDMARK`` and ``BR``
lines, ``load3D`` for 3D), so the comparison checks this library's reading of the file as well
as its solve. What GTSAM's loaders skip is added with GTSAM's own geometry: pose-to-point lines
(``LANDMARK2``, ``EDGE_SE3_TRACKXYZ`` with its ``PARAMS_SE3OFFSET``) become ``CustomFactor``\\ s on
``Pose.transformTo``. Files without vertex lines start both solvers from this library's
initial values (GTSAM's ``load3D`` inserts none). Both anchor the first pose with a prior of
sigma 1e-3 (the file's ``FIX`` poses when it has any). The relative difference of the final
errors divides by ``max(GTSAM's error, 1e-5)``: both solvers stop once a step gains less than
1e-5 (GTSAM's default absolute tolerance), so smaller errors are known to that accuracy only.

Skipped (listed in the output): files GTSAM cannot optimize either (``T1_city10000_04.txt``:
8-number EDGE2 lines that GTSAM's loader rejects; ``sphere_smallnoise.graph``: EDGE3 lines
without information, which GTSAM reads as a single factor of infinite sigmas) and
``example_with_vertices.g2o`` (vertices only, nothing to optimize).

Run: ``python bench/pgo_files.py [--json out.json] [--only NAME ...]``. Exit status 1 when this
library's final error is above GTSAM's by more than 1e-4 relative on some file (ending below it,
as on files whose descent is slow and where GTSAM's tolerances stop it first, is no failure).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))

from diffopt_ros.lie import SE2  # noqa: E402
from diffopt_ros.nlls.io import read_graph  # noqa: E402
from diffopt_ros.nlls.pgo_cli import command_optimizer  # noqa: E402
from diffopt_ros.nlls.pose_graph import objective_from_data  # noqa: E402

# both solvers stop once a step gains less than this absolute error (GTSAM's default
# absoluteErrorTol): final errors below it are known to this accuracy only
ABS_TOL = 1e-5
# file -> GTSAM loader: the one whose reading of the information entries is the file's own
LOADERS = {
    'w100.graph': 'load2D', 'w10000.graph': 'load2D', 'example.graph': 'load2D',
    'victoria_park.txt': 'load2D', 'w100_30.g2o': 'readG2o', 'w20000.txt': 'readG2o',
    'noisyToyGraph.txt': 'readG2o', 'optimizedNoisyToyGraph.txt': 'readG2o',
    'orientationsNoisyToyGraph.txt': 'readG2o', 'pose2example.txt': 'readG2o',
    'cityTrees_reduced_1k.g2o': 'readG2o', 'victoriaPark_reduced_1k.g2o': 'readG2o',
    'sphere2500.txt': 'load3D', 'sphere2500_groundtruth.txt': 'load3D', 'pose3example.txt': 'load3D',
    'pose3example-grid.txt': 'load3D', 'pose3example-offdiagonal.txt': 'load3D',
    'pose3example-offdiagonal-rewritten.txt': 'load3D', 'pose3Localizationexample.txt': 'load3D',
    'simpleGraph10gradIter.txt': 'load3D', 'Klaus3.g2o': 'load3D', 'toyExample.g2o': 'load3D',
    'known_landmark_localization_3.g2o': 'load3D', 'known_landmark_localization_20.g2o': 'load3D',
    'edge_se3_trackxyz_example.g2o': 'load3D', 'edge_se3_trackxyz_nonidentity_offset.g2o': 'load3D',
    'edge_se3_trackxyz_zero_range.g2o': 'load3D',
}
SKIPPED = {
    'T1_city10000_04.txt': 'EDGE2 lines of 8 numbers; GTSAM load2D rejects them too',
    'sphere_smallnoise.graph': 'EDGE3 lines without information; GTSAM reads one factor of infinite sigmas',
    'example_with_vertices.g2o': 'vertices only: nothing to optimize',
    'edge_se3_trackxyz_missing_vertex.g2o': 'an edge to an undeclared point: an error here and in GTSAM',
}


def path_of(name: str) -> str:
    import gtsam
    return gtsam.findExampleDataFile(name)


def _pose_to_point(pose_key, point_key, z, info, planar, offset=None):
    """GTSAM CustomFactor ``R_o^T (x.transformTo(p) - t_o) - z`` (offset ``(R_o, t_o)`` or None)."""
    import gtsam
    k = 2 if planar else 3
    Ro, to = (np.eye(k), np.zeros(k)) if offset is None else offset
    model = gtsam.noiseModel.Gaussian.Information(info)

    def error(this, values, H):
        x = values.atPose2(this.keys()[0]) if planar else values.atPose3(this.keys()[0])
        p = values.atPoint2(this.keys()[1]) if planar else values.atPoint3(this.keys()[1])
        H1 = np.zeros((k, 3 if planar else 6), order='F')
        H2 = np.zeros((k, k), order='F')
        q = x.transformTo(p, H1, H2)
        if H is not None:
            H[0] = Ro.T @ H1
            H[1] = Ro.T @ H2
        return Ro.T @ (q - to) - z

    return gtsam.CustomFactor(model, [pose_key, point_key], error)


def _raw_lines(name: str, tags: tuple[str, ...]) -> list[list[str]]:
    out = []
    for line in Path(path_of(name)).read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in tags:
            out.append(parts)
    return out


def gtsam_graph(name: str, data):
    """GTSAM's graph and initial values for file ``name`` (see the module docstring)."""
    import gtsam
    from gtsam.symbol_shorthand import L
    loader = LOADERS[name]
    planar = data.group is SE2
    if loader == 'readG2o':
        graph, initial = gtsam.readG2o(path_of(name), False)
    elif loader == 'load2D':
        graph, initial = gtsam.load2D(path_of(name))
    elif 'EDGE_SE3_TRACKXYZ' in Path(path_of(name)).read_text():
        # GTSAM 4.3's load3D turns these lines into bearing-range factors with diagonal noise
        # (another model) and refuses non-identity sensor offsets: load the poses only
        import tempfile
        keep = [line for line in Path(path_of(name)).read_text().splitlines()
                if line.split()[:1] not in (['EDGE_SE3_TRACKXYZ'], ['PARAMS_SE3OFFSET'])]
        with tempfile.NamedTemporaryFile('w', suffix='.g2o') as tmp:
            tmp.write('\n'.join(keep) + '\n')
            tmp.flush()
            graph, initial = gtsam.load3D(tmp.name)
    else:
        graph, initial = gtsam.load3D(path_of(name))
    ids = data.ids.tolist()
    values = gtsam.Values()
    poses = data.poses.double().numpy()
    for k, v in enumerate(ids):  # this library's initial values (equal to the file's vertices)
        if initial.exists(v):
            values.insert(v, initial.atPose2(v) if planar else initial.atPose3(v))
        else:
            pose = gtsam.Pose2(*poses[k]) if planar else gtsam.Pose3(np.vstack((poses[k], [0, 0, 0, 1])))
            values.insert(v, pose)
    points = data.points.double().numpy() if data.points is not None else np.zeros((0, 2))
    for k, v in enumerate(data.point_ids.tolist()):
        if initial.exists(L(v)):
            values.insert(L(v), initial.atPoint2(L(v)) if planar else initial.atPoint3(L(v)))
        else:
            values.insert(L(v), points[k])
    if planar:
        for parts in _raw_lines(name, ('LANDMARK2', 'EDGE_SE2_XY')):
            a, b = int(parts[1]), int(parts[2])
            xx, xy, yy = map(float, parts[5:8])
            graph.add(_pose_to_point(a, L(b), np.array(list(map(float, parts[3:5]))),
                                     np.array([[xx, xy], [xy, yy]]), True))
    else:
        offsets = {}
        for parts in _raw_lines(name, ('PARAMS_SE3OFFSET',)):
            q = np.array(list(map(float, parts[5:9])))
            R = gtsam.Rot3.Quaternion(q[3], q[0], q[1], q[2]).matrix()
            offsets[int(parts[1])] = (R, np.array(list(map(float, parts[2:5]))))
        for parts in _raw_lines(name, ('EDGE_SE3_TRACKXYZ',)):
            a, b, o = int(parts[1]), int(parts[2]), int(parts[3])
            u = list(map(float, parts[7:13]))
            info = np.array([[u[0], u[1], u[2]], [u[1], u[3], u[4]], [u[2], u[4], u[5]]])
            graph.add(_pose_to_point(a, L(b), np.array(list(map(float, parts[4:7]))), info, False,
                                     offsets[o]))
    anchors = data.fixed.tolist() if len(data.fixed) else [0]
    d = data.group.dof
    noise = gtsam.noiseModel.Diagonal.Sigmas(np.full(d, 1e-3))
    for k in anchors:
        key = ids[k]
        if planar:
            graph.add(gtsam.PriorFactorPose2(key, values.atPose2(key), noise))
        else:
            graph.add(gtsam.PriorFactorPose3(key, values.atPose3(key), noise))
    return graph, values


def gtsam_lm(name: str, data, tol: float = 1e-5, max_iterations: int = 100) -> dict:
    """GTSAM LM (default parameters but the tolerances and iteration cap) on :func:`gtsam_graph`."""
    import gtsam
    t0 = time.perf_counter()
    graph, values = gtsam_graph(name, data)
    params = gtsam.LevenbergMarquardtParams()
    params.setMaxIterations(max_iterations)
    params.setRelativeErrorTol(tol)
    params.setAbsoluteErrorTol(tol)
    opt = gtsam.LevenbergMarquardtOptimizer(graph, values, params)
    result = opt.optimize()
    return dict(initial=graph.error(values), final=graph.error(result), iterations=opt.iterations(),
                seconds=time.perf_counter() - t0)


def ours_lm(name: str, tol: float = 1e-5, max_iterations: int = 100) -> dict:
    """This library: read, build, LM (the command's, :func:`command_optimizer`: iterations
    counted as GTSAM counts them; the tolerances set here)."""
    t0 = time.perf_counter()
    data = read_graph(path_of(name))
    objective, _, _ = objective_from_data(data)
    opt = command_optimizer(objective, max_iterations=max_iterations, rel_tol=tol, abs_tol=tol)
    with torch.no_grad():
        result = opt.solve()
    return dict(data=data, initial=float(result.initial_error[0]), final=float(result.error[0]),
                iterations=int(result.steps[0]), tries=int(result.iterations[0]), status=result.status[0],
                seconds=time.perf_counter() - t0)


def compare(name: str, tol: float = 1e-5, max_iterations: int = 100) -> dict:
    """Both solvers on one file; ``rel`` = |ours - GTSAM| / max(GTSAM, ABS_TOL) of the final
    errors, ``above`` the same without the absolute value (> 0: ours higher)."""
    ours = ours_lm(name, tol, max_iterations)
    data = ours.pop('data')
    ref = gtsam_lm(name, data, tol, max_iterations)
    above = (ours['final'] - ref['final']) / max(abs(ref['final']), ABS_TOL)
    return dict(file=name, poses=len(data.ids), edges=len(data.i), points=len(data.point_ids),
                point_edges=sum(len(p.pose) for p in data.point_edges), ours=ours, gtsam=ref,
                rel=abs(above), above=above)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--json', help='write one row per file to this file')
    p.add_argument('--only', nargs='*', help='file names to run (default: all)')
    p.add_argument('--tol', type=float, default=1e-5,
                   help='relative and absolute error tolerance of both solvers (default 1e-5, GTSAM\'s)')
    p.add_argument('--max-iterations', type=int, default=100, help='iteration cap of both (default 100)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.only or list(LOADERS)
    rows = []
    print('| file | poses | edges | points | point edges | GTSAM error | ours | rel. diff | '
          'GTSAM it. / s | ours it. (tries) / s |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    worst = above = 0.0
    for name in names:
        r = compare(name, args.tol, args.max_iterations)
        rows.append(r)
        worst, above = max(worst, r['rel']), max(above, r['above'])
        g, o = r['gtsam'], r['ours']
        print(f"| {name} | {r['poses']} | {r['edges']} | {r['points']} | {r['point_edges']} | "
              f"{g['final']:.6g} | {o['final']:.6g} | {r['rel']:.1e} | "
              f"{g['iterations']} / {g['seconds']:.2f} | "
              f"{o['iterations']} ({o['tries']}) / {o['seconds']:.2f} |", flush=True)
    if not args.only:
        for name, why in SKIPPED.items():
            print(f'| {name} | skipped: {why} |||||||||')
    print(f'largest relative difference: {worst:.1e}; largest by which ours is above GTSAM\'s: {above:.1e}')
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if above <= 1e-4 else 1


if __name__ == '__main__':
    sys.exit(main())
