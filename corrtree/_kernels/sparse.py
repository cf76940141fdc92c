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
def pair_coefficients(indptr, idx, A, E, scale, out):
    """out[k] = scale * sum_c A[r, c] * E[i, c] for each point-major pair k = (i, r)."""
    n = indptr.shape[0] - 1
    C = A.shape[1]
    for i in prange(n):
        for k in range(indptr[i], indptr[i + 1]):
            r = idx[k]
            s = 0.0
            for c in range(C):
                s += A[r, c] * E[i, c]
            out[k] = scale * s


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
