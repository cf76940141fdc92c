"""Numba kernels for forests of max-augmented complete binary trees.

Memory layout (every tree array in corrtree follows it)
-------------------------------------------------------
A forest is a 2-D array ``trees`` of shape ``(R, 2P - 1)``: row ``t`` is one tree over ``L``
leaves, where ``P`` is the smallest power of two ``>= L``.

* Node ``k`` has children ``2k + 1`` and ``2k + 2``; the root is node 0.
* Leaf ``j`` (``0 <= j < L``) lives at node ``P - 1 + j``; nodes ``P - 1 + L .. 2P - 2`` are
  padding leaves holding ``-inf``, so they never pass a threshold test.
* Every internal node holds the maximum of its two children.

A threshold query reports the leaves whose value is strictly greater than ``tau`` by a
depth-first search that skips every subtree whose maximum is ``<= tau``. Left children are
visited first, so the reported leaf ids come out sorted.

Kernels trust their input (shapes, finiteness, index ranges): the public classes validate.
They return what they did as counters (nodes visited, leaves written) so that callers can
expose evidence of sparsity next to wall time.
"""

import numpy as np
from numba import njit, prange

_STACK = 128  # DFS stack: depth <= 63 for int64 sizes, at most depth + 1 entries live


@njit(nogil=True, cache=True)
def _fix_internal(row, P):
    for k in range(P - 2, -1, -1):
        left = row[2 * k + 1]
        right = row[2 * k + 2]
        row[k] = left if left > right else right


@njit(parallel=True, nogil=True, cache=True)
def build(trees, leaves):
    """Fill every tree ``t`` from ``leaves[t]`` and compute its internal nodes."""
    R, L = leaves.shape
    P = (trees.shape[1] + 1) // 2
    for t in prange(R):
        row = trees[t]
        for j in range(L):
            row[P - 1 + j] = leaves[t, j]
        for j in range(L, P):
            row[P - 1 + j] = -np.inf
        _fix_internal(row, P)


@njit(parallel=True, nogil=True, cache=True)
def build_rows(trees, rows, leaves):
    """Rebuild the trees ``rows[k]`` from ``leaves[k]`` (padding leaves set to -inf)."""
    L = leaves.shape[1]
    P = (trees.shape[1] + 1) // 2
    for k in prange(rows.shape[0]):
        row = trees[rows[k]]
        for j in range(L):
            row[P - 1 + j] = leaves[k, j]
        for j in range(L, P):
            row[P - 1 + j] = -np.inf
        _fix_internal(row, P)


@njit(nogil=True, cache=True)
def _repair(row, P, node):
    """Recompute ancestors of ``node``; stop once a node keeps its value. Returns nodes written."""
    written = 0
    while node > 0:
        node = (node - 1) // 2
        left = row[2 * node + 1]
        right = row[2 * node + 2]
        new = left if left > right else right
        if new == row[node]:
            break
        row[node] = new
        written += 1
    return written


@njit(parallel=True, nogil=True, cache=True)
def set_leaves(trees, cols, values):
    """In every tree ``t`` set leaf ``cols[k]`` to ``values[t, k]`` and repair the tree.

    Repairs leaf-to-root paths (with early exit) when few leaves change, and recomputes all
    internal nodes when ``k * depth`` exceeds the tree size. Returns internal nodes written.
    """
    R = trees.shape[0]
    P = (trees.shape[1] + 1) // 2
    K = cols.shape[0]
    depth = 1
    while (1 << depth) < P:
        depth += 1
    full = K * depth >= P
    written = np.zeros(R, dtype=np.int64)
    for t in prange(R):
        row = trees[t]
        if full:
            for k in range(K):
                row[P - 1 + cols[k]] = values[t, k]
            _fix_internal(row, P)
            written[t] = P - 1
        else:
            w = 0
            for k in range(K):
                node = P - 1 + cols[k]
                row[node] = values[t, k]
                w += _repair(row, P, node)
            written[t] = w
    return written.sum()


@njit(nogil=True, cache=True)
def _dfs(row, P, tau, out_idx, out_val, start, write):
    """Report leaves of one tree with value > tau. Returns (count, nodes visited)."""
    visited = 1
    if not row[0] > tau:
        return 0, visited
    stack = np.empty(_STACK, dtype=np.int64)
    stack[0] = 0
    sp = 1
    count = 0
    while sp > 0:
        sp -= 1
        k = stack[sp]
        if k >= P - 1:
            if write:
                out_idx[start + count] = k - (P - 1)
                out_val[start + count] = row[k]
            count += 1
            continue
        left = 2 * k + 1
        right = left + 1
        visited += 2
        if row[right] > tau:
            stack[sp] = right
            sp += 1
        if row[left] > tau:
            stack[sp] = left
            sp += 1
    return count, visited


@njit(nogil=True, cache=True)
def query_one(trees, t, tau):
    """Leaves of tree ``t`` with value > tau, sorted: (ids, values, nodes visited)."""
    row = trees[t]
    P = (trees.shape[1] + 1) // 2
    dummy_i = np.empty(0, dtype=np.int64)
    dummy_v = np.empty(0, dtype=trees.dtype)
    count, visited = _dfs(row, P, tau, dummy_i, dummy_v, 0, False)
    idx = np.empty(count, dtype=np.int64)
    val = np.empty(count, dtype=trees.dtype)
    _dfs(row, P, tau, idx, val, 0, True)
    return idx, val, visited


@njit(parallel=True, nogil=True, cache=True)
def query_rows(trees, rows, tau):
    """Query the trees ``rows`` at threshold tau: CSR (indptr, ids, values), nodes visited."""
    R = rows.shape[0]
    P = (trees.shape[1] + 1) // 2
    counts = np.zeros(R, dtype=np.int64)
    visits = np.zeros(R, dtype=np.int64)
    dummy_i = np.empty(0, dtype=np.int64)
    dummy_v = np.empty(0, dtype=trees.dtype)
    for k in prange(R):
        c, v = _dfs(trees[rows[k]], P, tau, dummy_i, dummy_v, 0, False)
        counts[k] = c
        visits[k] = v
    indptr = np.zeros(R + 1, dtype=np.int64)
    for k in range(R):
        indptr[k + 1] = indptr[k] + counts[k]
    idx = np.empty(indptr[R], dtype=np.int64)
    val = np.empty(indptr[R], dtype=trees.dtype)
    for k in prange(R):
        _dfs(trees[rows[k]], P, tau, idx, val, indptr[k], True)
    return indptr, idx, val, visits.sum()


@njit(parallel=True, nogil=True, cache=True)
def check_invariants(trees, L):
    """Number of internal nodes that differ from the max of their children, plus padding
    leaves that are not -inf (0 for a valid forest)."""
    R = trees.shape[0]
    P = (trees.shape[1] + 1) // 2
    bad = np.zeros(R, dtype=np.int64)
    for t in prange(R):
        row = trees[t]
        b = 0
        for k in range(P - 1):
            left = row[2 * k + 1]
            right = row[2 * k + 2]
            if row[k] != (left if left > right else right):
                b += 1
        for j in range(L, P):
            if row[P - 1 + j] != -np.inf:
                b += 1
        bad[t] = b
    return bad.sum()
