"""Supernodal Cholesky of block-sparse symmetric positive definite matrices, batched kernels.

For the normal equations of factor graphs: ``H (n, n)`` whose nonzeros form dense blocks between
variables (elements of dof 3 or 6). The symbolic analysis is done once per sparsity pattern and
re-used by every numeric factorization (LM iterations, damping retries):

1. a fill-reducing ordering of the *block* graph (multiple minimum degree on ``A^T + A``, from
   SuperLU through scipy), then a postorder of its elimination tree;
2. the block structure of every column of ``L`` and the elimination tree;
3. supernodes: chains of block columns with the same structure (fundamental supernodes), merged
   with their parent while the explicit zeros this adds stay small (CHOLMOD's relaxed
   amalgamation rule, ``nrelax = (4, 16, 48)``, ``zrelax = (0.8, 0.1, 0.05)`` in columns);
4. the plan: supernodes grouped by level of the supernodal tree and shape, and the index maps
   from the entries of ``H`` and of every supernode's update to the panels of ``L``.

The numeric factorization (right-looking) visits the groups leaves first: for all ``K``
supernodes of a group at once it factorizes the diagonal blocks (``cholesky_ex``), solves for
the panels below them (``solve_triangular``) and scatters the updates ``-L21 L21^T`` into the
panels of their ancestors (``index_add_``). A few torch calls per group instead of per
supernode: w10000 (2315 supernodes) has 403 groups, sphere2500 (1486) 86. Solves run over the
groups forward and backward the same way. Computed in float64 on the CPU, with torch's
intra-op threads.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

# CHOLMOD's relaxed amalgamation defaults: (at most this many columns, largest fraction of zeros)
_RELAX = ((4, 1.0), (16, 0.8), (48, 0.1))
_RELAX_LAST = 0.05


class NotPositiveDefiniteError(ValueError):
    """The numeric factorization met a non-positive pivot."""


def _block_ordering(NB: int, bi: np.ndarray, bj: np.ndarray) -> np.ndarray:
    """Fill-reducing order of the block graph (``order[k]`` = the block eliminated k-th): multiple
    minimum degree on the pattern, taken from SuperLU's column ordering of a diagonally dominant
    matrix with that pattern (symmetric mode, diagonal pivots: rows follow columns)."""
    import scipy.sparse.linalg as spla  # imported here: the cholespy path needs no scipy
    from scipy.sparse import csc_matrix
    off = bi != bj
    deg = np.bincount(bi[off], minlength=NB).astype(np.float64)
    rows = np.concatenate((bi[off], np.arange(NB)))
    cols = np.concatenate((bj[off], np.arange(NB)))
    vals = np.concatenate((-np.ones(int(off.sum())), deg + 1.0))
    G = csc_matrix((vals, (rows, cols)), shape=(NB, NB))
    lu = spla.splu(G, permc_spec='MMD_AT_PLUS_A', diag_pivot_thresh=0.0,
                   options=dict(SymmetricMode=True))
    return np.argsort(lu.perm_c)


def _lower_adjacency(NB: int, bi: np.ndarray, bj: np.ndarray) -> list[list[int]]:
    """Per block column j, the blocks i > j that share an entry with it (pairs without repeats)."""
    key = np.sort(bj * NB + bi)  # column-major: sorted by column, then row
    col, row = key // NB, key % NB
    low = row > col
    bounds = np.searchsorted(col[low], np.arange(NB + 1)).tolist()
    rows = row[low].tolist()
    return [rows[bounds[j]:bounds[j + 1]] for j in range(NB)]


def _elimination(NB: int, lower_adj: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Elimination tree (parent per block, -1 at roots) and the sorted block structure of every
    column of L below its diagonal, for blocks in elimination order."""
    parent = [-1] * NB
    children: list[list[int]] = [[] for _ in range(NB)]
    struct: list[list[int]] = [[]] * NB
    for j in range(NB):
        s = set(lower_adj[j])
        for c in children[j]:
            s.update(struct[c])
        s.discard(j)
        struct[j] = sorted(s)
        if s:
            parent[j] = struct[j][0]
            children[parent[j]].append(j)
    return parent, struct


