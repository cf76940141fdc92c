"""Kernels of the deep engine: products with sparse non-negative inputs, over firing units.

Pairs are neuron-major CSR (``col_ptr`` over a layer's units, batch rows, values) or
point-major CSR (``ptr`` over batch rows, unit ids, values). ``Wt`` is a layer's weight
matrix laid out input-major, (m_in, m_out): each input unit's outgoing weights are one
contiguous row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

TILE = 1024  # output columns per task in spmm: the batch's tile of outputs stays in cache


@njit(parallel=True, nogil=True, cache=True)
def above(Z, b):
    """Point-major CSR (ptr, idx, val) of the entries of Z (B, m) greater than b."""
    B, m = Z.shape
    counts = np.zeros(B + 1, dtype=np.int64)
    for i in prange(B):
        c = 0
        for j in range(m):
            if Z[i, j] > b:
                c += 1
        counts[i + 1] = c
    ptr = np.cumsum(counts)
    idx = np.empty(ptr[B], dtype=np.int64)
    val = np.empty(ptr[B], dtype=Z.dtype)
    for i in prange(B):
        q = ptr[i]
        for j in range(m):
            if Z[i, j] > b:
                idx[q] = j
                val[q] = Z[i, j]
                q += 1
    return ptr, idx, val


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def spmm(col_ptr, rows, vals, b, Wt, out):
    """out[i, :] = sum over units k firing on row i of (vals - b) * Wt[k, :]: the next layer's
    pre-activations from a sparse input. Tasks own column tiles and sum into a contiguous
    (batch, tile) buffer that stays in cache; each weight row is read once per step. (No
    reduction is reordered: each output is a sum in unit order, as without fast-math.)"""
    m_in, m_out = Wt.shape
    B = out.shape[0]
    tiles = (m_out + TILE - 1) // TILE
    for t in prange(tiles):
        lo = t * TILE
        hi = min(m_out, lo + TILE)
        acc = np.zeros((B, hi - lo), dtype=out.dtype)
        for k in range(m_in):
            w = Wt[k, lo:hi]
            for q in range(col_ptr[k], col_ptr[k + 1]):
                h = vals[q] - b
                a = acc[rows[q]]
                for j in range(hi - lo):
                    a[j] += h * w[j]
        out[:, lo:hi] = acc


@njit(parallel=True, nogil=True, cache=True)
def backprop_update(col_ptr, rows, vals, b, Wt, dptr, didx, dval, lr, out):
    """One pass over the weight row of each unit k of the lower layer, for its firing pairs
    q = (k, i) (neuron-major: ``col_ptr``, batch ``rows``, pre-activations ``vals``):

    1. out[q] = sum over units j firing on row i of Wt[k, j] * delta[i, j], the error
       back-propagated to the pair, from the row as it was (delta is point-major CSR);
    2. Wt[k, j] -= lr * sum over rows i of (vals - b) * delta[i, j], the layer's gradient,
       an outer product of two sparse vectors per row, rows added in batch order (the result
       does not depend on the thread count).

    Work: pairs times firing units above, twice. Both parts touch the same entries of row k,
    so the second finds them in cache: one pass over the weights, not two."""
    m_in = Wt.shape[0]
    for k in prange(m_in):
        w = Wt[k]
        for q in range(col_ptr[k], col_ptr[k + 1]):
            i = rows[q]
            s = 0.0
            for p in range(dptr[i], dptr[i + 1]):
                s += w[didx[p]] * dval[p]
            out[q] = s
        for q in range(col_ptr[k], col_ptr[k + 1]):
            i = rows[q]
            c = lr * (vals[q] - b)
            for p in range(dptr[i], dptr[i + 1]):
                w[didx[p]] -= c * dval[p]


@njit(parallel=True, nogil=True, cache=True)
def rows_gradient_step(col_ptr, rows, coef, X, W, lr):
    """W[k] -= lr * sum over pairs (k, i) of coef * X[i], for the first layer (X: the batch's
    rows, contiguous)."""
    m, d = W.shape
    for k in prange(m):
        lo, hi = col_ptr[k], col_ptr[k + 1]
        if lo == hi:
            continue
        g = np.zeros(d, dtype=np.float64)
        for q in range(lo, hi):
            c = coef[q]
            x = X[rows[q]]
            for j in range(d):
                g[j] += c * x[j]
        for j in range(d):
            W[k, j] -= lr * g[j]
