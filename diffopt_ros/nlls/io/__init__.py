"""Read g2o, TORO and GTSAM pose-graph files (poses and point landmarks); write them back.

Lines are grouped by tag and each group's numbers are parsed in one vectorised call, so a file
of 80 000 lines reads in about 0.1 s. Every line must be understood: an unknown tag, a wrong
number count, a duplicate vertex, an edge to a vertex the file does not declare, a zero
quaternion or an information matrix that is not positive definite is a
:class:`GraphFormatError` whose message starts with ``file:line:``.

Tags (ids are non-negative integers below 2^53; poses and points have separate id spaces, as
GTSAM's ``L(id)`` landmark keys):

* 2D poses: ``VERTEX_SE2`` / ``VERTEX2`` / ``VERTEX id x y theta``.
* 2D pose edges ``EDGE_SE2 i j dx dy dtheta`` + information upper triangle row-major (g2o);
  ``EDGE2`` / ``EDGE`` (TORO): information in TORO order ``xx xy yy tt xt yt``, unless some line
  is not positive definite in that order while every line is in g2o order: then the whole file
  is read in g2o order (the two orders are decided per file; GTSAM's ``load2D`` decides from the
  zero pattern and agrees on every file in gtsam/Data); ``ODOMETRY`` (victoria_park): covariance
  in g2o order.
* 2D points: ``VERTEX_XY id x y``; ``EDGE_SE2_XY`` / ``LANDMARK2 pose point x y ixx ixy iyy``
  (position in the pose frame, information); ``BR pose point bearing range sigma_b sigma_r``;
  ``LANDMARK pose point x y vxx vxy vyy`` (victoria_park), converted to bearing and range with
  GTSAM's rule (sigmas ``sqrt(vxx / 10)`` rad and ``sqrt(vxx)`` m when ``vxx = vyy``, else 1 and 1).
* 3D poses: ``VERTEX_SE3:QUAT id x y z qx qy qz qw`` (quaternion normalized, as GTSAM does),
  ``VERTEX3 id x y z roll pitch yaw`` (``Rz(yaw) Ry(pitch) Rx(roll)``); edges
  ``EDGE_SE3:QUAT`` + 21 information entries (upper triangle, translation first) and
  ``EDGE3 i j x y z roll pitch yaw`` + 21 entries (read as GTSAM does: rotation first).
* 3D points: ``VERTEX_TRACKXYZ id x y z``; ``EDGE_SE3_TRACKXYZ pose point offset x y z`` + 6
  information entries, the position seen from the sensor ``PARAMS_SE3OFFSET offset x y z qx qy
  qz qw`` mounted on the pose.
* ``FIX id...``: anchor these poses (default: the first pose). ``EQUIV i j`` (TORO vertex
  equivalences): skipped, as GTSAM's loaders skip them, and reported in ``notes``.
* ``#`` starts a comment line; a UTF-8 byte-order mark is allowed.

Initial values: a file that declares no pose vertices (e.g. ``sphere2500.txt``) gets its poses by
composing edges along a breadth-first spanning tree from the first pose (at the identity), as
GTSAM's ``load2D`` does for pure odometry files; points that no vertex line declares are placed
at their first observation. Otherwise every referenced vertex must be declared.

Modules: :mod:`.data` (results and the error), :mod:`.tokens` (lines to numbers, checks),
:mod:`.geometry` (pose conventions in numpy), :mod:`.parse` (reading), :mod:`.write` (writing).
torch (and the Lie groups on it) is imported only once a file has been read and checked: a
malformed file is reported without paying for the torch import.
"""
from diffopt_ros.nlls.io.data import GraphFormatError, ParsedGraph, PointEdges, PoseGraphData, to_tensors
from diffopt_ros.nlls.io.parse import parse_graph, read_graph
from diffopt_ros.nlls.io.write import write_g2o, write_solution

__all__ = ['GraphFormatError', 'ParsedGraph', 'PointEdges', 'PoseGraphData', 'parse_graph', 'read_graph',
           'to_tensors', 'write_g2o', 'write_solution']
