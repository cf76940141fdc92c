"""Numba kernels of a ball tree over the weight rows, queried with half-spaces.

This is the data structure of SYZ21's approach to firing detection: half-space range
reporting over the m weights. For a data point x and threshold b, report every r with
<w_r, x> > b. A node holds the weights perm[lo:hi] inside a ball (center c, radius R), so
max over the node of <w, x> <= <c, x> + R ||x||; a node whose bound stays at or below b is
pruned. In low dimension most nodes are pruned; as d grows the bound loosens and the query
visits nearly every node (the curse of dimensionality).

Layout: nodes 0..N-1, root 0; ``left``/``right`` are -1 at leaves; ``lo``/``hi`` index
``perm``; ``leaf_of[r]`` is the leaf holding neuron r and ``parent`` links nodes upward.
"""

import numpy as np
from numba import njit, prange

from .sparse import dot


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


@njit(nogil=True, cache=True)
def _query(x, xnorm, b, margin, W, perm, lo, hi, left, right, center, radius, out_r, out_v):
    """Half-space query for one point; writes firing ids/values, returns (count, nodes
    visited, inner products)."""
    stack = np.empty(128, dtype=np.int64)
    top = 1
    stack[0] = 0
    count = 0
    visited = 0
    products = 0
    while top > 0:
        top -= 1
        node = stack[top]
        visited += 1
        products += 1
        c = center[node]
        s = 0.0
        for j in range(x.shape[0]):
            s += c[j] * x[j]
        if s + radius[node] * xnorm <= b - margin:
            continue
        if left[node] < 0:
            for k in range(lo[node], hi[node]):
                r = perm[k]
                v = dot(W[r], x)
                products += 1
                if v > b:
                    out_r[count] = r
                    out_v[count] = v
                    count += 1
        else:
            stack[top] = left[node]
            stack[top + 1] = right[node]
            top += 2
    return count, visited, products


@njit(parallel=True, nogil=True, cache=True)
def query_rows(X, rows, xnorm, b, margin, W, perm, lo, hi, left, right, center, radius):
    """Half-space queries for the given rows of X: point-major CSR (ptr, ids, values) with
    ids sorted within each row, plus the nodes visited and inner products computed."""
    R = rows.shape[0]
    m = W.shape[0]
    chunk = 16
    ptr = np.zeros(R + 1, dtype=np.int64)
    ids_parts = []
    val_parts = []
    visited = 0
    products = 0
    buf_r = np.empty((chunk, m), dtype=np.int64)
    buf_v = np.empty((chunk, m), dtype=W.dtype)
    counts = np.zeros(chunk, dtype=np.int64)
    for c0 in range(0, R, chunk):
        c1 = min(R, c0 + chunk)
        vis = np.zeros(c1 - c0, dtype=np.int64)
        prod = np.zeros(c1 - c0, dtype=np.int64)
        for k in prange(c1 - c0):
            i = rows[c0 + k]
            cnt, v, p = _query(
                X[i],
                xnorm[i],
                b,
                margin,
                W,
                perm,
                lo,
                hi,
                left,
                right,
                center,
                radius,
                buf_r[k],
                buf_v[k],
            )
            counts[k] = cnt
            vis[k] = v
            prod[k] = p
            order = np.argsort(buf_r[k, :cnt])
            buf_r[k, :cnt] = buf_r[k, :cnt][order]
            buf_v[k, :cnt] = buf_v[k, :cnt][order]
        visited += vis.sum()
        products += prod.sum()
        total = 0
        for k in range(c1 - c0):
            ptr[c0 + k + 1] = ptr[c0 + k] + counts[k]
            total += counts[k]
        ids = np.empty(total, dtype=np.int64)
        val = np.empty(total, dtype=W.dtype)
        p = 0
        for k in range(c1 - c0):
            ids[p : p + counts[k]] = buf_r[k, : counts[k]]
            val[p : p + counts[k]] = buf_v[k, : counts[k]]
            p += counts[k]
        ids_parts.append(ids)
        val_parts.append(val)
    out_ids = np.empty(ptr[R], dtype=np.int64)
    out_val = np.empty(ptr[R], dtype=W.dtype)
    p = 0
    for t in range(len(ids_parts)):
        q = ids_parts[t].shape[0]
        out_ids[p : p + q] = ids_parts[t]
        out_val[p : p + q] = val_parts[t]
        p += q
    return ptr, out_ids, out_val, visited, products


@njit(nogil=True, cache=True)
def grow_balls(W, neurons, leaf_of, parent, center, radius):
    """After ``neurons`` moved: widen the radius of every ball on the way from each one's
    leaf to the root so that it still contains the neuron. Centers stay; balls only grow,
    so every bound stays valid (pruning only gets weaker until the next rebuild)."""
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
