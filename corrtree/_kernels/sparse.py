"""Numba kernels for the sparse forward and backward passes over firing pairs.

Firing pairs are held in CSR form. *Point-major*: ``indptr`` over data points (or batch rows),
``idx`` the firing neuron ids, ``val`` the stored correlations <w_r, x_i>. *Neuron-major* is the
transpose. Every kernel is O(pairs) or O(pairs * d); none touches a non-firing pair.
"""

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True)
def transpose(indptr, idx, val, n_cols):
    """CSR transpose: returns (col_ptr, row_ids, values), rows sorted within each column."""
    nnz = idx.shape[0]
    n_rows = indptr.shape[0] - 1
    col_ptr = np.zeros(n_cols + 1, dtype=np.int64)
    for k in range(nnz):
        col_ptr[idx[k] + 1] += 1
    for c in range(n_cols):
        col_ptr[c + 1] += col_ptr[c]
    fill = col_ptr[:-1].copy()
    rows = np.empty(nnz, dtype=np.int64)
    out = np.empty(nnz, dtype=val.dtype)
    for r in range(n_rows):
        for k in range(indptr[r], indptr[r + 1]):
            c = idx[k]
            rows[fill[c]] = r
            out[fill[c]] = val[k]
            fill[c] += 1
    return col_ptr, rows, out


@njit(parallel=True, nogil=True, cache=True)
def forward(indptr, idx, val, A, b, scale, out):
    """out[i, c] = scale * sum over firing r of A[r, c] * (val - b), for point-major pairs."""
    n = indptr.shape[0] - 1
    C = A.shape[1]
    for i in prange(n):
        for c in range(C):
            out[i, c] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            r = idx[k]
            h = val[k] - b
            for c in range(C):
                out[i, c] += A[r, c] * h
        for c in range(C):
            out[i, c] *= scale


@njit(parallel=True, nogil=True, cache=True)
def neuron_gradient(col_ptr, rows, coef, neurons, X, point_of_row, G):
    """G[u] = sum over pairs of neuron neurons[u] of coef * X[point_of_row[row]].

    ``col_ptr`` is indexed by neuron id; ``rows`` index batch rows, mapped to data points by
    ``point_of_row``. Work: (pairs) * d multiply-adds.
    """
    d = X.shape[1]
    for u in prange(neurons.shape[0]):
        r = neurons[u]
        for j in range(d):
            G[u, j] = 0.0
        for k in range(col_ptr[r], col_ptr[r + 1]):
            x = X[point_of_row[rows[k]]]
            c = coef[k]
            for j in range(d):
                G[u, j] += c * x[j]


@njit(nogil=True, cache=True)
def select_rows(indptr, idx, val, rows):
    """The CSR rows ``rows`` (in that order) of a CSR matrix."""
    R = rows.shape[0]
    out_ptr = np.zeros(R + 1, dtype=np.int64)
    for k in range(R):
        r = rows[k]
        out_ptr[k + 1] = out_ptr[k] + indptr[r + 1] - indptr[r]
    out_idx = np.empty(out_ptr[R], dtype=np.int64)
    out_val = np.empty(out_ptr[R], dtype=val.dtype)
    for k in range(R):
        r = rows[k]
        lo = indptr[r]
        for j in range(out_ptr[k], out_ptr[k + 1]):
            out_idx[j] = idx[lo + j - out_ptr[k]]
            out_val[j] = val[lo + j - out_ptr[k]]
    return out_ptr, out_idx, out_val


@njit(parallel=True, nogil=True, cache=True)
def candidates_from_block(Z, b_low, row_offset, counts_only, ptr, idx, val):
    """Candidate pairs of a block of correlations Z (rows = points): entries > b_low.

    With ``counts_only`` fills ptr[row_offset + k + 1] with the count of row k; otherwise
    writes ids and values at ptr[row_offset + k].
    """
    R, M = Z.shape
    for k in prange(R):
        row = Z[k]
        if counts_only:
            c = 0
            for r in range(M):
                if row[r] > b_low:
                    c += 1
            ptr[row_offset + k + 1] = c
        else:
            p = ptr[row_offset + k]
            for r in range(M):
                if row[r] > b_low:
                    idx[p] = r
                    val[p] = row[r]
                    p += 1


