"""Pose arithmetic of the file reader and writer in numpy (no torch): rotation conventions
(quaternions, roll-pitch-yaw), homogeneous matrices, initial poses composed along a spanning
tree, points placed at their first sighting."""
from __future__ import annotations

import numpy as np


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """Unit ``(R, 4) = (x, y, z, w)`` -> ``(R, 3, 3)``."""
    x, y, z, w = q.T
    return np.stack((
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)), -1).reshape(-1, 3, 3)


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw ``(R, 3)`` -> ``Rz(yaw) Ry(pitch) Rx(roll)`` ``(R, 3, 3)``."""
    cr, cp, cy = np.cos(rpy).T
    sr, sp, sy = np.sin(rpy).T
    return np.stack((
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr), -1).reshape(-1, 3, 3)


def _matrix_rpy(R: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` -> roll, pitch, yaw ``(N, 3)`` with ``R = Rz(yaw) Ry(pitch) Rx(roll)``."""
    yaw = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    pitch = np.arctan2(-R[:, 2, 0], np.hypot(R[:, 0, 0], R[:, 1, 0]))
    roll = np.arctan2(R[:, 2, 1], R[:, 2, 2])
    return np.stack((roll, pitch, yaw), 1)


def _homogeneous(planar: bool, pose: np.ndarray) -> np.ndarray:
    """Poses ``(R, 3)`` (SE2) or ``(R, 3, 4)`` (SE3) -> ``(R, k, k)`` homogeneous matrices."""
    if planar:
        c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
        m = np.zeros((len(pose), 3, 3))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
        m[:, :2, 2] = pose[:, :2]
        m[:, 2, 2] = 1
        return m
    m = np.zeros((len(pose), 4, 4))
    m[:, :3] = pose
    m[:, 3, 3] = 1
    return m


def _from_homogeneous(planar: bool, m: np.ndarray) -> np.ndarray:
    if planar:
        return np.stack((m[:, 0, 2], m[:, 1, 2], np.arctan2(m[:, 1, 0], m[:, 0, 0])), 1)
    return m[:, :3].copy()


def _inverse_homogeneous(m: np.ndarray) -> np.ndarray:
    k = m.shape[-1] - 1
    out = np.zeros_like(m)
    Rt = m[:, :k, :k].transpose(0, 2, 1)
    out[:, :k, :k] = Rt
    out[:, :k, k] = -np.einsum('eab,eb->ea', Rt, m[:, :k, k])
    out[:, k, k] = 1
    return out


def _compose_tree(planar: bool, n: int, ij: np.ndarray, meas: np.ndarray, notes: list[str]) -> np.ndarray:
    """Poses ``(n, *shape)`` by composing edges ``ij (E, 2)`` along a spanning tree that prefers
    earlier edges (a minimum spanning tree with the line order as weight: the odometry chain when
    it comes first, as in GTSAM's file-order initialization), from the lowest index of each
    connected part (at the identity). Compositions along the tree by pointer jumping:
    log2(depth) batched matrix products."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

    k = 3 if planar else 4
    T = np.broadcast_to(np.eye(k), (n, k, k)).copy()
    if not len(ij):
        return _from_homogeneous(planar, T)
    lo, hi = ij.min(1), ij.max(1)
    pair = lo * n + hi
    _, first = np.unique(pair, return_index=True)  # earliest edge of each vertex pair
    first = first[lo[first] != hi[first]]
    weight = coo_matrix((first + 1.0, (lo[first], hi[first])), shape=(n, n)).tocsr()
    tree = minimum_spanning_tree(weight)
    parts, label = connected_components(tree, directed=False)
    if parts > 1:
        notes.append(f'the graph has {parts} parts not linked by edges; each part starts at the identity')
    parent = np.arange(n)
    roots = np.unique(label, return_index=True)[1]
    for r in roots:
        if (label == label[r]).sum() > 1:
            _, pred = breadth_first_order(tree, r, directed=False, return_predecessors=True)
            reached = pred >= 0
            parent[reached] = pred[reached]
    child = np.nonzero(parent != np.arange(n))[0]
    # the edge joining each child to its parent, in either direction
    M = _homogeneous(planar, meas)
    key = ij[:, 0] * n + ij[:, 1]
    order = np.argsort(key, kind='stable')
    fwd_key = parent[child] * n + child
    pos = np.minimum(np.searchsorted(key[order], fwd_key), len(key) - 1)
    forward = key[order][pos] == fwd_key
    rev_key = child * n + parent[child]
    rpos = np.minimum(np.searchsorted(key[order], rev_key), len(key) - 1)
    T[child[forward]] = M[order[pos[forward]]]
    T[child[~forward]] = _inverse_homogeneous(M[order[rpos[~forward]]])
    done = parent == np.arange(n)
    anc = parent.copy()
    while not done.all():
        todo = np.nonzero(~done)[0]
        T[todo] = T[anc[todo]] @ T[todo]
        finished = done[anc[todo]]
        anc[todo] = anc[anc[todo]]
        done[todo[finished]] = True
    return _from_homogeneous(planar, T)


def _first_sightings(planar: bool, poses: np.ndarray, obs: list[dict], m: int) -> np.ndarray:
    """Each point at its first observation (by line): pose * local position."""
    dim = 2 if planar else 3
    points = np.zeros((m, dim))
    if not m:
        return points
    lines = np.concatenate([o['lines'] for o in obs])
    pidx = np.concatenate([o['point_index'] for o in obs])
    local = []
    for o in obs:
        z = o['measurement']
        if o['kind'] == 'bearing_range':
            z = np.stack((z[:, 1] * np.cos(z[:, 0]), z[:, 1] * np.sin(z[:, 0])), 1)
        local.append(z)
    local = np.concatenate(local)
    pose = poses[np.concatenate([o['pose_index'] for o in obs])]
    order = np.argsort(lines, kind='stable')
    _, first = np.unique(pidx[order], return_index=True)
    sel = order[first]
    T = _homogeneous(planar, pose[sel])
    points[pidx[sel]] = np.einsum('eab,eb->ea', T[:, :dim, :dim], local[sel]) + T[:, :dim, dim]
    return points
