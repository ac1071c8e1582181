"""GTSAM's Levenberg-Marquardt on a gtsam/Data pose graph, as a GTSAM user's script runs it.

The file is read with GTSAM's loader (``load2D``; sphere2500, which has no vertices: ``readG2o``
and chained odometry in Python, as GTSAM's reference), the first pose is anchored with a prior
of sigma 1e-3, and ``LevenbergMarquardtOptimizer`` runs with default parameters.

``bench/nlls.py`` imports :func:`load` and :func:`optimize` (GTSAM in its own process) and runs
this file as a subprocess, the like-for-like peer of ``diffopt-ros pgo`` as a subprocess:
``python bench/gtsam_pgo.py NAME`` starts the interpreter, imports gtsam (not torch), loads,
optimizes and prints ``error E iterations K``.
"""
from __future__ import annotations

import argparse
import sys

FILES = {'w100': 'w100.graph', 'w10000': 'w10000.graph', 'sphere2500': 'sphere2500.txt'}


def data_file(name: str) -> str:
    """Path of the gtsam/Data file of a case name (a key of ``FILES``)."""
    import gtsam
    return gtsam.findExampleDataFile(FILES[name])


def load(name: str):
    """``(graph, initial values)`` with the prior on the first pose."""
    import gtsam
    path = data_file(name)
    if name == 'sphere2500':
        graph, _ = gtsam.readG2o(path, True)
        values = gtsam.Values()
        values.insert(0, gtsam.Pose3())
        for k in range(graph.size()):
            f = graph.at(k)
            a, b = f.keys()
            if b == a + 1 and not values.exists(b):
                values.insert(b, values.atPose3(a).compose(f.measured()))
        graph.add(gtsam.PriorFactorPose3(0, values.atPose3(0), gtsam.noiseModel.Isotropic.Sigma(6, 1e-3)))
    else:
        graph, values = gtsam.load2D(path)
        graph.add(gtsam.PriorFactorPose2(0, values.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-3)))
    return graph, values


def optimize(graph, values):
    """``(final error, outer iterations)`` of LM with GTSAM's default parameters."""
    import gtsam
    opt = gtsam.LevenbergMarquardtOptimizer(graph, values, gtsam.LevenbergMarquardtParams())
    result = opt.optimize()
    return graph.error(result), opt.iterations()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('name', choices=sorted(FILES), help='case: the gtsam/Data file to solve')
    args = p.parse_args(argv)
    error, iterations = optimize(*load(args.name))
    print(f'error {error:.9g} iterations {iterations}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