@njit(parallel=True, nogil=True, cache=True)
def batch_candidates(cptr, cidx, zref, rows, xnorm, delta, hot, b, margin):
    """Candidate pairs of the batch whose drift bound zref + delta_r ||x_i|| reaches b
    (hot neurons excluded: they are checked on every point). Point-major CSR over batch
    rows with neuron ids; no inner product is computed."""
    R = rows.shape[0]
    counts = np.zeros(R + 1, dtype=np.int64)
    for k in prange(R):
        i = rows[k]
        c = 0
        for q in range(cptr[i], cptr[i + 1]):
            r = cidx[q]
            if not hot[r] and zref[q] + delta[r] * xnorm[i] > b - margin:
                c += 1
        counts[k + 1] = c
    for k in range(R):
        counts[k + 1] += counts[k]
    out = np.empty(counts[R], dtype=np.int64)
    for k in prange(R):
        i = rows[k]
        p = counts[k]
        for q in range(cptr[i], cptr[i + 1]):
            r = cidx[q]
            if not hot[r] and zref[q] + delta[r] * xnorm[i] > b - margin:
                out[p] = r
                p += 1
    return counts, out


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def dot(w, x):
    """<w, x>, accumulated in w's dtype. Reassociation lets LLVM vectorise the sum, as BLAS
    does; no other fast-math assumption (NaN, inf, signed zeros) is made, and every
    comparison against a threshold happens outside this function."""
    s = w[0] * 0
    for j in range(w.shape[0]):
        s += w[j] * x[j]
    return s


@njit(parallel=True, nogil=True, cache=True)
def neuron_exact(col_ptr, brows, rows, X, W, hot_pos, Zhot, b):
    """Exact check, neuron by neuron, of the candidate batch rows of each neuron. Hot neurons
    (``hot_pos[r] >= 0``) take all batch rows, their values from column ``hot_pos[r]`` of
    ``Zhot`` (computed by BLAS). Each weight row is read once; the batch rows stay in cache.
    Returns neuron-major firing pairs (ptr over neurons, batch rows, exact values) and the
    number of inner products computed here."""
    m = W.shape[0]
    R = rows.shape[0]
    cap = np.zeros(m + 1, dtype=np.int64)
    for r in range(m):
        cap[r + 1] = cap[r] + (R if hot_pos[r] >= 0 else col_ptr[r + 1] - col_ptr[r])
    buf_row = np.empty(cap[m], dtype=np.int64)
    buf_val = np.empty(cap[m], dtype=W.dtype)
    counts = np.zeros(m + 1, dtype=np.int64)
    computed = np.zeros(m, dtype=np.int64)
    for r in prange(m):
        p = cap[r]
        h = hot_pos[r]
        if h >= 0:
            for k in range(R):
                s = Zhot[k, h]
                if s > b:
                    buf_row[p] = k
                    buf_val[p] = s
                    p += 1
        else:
            w = W[r]
            for q in range(col_ptr[r], col_ptr[r + 1]):
                k = brows[q]
                s = dot(w, X[rows[k]])
                if s > b:
                    buf_row[p] = k
                    buf_val[p] = s
                    p += 1
            computed[r] = col_ptr[r + 1] - col_ptr[r]
        counts[r + 1] = p - cap[r]
    for r in range(m):
        counts[r + 1] += counts[r]
    out_row = np.empty(counts[m], dtype=np.int64)
    out_val = np.empty(counts[m], dtype=W.dtype)
    for r in prange(m):
        lo = cap[r]
        for q in range(counts[r + 1] - counts[r]):
            out_row[counts[r] + q] = buf_row[lo + q]
            out_val[counts[r] + q] = buf_val[lo + q]
    return counts, out_row, out_val, computed.sum()


@njit(parallel=True, nogil=True, cache=True)
def neuron_coefficients(nptr, brows, A, E, scale, out):
    """out[k] = scale * sum_c A[r, c] * E[row, c] for neuron-major pairs k = (r, row): the
    factor of x_row in neuron r's gradient."""
    m = nptr.shape[0] - 1
    C = A.shape[1]
    for r in prange(m):
        for k in range(nptr[r], nptr[r + 1]):
            s = 0.0
            for c in range(C):
                s += A[r, c] * E[brows[k], c]
            out[k] = scale * s


@njit(parallel=True, nogil=True, cache=True)
def neuron_step(nptr, brows, coef, neurons, rows, X, W, lr, W_ref, delta):
    """For each neuron with firing pairs: g = sum coef * x, w -= lr * g, and its drift
    delta = ||w - w_ref||. Reads and writes each moved weight row once."""
    d = X.shape[1]
    for u in prange(neurons.shape[0]):
        r = neurons[u]
        g = np.zeros(d, dtype=W.dtype)
        for k in range(nptr[r], nptr[r + 1]):
            x = X[rows[brows[k]]]
            c = coef[k]
            for j in range(d):
                g[j] += c * x[j]
        w = W[r]
        wr = W_ref[r]
        s = 0.0
        for j in range(d):
            w[j] -= lr * g[j]
            t = np.float64(w[j]) - np.float64(wr[j])
            s += t * t
        delta[r] = np.sqrt(s)
