"""Numba kernels of a ball tree over the weight rows, queried with half-spaces.

This is the data structure of SYZ21's approach to firing detection: half-space range
reporting over the m weights. For a data point x and threshold b, report every r with
<w_r, x> > b. A node holds the weights perm[lo:hi] inside a ball (center c, radius R), so
max over the node of <w, x> <= <c, x> + R ||x||; a node whose bound stays at or below b is
pruned. In low dimension most nodes are pruned; as d grows the bound loosens and the query
visits nearly every node (the curse of dimensionality).

Layout: nodes 0..N-1, root 0; ``left``/``right`` are -1 at leaves; ``lo``/``hi`` index
``perm``; ``leaf_of[r]`` is the leaf holding neuron r and ``parent`` links nodes upward.
The arrays travel together as one ``BallTree`` named tuple.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange


class BallTree(NamedTuple):
    perm: np.ndarray  # neuron ids in leaf order
    lo: np.ndarray  # node's neurons are perm[lo:hi]
    hi: np.ndarray
    left: np.ndarray  # children, -1 at leaves
    right: np.ndarray
    parent: np.ndarray  # -1 at the root
    center: np.ndarray  # (nodes, d)
    radius: np.ndarray
    leaf_of: np.ndarray  # leaf holding neuron r


@njit(nogil=True, cache=True)
def _ball(W, perm, lo, hi, center, radius, node):
    d = W.shape[1]
    c = center[node]
    for j in range(d):
        c[j] = 0.0
    for k in range(lo, hi):
        w = W[perm[k]]
        for j in range(d):
            c[j] += w[j]
    for j in range(d):
        c[j] /= hi - lo
    r2 = 0.0
    for k in range(lo, hi):
        w = W[perm[k]]
        s = 0.0
        for j in range(d):
            t = w[j] - c[j]
            s += t * t
        r2 = max(r2, s)
    radius[node] = np.sqrt(r2)


@njit(nogil=True, cache=True)
def build(W, leaf_size):
    """Ball tree over the rows of W: split each node at the median of the projections on
    the direction between two far-apart members (a farthest-point heuristic)."""
    m, d = W.shape
    cap = 2 * (m // max(1, leaf_size) + 1) * 2 + 1
    lo = np.zeros(cap, dtype=np.int64)
    hi = np.zeros(cap, dtype=np.int64)
    left = np.full(cap, -1, dtype=np.int64)
    right = np.full(cap, -1, dtype=np.int64)
    parent = np.full(cap, -1, dtype=np.int64)
    center = np.zeros((cap, d), dtype=np.float64)
    radius = np.zeros(cap, dtype=np.float64)
    perm = np.arange(m, dtype=np.int64)
    leaf_of = np.zeros(m, dtype=np.int64)
    stack = np.empty(cap, dtype=np.int64)
    lo[0], hi[0] = 0, m
    n_nodes = 1
    top = 0
    stack[top] = 0
    top += 1
    proj = np.empty(m, dtype=np.float64)
    while top > 0:
        top -= 1
        node = stack[top]
        a, b = lo[node], hi[node]
        _ball(W, perm, a, b, center, radius, node)
        if b - a <= leaf_size or radius[node] == 0.0:
            for k in range(a, b):
                leaf_of[perm[k]] = node
            continue
        # far point p1 from the center, far point p2 from p1; split along p2 - p1
        c = center[node]
        best, p1 = -1.0, perm[a]
        for k in range(a, b):
            s = 0.0
            w = W[perm[k]]
            for j in range(d):
                s += (w[j] - c[j]) ** 2
            if s > best:
                best, p1 = s, perm[k]
        best, p2 = -1.0, perm[a]
        for k in range(a, b):
            s = 0.0
            w = W[perm[k]]
            for j in range(d):
                s += (w[j] - W[p1, j]) ** 2
            if s > best:
                best, p2 = s, perm[k]
        for k in range(a, b):
            w = W[perm[k]]
            s = 0.0
            for j in range(d):
                s += w[j] * (W[p2, j] - W[p1, j])
            proj[k] = s
        order = np.argsort(proj[a:b])
        perm[a:b] = perm[a:b][order]
        mid = (a + b) // 2
        for child, (ca, cb) in ((n_nodes, (a, mid)), (n_nodes + 1, (mid, b))):
            lo[child], hi[child] = ca, cb
            parent[child] = node
            stack[top] = child
            top += 1
        left[node], right[node] = n_nodes, n_nodes + 1
        n_nodes += 2
    return (
        perm,
        lo[:n_nodes].copy(),
        hi[:n_nodes].copy(),
        left[:n_nodes].copy(),
        right[:n_nodes].copy(),
        parent[:n_nodes].copy(),
        center[:n_nodes].copy(),
        radius[:n_nodes].copy(),
        leaf_of,
    )


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _query_block(X, rows, xnorm, b, margin, Wp, tree, out_r, out_v, cnt):
    """Half-space queries for a block of points walked through the tree together: a node is
    entered with the points still alive at its parent, keeps those whose bound passes, and a
    leaf computes the products of its weights (contiguous in ``Wp``, the weights in leaf
    order) with its alive points, so each leaf is read once per block, not once per point.
    Returns (nodes visited summed over points, inner products)."""
    perm, lo, hi, left, right = tree.perm, tree.lo, tree.hi, tree.left, tree.right
    center, radius = tree.center, tree.radius
    B = rows.shape[0]
    d = Wp.shape[1]
    depth_cap = 128
    alive = np.empty((depth_cap, B), dtype=np.int64)
    n_alive = np.zeros(depth_cap, dtype=np.int64)
    for k in range(B):
        alive[0, k] = k
    n_alive[0] = B
    stack_node = np.empty(depth_cap, dtype=np.int64)
    stack_depth = np.empty(depth_cap, dtype=np.int64)
    stack_node[0], stack_depth[0] = 0, 1
    top = 1
    visited = 0
    products = 0
    for k in range(B):
        cnt[k] = 0
    while top > 0:
        top -= 1
        node, dep = stack_node[top], stack_depth[top]
        c = center[node]
        na = 0
        for t in range(n_alive[dep - 1]):
            k = alive[dep - 1, t]
            x = X[rows[k]]
            s = 0.0
            for j in range(d):
                s += c[j] * x[j]
            visited += 1
            products += 1
            if s + radius[node] * xnorm[rows[k]] > b - margin:
                alive[dep, na] = k
                na += 1
        n_alive[dep] = na
        if na == 0:
            continue
        if left[node] < 0:
            for q in range(lo[node], hi[node]):
                w = Wp[q]
                for t in range(na):
                    k = alive[dep, t]
                    x = X[rows[k]]
                    v = w[0] * 0
                    for j in range(d):
                        v += w[j] * x[j]
                    products += 1
                    if v > b:
                        out_r[k, cnt[k]] = perm[q]
                        out_v[k, cnt[k]] = v
                        cnt[k] += 1
        else:
            stack_node[top], stack_depth[top] = right[node], dep + 1
            stack_node[top + 1], stack_depth[top + 1] = left[node], dep + 1
            top += 2
    return visited, products


@njit(parallel=True, nogil=True, cache=True)
def query_rows(X, rows, xnorm, b, margin, Wp, tree):
    """Half-space queries for the given rows of X, in blocks of points: point-major CSR
    (ptr, ids, values) with ids sorted within each row, plus the nodes visited (summed over
    points) and inner products computed. ``Wp`` holds the weights in leaf order
    (``Wp[q] = W[perm[q]]``)."""
    R = rows.shape[0]
    m = Wp.shape[0]
    block = 16
    n_blocks = (R + block - 1) // block
    ptr = np.zeros(R + 1, dtype=np.int64)
    ids_parts = []
    val_parts = []
    visited = 0
    products = 0
    group = 8  # blocks in flight at once (bounds the (group * block, m) buffers)
    buf_r = np.empty((group, block, m), dtype=np.int64)
    buf_v = np.empty((group, block, m), dtype=Wp.dtype)
    cnts = np.zeros((group, block), dtype=np.int64)
    for g0 in range(0, n_blocks, group):
        g1 = min(n_blocks, g0 + group)
        vis = np.zeros(g1 - g0, dtype=np.int64)
        prod = np.zeros(g1 - g0, dtype=np.int64)
        for u in prange(g1 - g0):
            r0 = (g0 + u) * block
            brows = rows[r0 : min(R, r0 + block)]
            vis[u], prod[u] = _query_block(
                X, brows, xnorm, b, margin, Wp, tree, buf_r[u], buf_v[u], cnts[u]
            )
            for k in range(brows.shape[0]):
                c = cnts[u, k]
                order = np.argsort(buf_r[u, k, :c])
                buf_r[u, k, :c] = buf_r[u, k, :c][order]
                buf_v[u, k, :c] = buf_v[u, k, :c][order]
        visited += vis.sum()
        products += prod.sum()
        r0 = g0 * block
        total = 0
        for u in range(g1 - g0):
            for k in range(min(block, R - (g0 + u) * block)):
                i = (g0 + u) * block + k
                ptr[i + 1] = ptr[i] + cnts[u, k]
                total += cnts[u, k]
        ids = np.empty(total, dtype=np.int64)
        val = np.empty(total, dtype=Wp.dtype)
        p = 0
        for u in range(g1 - g0):
            for k in range(min(block, R - (g0 + u) * block)):
                c = cnts[u, k]
                ids[p : p + c] = buf_r[u, k, :c]
                val[p : p + c] = buf_v[u, k, :c]
                p += c
        ids_parts.append(ids)
        val_parts.append(val)
    out_ids = np.empty(ptr[R], dtype=np.int64)
    out_val = np.empty(ptr[R], dtype=Wp.dtype)
    p = 0
    for t in range(len(ids_parts)):
        q = ids_parts[t].shape[0]
        out_ids[p : p + q] = ids_parts[t]
        out_val[p : p + q] = val_parts[t]
        p += q
    return ptr, out_ids, out_val, visited, products


@njit(nogil=True, cache=True)
def grow_balls(W, neurons, tree):
    """After ``neurons`` moved: widen the radius of every ball on the way from each one's
    leaf to the root so that it still contains the neuron. Centers stay; balls only grow,
    so every bound stays valid (pruning only gets weaker until the next rebuild)."""
    leaf_of, parent, center, radius = tree.leaf_of, tree.parent, tree.center, tree.radius
    d = W.shape[1]
    for u in range(neurons.shape[0]):
        r = neurons[u]
        w = W[r]
        node = leaf_of[r]
        while node >= 0:
            c = center[node]
            s = 0.0
            for j in range(d):
                t = w[j] - c[j]
                s += t * t
            s = np.sqrt(s)
            if s > radius[node]:
                radius[node] = s
            node = parent[node]