def _postorder(parent: np.ndarray) -> np.ndarray:
    """Postorder of a forest (``order[k]`` = the node visited k-th), children in index order."""
    NB = len(parent)
    key = np.where(parent >= 0, parent, NB)  # roots hang under a virtual node NB
    kids = np.argsort(key, kind='stable')  # children grouped by parent, in index order
    first = np.searchsorted(key[kids], np.arange(NB + 2)).tolist()
    kids = kids.tolist()
    order, stack = [], [(NB, 0)]
    while stack:  # iterative depth-first search: (node, next child position)
        node, k = stack[-1]
        if first[node] + k < first[node + 1]:
            stack[-1] = (node, k + 1)
            stack.append((kids[first[node] + k], 0))
        else:
            stack.pop()
            order.append(node)
    return np.asarray(order[:-1], dtype=np.int64)


def _expand(first: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The scalar indices ``first[k] + 0 .. size[k]-1`` of every block k, concatenated."""
    total = int(size.sum())
    offset = np.repeat(np.cumsum(size) - size, size)
    return np.repeat(first, size) + np.arange(total) - offset


class SupernodalCholesky:
    """Symbolic analysis of a block-sparse SPD pattern; :meth:`factorize` gives a numeric factor.

    Args:
        n: matrix size.
        rows, cols: ``(nnz,)`` scalar coordinates of the pattern's entries (both triangles and the
            diagonal); values passed to :meth:`factorize` are in this order.
        block_start, block_dof: ``(NB,)`` first scalar index and size of each block; every
            pattern entry lies in a dense block pair.
        block_pairs: ``(bi, bj)``, the block pairs of the pattern without repeats (both
            triangles), when the caller has them; else derived from ``rows, cols``.
    """

    def __init__(self, n: int, rows: np.ndarray, cols: np.ndarray, block_start: np.ndarray,
                 block_dof: np.ndarray, block_pairs: tuple[np.ndarray, np.ndarray] | None = None):
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        block_start, block_dof = np.asarray(block_start, np.int64), np.asarray(block_dof, np.int64)
        NB = len(block_start)
        self.n = n
        block_of = np.repeat(np.arange(NB), block_dof)
        if block_pairs is None:
            pairs = np.unique(block_of[rows] * NB + block_of[cols])
            block_pairs = (pairs // NB, pairs % NB)
        bi, bj = (np.asarray(b, np.int64) for b in block_pairs)
        order = _block_ordering(NB, bi, bj)
        rank = np.empty(NB, np.int64)
        rank[order] = np.arange(NB)
        # block structure in elimination order, then re-labelled in a postorder of its tree
        # (ancestors keep their relative order, so each column's structure stays sorted)
        parent, struct = _elimination(NB, _lower_adjacency(NB, rank[bi], rank[bj]))
        post = _postorder(np.asarray(parent))
        rank2 = np.empty(NB, np.int64)
        rank2[post] = np.arange(NB)
        r2 = rank2.tolist()
        struct = [[r2[i] for i in struct[j]] for j in post.tolist()]
        parent = [r2[parent[j]] if parent[j] >= 0 else -1 for j in post.tolist()]
        final = rank2[rank]  # old block -> position in the factor
        blocks_in_order = np.argsort(final)
        dof = block_dof[blocks_in_order]
        start = np.concatenate(([0], np.cumsum(dof)))  # scalar start of each block in the factor
        self.perm = _expand(block_start[blocks_in_order], dof)  # perm[new scalar] = old scalar
        self.iperm = np.empty(n, np.int64)
        self.iperm[self.perm] = np.arange(n)
        self.supernodes = self._supernodes(NB, parent, struct, dof.tolist(), start.tolist())
        self._maps(rows, cols, start, dof, struct)

    @staticmethod
    def _supernodes(NB, parent, struct, dof, start) -> list[tuple[int, int]]:
        """Block ranges ``[a, b)`` of the (relaxed) supernodes, in postorder."""
        lens = [len(s) for s in struct]
        flat = np.fromiter(itertools.chain.from_iterable(struct), np.int64, sum(lens))
        rowdof = np.bincount(np.repeat(np.arange(NB), lens), weights=np.asarray(dof)[flat],
                             minlength=NB).astype(np.int64).tolist()  # scalar rows below each block
        stack: list[list[int]] = []  # [first block, end block, true nonzeros of its columns]
        for j in range(NB):
            stack.append([j, j + 1, dof[j] * (dof[j] + 1) // 2 + dof[j] * rowdof[j]])
            while len(stack) >= 2:
                prev, cur = stack[-2], stack[-1]
                if parent[prev[1] - 1] != cur[0]:
                    break
                ncol = start[cur[1]] - start[prev[0]]
                panel = ncol * (ncol + 1) // 2 + ncol * rowdof[cur[1] - 1]
                zeros = 1.0 - (prev[2] + cur[2]) / panel
                limit = next((z for cap, z in _RELAX if ncol <= cap), _RELAX_LAST)
                if zeros > 0 and zeros >= limit:  # no zeros: a fundamental supernode
                    break
                stack[-2:] = [[prev[0], cur[1], prev[2] + cur[2]]]
        return [(a, b) for a, b, _ in stack]

    def _maps(self, rows, cols, start, dof, struct) -> None:
        """The plan of the numeric factorization and the solves.

        Supernodes are processed by level of the supernodal tree (leaves first); within a level,
        supernodes of the same shape (columns, rows below rounded up to a multiple of 6) form a
        group whose panels ``(K, m, ns)`` (the supernode's columns of ``L``, row-major) lie
        consecutively in one buffer and are factorized by batched dense kernels. Index maps:
        where each lower entry of ``H`` goes in that buffer, and where each lower entry of a
        supernode's update ``-L21 L21^T`` goes (the panel of the ancestor owning its column;
        right-looking, so no frontal matrix is kept).
        """
        n = self.n
        N = len(self.supernodes)
        owner = np.empty(n, np.int64)  # supernode of every column
        c0s, c1s, below_, parent, level = [], [], [], [-1] * N, [0] * N
        for s, (a, b) in enumerate(self.supernodes):
            below = np.asarray(struct[b - 1], np.int64)
            c0s.append(int(start[a]))
            c1s.append(int(start[b]))
            owner[c0s[s]:c1s[s]] = s
            below_.append(_expand(start[below], dof[below]))
        for s in range(N):  # children come first in postorder
            if len(below_[s]):
                parent[s] = int(owner[below_[s][0]])
                level[parent[s]] = max(level[parent[s]], level[s] + 1)
        pad = [-(-len(r) // 6) * 6 for r in below_]
        key_of = [(level[s], c1s[s] - c0s[s], pad[s]) for s in range(N)]
        keys = sorted(set(key_of))
        members = {k: [] for k in keys}
        for s in range(N):
            members[key_of[s]].append(s)
        # columns renumbered group by group (ancestors are in later groups, so the order stays an
        # elimination order with the same fill): a group's columns are one slice of the solve vector
        in_order = np.concatenate([np.arange(c0s[s], c1s[s]) for key in keys for s in members[key]])
        new = np.empty(n, np.int64)
        new[in_order] = np.arange(n)
        self.perm = self.perm[in_order]
        self.iperm[self.perm] = np.arange(n)
        self._perm_t, self._iperm_t = torch.from_numpy(self.perm), torch.from_numpy(self.iperm)
        owner[new] = owner.copy()
        widths = [c1 - c0 for c0, c1 in zip(c0s, c1s)]
        c0s = [int(new[c]) for c in c0s]
        c1s = [c0 + w for c0, w in zip(c0s, widths)]
        below_ = [np.sort(new[r]) for r in below_]
        nrow, ncol = self.iperm[rows], self.iperm[cols]
        entries = np.nonzero(nrow >= ncol)[0]  # H's lower triangle, in pattern order
        offset, width, total = np.zeros(N, np.int64), np.zeros(N, np.int64), 0
        for key in keys:
            _, ns, nu = key
            for s in members[key]:
                offset[s], width[s] = total, ns
                total += (ns + nu) * ns
        self._size = total
        # every front (columns, then rows below) as sorted keys  supernode * (n + 1) + row
        fronts = [np.concatenate((np.arange(c0s[s], c1s[s]), below_[s])) for s in range(N)]
        front_len = np.array([len(f) for f in fronts])
        front_start = np.cumsum(front_len) - front_len
        front_keys = np.concatenate([s * (n + 1) + f for s, f in enumerate(fronts)])

        start_of = np.asarray(c0s, np.int64)
        # H's lower entries: buffer position of (row, col) in the panel of col's supernode sn
        sn, row, col = owner[ncol[entries]], nrow[entries], ncol[entries]
        local = np.searchsorted(front_keys, sn * (n + 1) + row) - front_start[sn]
        self._a_src = torch.from_numpy(entries)
        self._a_dst = torch.from_numpy(offset[sn] + local * width[sn] + col - start_of[sn])
        owner_or_pad = np.append(owner, -1)  # slot n: padded rows
        self.groups = []
        for key in keys:
            _, ns, nu = key
            group = members[key]
            K = len(group)
            row_idx = np.full((K, nu), n, np.int64)  # padded rows: slot n of the solve vector
            count = np.empty(K, np.int64)
            for k, s in enumerate(group):
                count[k] = len(below_[s])
                row_idx[k, :count[k]] = below_[s]
            src, dst = self._update_maps(row_idx, count, owner_or_pad[row_idx], front_keys, front_start,
                                         offset, width, start_of)
            rows = torch.from_numpy(row_idx.reshape(-1))
            self.groups.append((int(offset[group[0]]), K, ns, nu, c0s[group[0]], rows, torch.from_numpy(src),
                                torch.from_numpy(dst)))
        self.num_supernodes = N

    def _update_maps(self, row_idx, count, col_owner, front_keys, front_start, offset, width, start_of):
        """Where the lower triangle of each member's update ``(nu, nu)`` of a group comes from
        (``src``, flat in the group's ``(K, nu, nu)`` product) and goes to (``dst``, a buffer
        position in the panel owning its column), less padded rows.

        ``row_idx (K, nu)``: the members' rows below (``n`` where padded), ``count (K,)`` how many
        are real, ``col_owner (K, nu)`` the supernode owning each of those rows as a column. The
        columns of one owner are a run (rows are sorted, owners in postorder), and an entry's row
        lies at the same place of that owner's front for every column of the run: so the
        front positions are searched once per (member, row, run), not per entry.
        """
        n = self.n
        K, nu = row_idx.shape
        if nu == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        first = np.ones((K, nu), bool)
        first[:, 1:] = col_owner[:, 1:] != col_owner[:, :-1]
        run = np.cumsum(first, 1) - 1  # (K, nu) run of every column
        R = int(run[:, -1].max()) + 1
        fk, fj = np.nonzero(first)
        run_owner = np.zeros((K, R), np.int64)
        run_start = np.full((K, R), nu, np.int64)
        run_owner[fk, run[fk, fj]] = col_owner[fk, fj]
        run_start[fk, run[fk, fj]] = fj
        rows = np.arange(nu)
        qk, qi, qr = np.nonzero((rows[None, :, None] >= run_start[:, None, :])
                                & (rows[None, :, None] < count[:, None, None]))
        owner_q = run_owner[qk, qr]
        front_row = np.zeros((K, nu, R), np.int64)  # position of row i in the front of run r's owner
        front_row[qk, qi, qr] = (np.searchsorted(front_keys, owner_q * (n + 1) + row_idx[qk, qi])
                                 - front_start[owner_q])
        # per column: its panel's position of (front row 0, this column), and the panel's width
        t = np.where(col_owner >= 0, col_owner, 0)
        col_base = (offset[t] + row_idx - start_of[t]).reshape(-1)
        col_width = width[t].reshape(-1)
        i, j = np.tril_indices(nu)
        k_nu = (np.arange(K) * nu)[:, None]
        kj, ki = k_nu + j, k_nu + i  # (K, nu (nu + 1) / 2): flat (member, column), (member, row)
        src = ki * nu + j
        dst = col_base[kj] + front_row.reshape(-1)[ki * R + run.reshape(-1)[kj]] * col_width[kj]
        if (count < nu).any():  # padded rows: no update
            real = i < count[:, None]
            return src[real], dst[real]
        return src.reshape(-1), dst.reshape(-1)

    def factorize(self, values: torch.Tensor) -> SupernodalFactor:
        """Numeric factorization of the matrix with pattern values ``values (nnz,)`` (computed
        in float64 on the CPU)."""
        values = torch.as_tensor(values).to(dtype=torch.float64, device='cpu')
        buf = values.new_zeros(self._size)
        buf.index_copy_(0, self._a_dst, values.index_select(0, self._a_src))
        panels, infos = [], []
        for base, K, ns, nu, _, _, src, dst in self.groups:
            P = buf[base:base + K * (ns + nu) * ns].view(K, ns + nu, ns)
            L11, info = torch.linalg.cholesky_ex(P[:, :ns])
            infos.append(info)
            L21 = None
            if nu:  # a failed pivot gives non-finite panels above it: checked once at the end
                L21 = torch.linalg.solve_triangular(L11.mT, P[:, ns:], upper=True, left=False)
                buf.index_add_(0, dst, torch.bmm(L21, L21.mT).reshape(-1).index_select(0, src), alpha=-1)
            panels.append((L11, L21))
        if bool(torch.cat(infos).any()):
            raise NotPositiveDefiniteError('the matrix is not positive definite')
        return SupernodalFactor(self, panels)


class SupernodalFactor:
    """``L L^T = P H P^T`` from :meth:`SupernodalCholesky.factorize`; :meth:`solve` applies ``H^-1``."""

    def __init__(self, symbolic: SupernodalCholesky, panels):
        self.symbolic, self.panels = symbolic, panels

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``H^-1 b`` for ``b (n,)`` or ``(n, k)`` (float64)."""
        sym = self.symbolic
        n = sym.n
        rhs = torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape(n, -1)
        k = rhs.shape[1]
        y = rhs.new_zeros(n + 1, k)  # slot n: padded rows
        y[:n] = rhs.index_select(0, sym._perm_t)
        flat, lanes = y.view(-1), torch.arange(k)
        for (_, K, ns, nu, c0, rows, _, _), (L11, L21) in zip(sym.groups, self.panels):
            cols = y[c0:c0 + K * ns]  # the group's columns: one slice
            ys = torch.linalg.solve_triangular(L11, cols.view(K, ns, k), upper=False)
            cols.copy_(ys.reshape(-1, k))
            if nu:  # scattered into the flat vector: index_add_ on rows of a 2-D tensor is ~20x slower
                at = rows if k == 1 else (rows[:, None] * k + lanes).reshape(-1)
                flat.index_add_(0, at, torch.bmm(L21, ys).reshape(-1), alpha=-1)
        y[n] = 0
        for (_, K, ns, nu, c0, rows, _, _), (L11, L21) in zip(reversed(sym.groups), reversed(self.panels)):
            cols = y[c0:c0 + K * ns]
            ys = cols.view(K, ns, k)
            if nu:
                ys = torch.baddbmm(ys, L21.mT, y.index_select(0, rows).view(K, nu, k), alpha=-1)
            cols.copy_(torch.linalg.solve_triangular(L11.mT, ys, upper=True).reshape(-1, k))
        x = y.index_select(0, sym._iperm_t).numpy()
        return x[:, 0] if np.ndim(b) == 1 else x
