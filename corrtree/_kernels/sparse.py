"""Numba kernels for the sparse forward and backward passes over firing pairs.

Firing pairs are held in CSR form. *Point-major*: ``indptr`` over data points (or batch rows),
``idx`` the firing neuron ids, ``val`` the stored correlations <w_r, x_i>. *Neuron-major* is the
transpose. Every kernel is O(pairs) or O(pairs * d); none touches a non-firing pair.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange


class Pairs(NamedTuple):
    """CSR pairs: ``ptr`` over one side (neurons or batch rows), ``ids`` on the other side,
    one value per pair."""

    ptr: np.ndarray
    ids: np.ndarray
    val: np.ndarray


class Index(NamedTuple):
    """The certified engine's point-major candidates: point i's neuron ids and reference
    values are ``ids[lo[i]:hi[i]]`` and ``val[lo[i]:hi[i]]`` (points indexed in any order;
    a point not indexed yet has lo = hi)."""

    lo: np.ndarray
    hi: np.ndarray
    ids: np.ndarray
    val: np.ndarray


class Certificate(NamedTuple):
    """What the drift bound zref + delta_r ||x_i|| > b - margin needs: per-point norms,
    per-neuron drift, the hot flags (hot neurons are checked on every point instead)."""

    xnorm: np.ndarray
    delta: np.ndarray
    hot: np.ndarray
    b: float
    margin: float


class Drift(NamedTuple):
    """The certified engine's per-neuron state written by a step: reference weights, drift,
    position of each hot neuron in ``Wh`` (-1 if not hot), the hot neurons' weight copy."""

    W_ref: np.ndarray
    delta: np.ndarray
    hot_pos: np.ndarray
    Wh: np.ndarray


@njit(nogil=True, cache=True)
def transpose(indptr, idx, val, n_cols):
    """CSR transpose: returns (col_ptr, row_ids, values), rows sorted within each column."""
    return transpose_rows(indptr[:-1], indptr[1:], idx, val, n_cols)


@njit(nogil=True, cache=True)
def transpose_rows(lo, hi, idx, val, n_cols):
    """``transpose`` of a matrix whose row r is ``idx[lo[r]:hi[r]]`` (rows stored in any
    order, with gaps)."""
    n_rows = lo.shape[0]
    col_ptr = np.zeros(n_cols + 1, dtype=np.int64)
    for r in range(n_rows):
        for k in range(lo[r], hi[r]):
            col_ptr[idx[k] + 1] += 1
    for c in range(n_cols):
        col_ptr[c + 1] += col_ptr[c]
    nnz = col_ptr[n_cols]
    fill = col_ptr[:-1].copy()
    rows = np.empty(nnz, dtype=np.int64)
    out = np.empty(nnz, dtype=val.dtype)
    for r in range(n_rows):
        for k in range(lo[r], hi[r]):
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


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def neuron_gradient(col_ptr, rows, coef, neurons, X, point_of_row, G):
    """G[u] = sum over pairs of neuron neurons[u] of coef * X[point_of_row[row]].

    ``col_ptr`` is indexed by neuron id; ``rows`` index batch rows, mapped to data points by
    ``point_of_row``. Work: (pairs) * d multiply-adds, four points per pass over G[u] (as
    ``neuron_step``; the sum is reassociated, so it vectorises).
    """
    d = X.shape[1]
    for u in prange(neurons.shape[0]):
        r = neurons[u]
        g = G[u]
        for j in range(d):
            g[j] = 0.0
        lo, hi = col_ptr[r], col_ptr[r + 1]
        k = lo
        while k + 4 <= hi:
            x0, x1 = X[point_of_row[rows[k]]], X[point_of_row[rows[k + 1]]]
            x2, x3 = X[point_of_row[rows[k + 2]]], X[point_of_row[rows[k + 3]]]
            c0, c1, c2, c3 = coef[k], coef[k + 1], coef[k + 2], coef[k + 3]
            for j in range(d):
                g[j] += (c0 * x0[j] + c1 * x1[j]) + (c2 * x2[j] + c3 * x3[j])
            k += 4
        for t in range(k, hi):
            x = X[point_of_row[rows[t]]]
            c = coef[t]
            for j in range(d):
                g[j] += c * x[j]


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
def extract_candidates(Z, b_low):
    """The entries > b_low of a block of correlations Z (rows = points, columns = neurons):
    point-major CSR (ptr over the block's rows, int32 neuron ids in increasing order, values),
    from one pass of counting and one of filling over Z."""
    R, M = Z.shape
    ptr = np.zeros(R + 1, dtype=np.int64)
    for k in prange(R):
        row = Z[k]
        c = 0
        for r in range(M):
            if row[r] > b_low:
                c += 1
        ptr[k + 1] = c
    for k in range(R):
        ptr[k + 1] += ptr[k]
    ids = np.empty(ptr[R], dtype=np.int32)
    vals = np.empty(ptr[R], dtype=Z.dtype)
    for k in prange(R):
        row = Z[k]
        p = ptr[k]
        for r in range(M):
            if row[r] > b_low:
                ids[p] = r
                vals[p] = row[r]
                p += 1
    return ptr, ids, vals


@njit(parallel=True, nogil=True, cache=True)
def join_chunks(ptrs, starts, first, ids, vals):
    """Point-major CSR of a block of points from its chunks of neurons: chunk j's pairs are
    ``ids[starts[j] + ptrs[j, i] : starts[j] + ptrs[j, i + 1]]`` for point i, numbered from
    its first neuron ``first[j]``. Each point's neurons stay in increasing order."""
    C, R = ptrs.shape[0], ptrs.shape[1] - 1
    ptr = np.zeros(R + 1, dtype=np.int64)
    for i in range(R):
        c = 0
        for j in range(C):
            c += ptrs[j, i + 1] - ptrs[j, i]
        ptr[i + 1] = ptr[i] + c
    out_ids = np.empty(ptr[R], dtype=np.int32)
    out_vals = np.empty(ptr[R], dtype=vals.dtype)
    for i in prange(R):
        q = ptr[i]
        for j in range(C):
            for t in range(starts[j] + ptrs[j, i], starts[j] + ptrs[j, i + 1]):
                out_ids[q] = ids[t] + first[j]
                out_vals[q] = vals[t]
                q += 1
    return ptr, out_ids, out_vals


@njit(parallel=True, nogil=True, cache=True)
def bf16_upper_bounds(bits, c_abs, c_rel):
    """bfloat16 correlations z given as their int16 bit patterns (``corrtree._bf16``) ->
    the upper bounds z + c_abs + c_rel |z| of the inner products they approximate, rounded
    up to float32."""
    raw = np.empty(bits.shape[0], dtype=np.uint32)
    for q in prange(bits.shape[0]):
        raw[q] = np.uint32(np.uint16(bits[q])) << np.uint32(16)
    vals = raw.view(np.float32)
    for q in prange(vals.shape[0]):
        v = np.float64(vals[q])
        v += c_abs + c_rel * abs(v)
        vals[q] = np.float32(v + 2.0**-22 * abs(v))  # float32 rounding stays above v
    return vals


@njit(parallel=True, nogil=True, cache=True)
def merge_index(index, drop, group, take, indexed):
    """The ``Index`` with the pairs of neurons r where ``drop[r]`` removed and the pairs of
    point-major ``group`` (same points, global neuron ids) where ``take[r]`` added after them,
    for the points already ``indexed``: the index after a group of neurons took new
    references, as CSR (ptr, ids, values). Two passes (count, fill), parallel over points."""
    lo, hi, ids, val = index
    gptr, gids, gval = group
    n = lo.shape[0]
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    for i in prange(n):
        c = 0
        for q in range(lo[i], hi[i]):
            if not drop[ids[q]]:
                c += 1
        if indexed[i]:
            for q in range(gptr[i], gptr[i + 1]):
                if take[gids[q]]:
                    c += 1
        out_ptr[i + 1] = c
    for i in range(n):
        out_ptr[i + 1] += out_ptr[i]
    out_ids = np.empty(out_ptr[n], dtype=ids.dtype)
    out_val = np.empty(out_ptr[n], dtype=val.dtype)
    for i in prange(n):
        p = out_ptr[i]
        for q in range(lo[i], hi[i]):
            if not drop[ids[q]]:
                out_ids[p] = ids[q]
                out_val[p] = val[q]
                p += 1
        if not indexed[i]:
            continue
        for q in range(gptr[i], gptr[i + 1]):
            if take[gids[q]]:
                out_ids[p] = gids[q]
                out_val[p] = gval[q]
                p += 1
    return out_ptr, out_ids, out_val


@njit(parallel=True, nogil=True, cache=True)
def batch_candidates(index, rows, cert):
    """Candidate pairs of the batch whose drift bound zref + delta_r ||x_i|| reaches b
    (hot neurons excluded: they are checked on every point). ``index``: the point-major
    candidates (an ``Index``: neuron ids and reference values per point). Returns point-major CSR
    over batch rows with neuron ids; no inner product is computed."""
    lo, hi, cidx, zref = index
    xnorm, delta, hot, b, margin = cert
    R = rows.shape[0]
    counts = np.zeros(R + 1, dtype=np.int64)
    for k in prange(R):
        i = rows[k]
        c = 0
        for q in range(lo[i], hi[i]):
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
        for q in range(lo[i], hi[i]):
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
    s = w.dtype.type(0)
    for j in range(w.shape[0]):
        s += w[j] * x[j]
    return s


@njit(parallel=True, nogil=True, cache=True)
def neuron_candidates(by_neuron, cert):
    """Full-batch counterpart of ``batch_candidates`` over the neuron-major index: for each
    neuron that is not hot, its candidate points whose drift bound reaches b. Returns a
    pointer over neurons and the point ids (which are the batch rows of a full batch)."""
    nptr, npts, nzref = by_neuron
    xnorm, delta, hot, b, margin = cert
    m = nptr.shape[0] - 1
    counts = np.zeros(m + 1, dtype=np.int64)
    for r in prange(m):
        if not hot[r]:
            c = 0
            for q in range(nptr[r], nptr[r + 1]):
                if nzref[q] + delta[r] * xnorm[npts[q]] > b - margin:
                    c += 1
            counts[r + 1] = c
    for r in range(m):
        counts[r + 1] += counts[r]
    out = np.empty(counts[m], dtype=np.int64)
    for r in prange(m):
        if not hot[r]:
            p = counts[r]
            for q in range(nptr[r], nptr[r + 1]):
                if nzref[q] + delta[r] * xnorm[npts[q]] > b - margin:
                    out[p] = npts[q]
                    p += 1
    return counts, out


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def rows_dots(w, X, rows, brows, lo, hi, vals):
    """vals[q] = <w, X[rows[brows[q]]]> for q in [lo, hi): eight rows per pass over w, then
    four, then one (more rows in flight hide more of the latency of gathering them)."""
    q = lo
    while q + 8 <= hi:
        x0, x1 = X[rows[brows[q]]], X[rows[brows[q + 1]]]
        x2, x3 = X[rows[brows[q + 2]]], X[rows[brows[q + 3]]]
        x4, x5 = X[rows[brows[q + 4]]], X[rows[brows[q + 5]]]
        x6, x7 = X[rows[brows[q + 6]]], X[rows[brows[q + 7]]]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = w.dtype.type(0)
        for j in range(w.shape[0]):
            s0 += w[j] * x0[j]
            s1 += w[j] * x1[j]
            s2 += w[j] * x2[j]
            s3 += w[j] * x3[j]
            s4 += w[j] * x4[j]
            s5 += w[j] * x5[j]
            s6 += w[j] * x6[j]
            s7 += w[j] * x7[j]
        vals[q], vals[q + 1], vals[q + 2], vals[q + 3] = s0, s1, s2, s3
        vals[q + 4], vals[q + 5], vals[q + 6], vals[q + 7] = s4, s5, s6, s7
        q += 8
    while q + 4 <= hi:
        x0, x1 = X[rows[brows[q]]], X[rows[brows[q + 1]]]
        x2, x3 = X[rows[brows[q + 2]]], X[rows[brows[q + 3]]]
        s0 = s1 = s2 = s3 = w.dtype.type(0)
        for j in range(w.shape[0]):
            s0 += w[j] * x0[j]
            s1 += w[j] * x1[j]
            s2 += w[j] * x2[j]
            s3 += w[j] * x3[j]
        vals[q], vals[q + 1], vals[q + 2], vals[q + 3] = s0, s1, s2, s3
        q += 4
    for t in range(q, hi):
        vals[t] = dot(w, X[rows[brows[t]]])


@njit(parallel=True, nogil=True, cache=True)
def neuron_exact(col_ptr, brows, rows, X, W, hot_pos, Zhot, b, with_hot):
    """Exact check, neuron by neuron, of the candidate batch rows of each neuron. Hot neurons
    (``hot_pos[r] >= 0``) take all batch rows, their values from row ``hot_pos[r]`` of
    ``Zhot`` (computed by BLAS), or are left out when not ``with_hot``. The inner products
    are computed first, branch-free, each weight row read once; the firing ones are gathered
    after. Returns neuron-major firing pairs (ptr over neurons, batch rows, exact values) and
    the number of inner products computed here."""
    m = W.shape[0]
    R = rows.shape[0]
    vals = np.empty(brows.shape[0], dtype=W.dtype)
    for r in prange(m):
        if hot_pos[r] < 0:
            rows_dots(W[r], X, rows, brows, col_ptr[r], col_ptr[r + 1], vals)
    counts = np.zeros(m + 1, dtype=np.int64)
    for r in prange(m):
        h = hot_pos[r] if with_hot else -1  # hot neurons have no candidates: left out
        c = 0
        if h >= 0:
            for k in range(R):
                if Zhot[h, k] > b:
                    c += 1
        else:
            for q in range(col_ptr[r], col_ptr[r + 1]):
                if vals[q] > b:
                    c += 1
        counts[r + 1] = c
    for r in range(m):
        counts[r + 1] += counts[r]
    out_row = np.empty(counts[m], dtype=np.int64)
    out_val = np.empty(counts[m], dtype=W.dtype)
    computed = 0
    for r in prange(m):
        p = counts[r]
        h = hot_pos[r] if with_hot else -1
        if h >= 0:
            for k in range(R):
                if Zhot[h, k] > b:
                    out_row[p] = k
                    out_val[p] = Zhot[h, k]
                    p += 1
        else:
            computed += col_ptr[r + 1] - col_ptr[r]
            for q in range(col_ptr[r], col_ptr[r + 1]):
                if vals[q] > b:
                    out_row[p] = brows[q]
                    out_val[p] = vals[q]
                    p += 1
    return counts, out_row, out_val, computed


@njit(parallel=True, nogil=True, cache=True)
def forward_neurons(nptr, brows, vals, A, b, scale, out, T):
    """``forward`` from neuron-major pairs: out[row, c] = scale * sum of A[r, c] * (val - b).
    Each of ``T`` tasks (one per thread) sums its share of the neurons into its own buffer
    (float64); the buffers are added at the end, so no transpose of the pairs is needed."""
    m = nptr.shape[0] - 1
    R, C = out.shape
    buf = np.zeros((T, R, C), dtype=np.float64)
    for t in prange(T):
        for r in range(m * t // T, m * (t + 1) // T):
            for q in range(nptr[r], nptr[r + 1]):
                h = vals[q] - b
                k = brows[q]
                for c in range(C):
                    buf[t, k, c] += A[r, c] * h
    for k in prange(R):
        for c in range(C):
            s = 0.0
            for t in range(T):
                s += buf[t, k, c]
            out[k, c] = scale * s


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


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def neuron_step(pairs, neurons, rows, X, W, lr, drift):
    """For each neuron in ``neurons``: g = sum coef * x over its neuron-major ``pairs``
    (ptr over neurons, batch rows, coefficients), w -= lr * g, and its drift
    delta = ||w - w_ref||. Hot neurons (``hot_pos[r] >= 0``) skip the drift (they are checked
    on every point anyway until the next rebuild) and update their copy in row ``hot_pos[r]``
    of ``Wh`` too. Reads and writes each moved weight row once. The drift's sum of squares is
    reassociated (vectorised); it is a float64 sum of float64 squares of exact differences,
    so its rounding is far inside the engine's margin. The neurons are cut into chunks with
    one gradient buffer each, not one allocation per neuron."""
    nptr, brows, coef = pairs
    W_ref, delta, hot_pos, Wh = drift
    d = X.shape[1]
    N = neurons.shape[0]
    chunks = min(N, 256)
    for c in prange(chunks):
        g = np.empty(d, dtype=W.dtype)
        for u in range(N * c // chunks, N * (c + 1) // chunks):
            r = neurons[u]
            for j in range(d):
                g[j] = 0
            lo, hi = nptr[r], nptr[r + 1]
            k = lo
            while k + 4 <= hi:  # four points per pass over g
                x0, x1 = X[rows[brows[k]]], X[rows[brows[k + 1]]]
                x2, x3 = X[rows[brows[k + 2]]], X[rows[brows[k + 3]]]
                c0, c1, c2, c3 = coef[k], coef[k + 1], coef[k + 2], coef[k + 3]
                for j in range(d):
                    g[j] += (c0 * x0[j] + c1 * x1[j]) + (c2 * x2[j] + c3 * x3[j])
                k += 4
            for t in range(k, hi):
                x = X[rows[brows[t]]]
                cf = coef[t]
                for j in range(d):
                    g[j] += cf * x[j]
            w = W[r]
            h = hot_pos[r]
            if h >= 0:
                wh = Wh[h]
                for j in range(d):
                    w[j] -= lr * g[j]
                    wh[j] = w[j]
            else:
                wr = W_ref[r]
                s = 0.0
                for j in range(d):
                    w[j] -= lr * g[j]
                    t = np.float64(w[j]) - np.float64(wr[j])
                    s += t * t
                delta[r] = np.sqrt(s)


@njit(parallel=True, nogil=True, cache=True)
def rows_exact(ptr, ids, rows, X, W, b):
    """Exact check of point-major candidate pairs (ids in any order, no duplicates): returns
    point-major firing pairs with ids sorted within each row and their exact values."""
    R = ptr.shape[0] - 1
    vals = np.empty(ids.shape[0], dtype=W.dtype)
    counts = np.zeros(R + 1, dtype=np.int64)
    for k in prange(R):
        x = X[rows[k]]
        c = 0
        for q in range(ptr[k], ptr[k + 1]):
            vals[q] = dot(W[ids[q]], x)
            if vals[q] > b:
                c += 1
        counts[k + 1] = c
    for k in range(R):
        counts[k + 1] += counts[k]
    out_ids = np.empty(counts[R], dtype=np.int64)
    out_val = np.empty(counts[R], dtype=W.dtype)
    for k in prange(R):
        p = counts[k]
        for q in range(ptr[k], ptr[k + 1]):
            if vals[q] > b:
                out_ids[p] = ids[q]
                out_val[p] = vals[q]
                p += 1
        order = np.argsort(out_ids[counts[k] : p])
        out_ids[counts[k] : p] = out_ids[counts[k] : p][order]
        out_val[counts[k] : p] = out_val[counts[k] : p][order]
    return counts, out_ids, out_val


@njit(parallel=True, nogil=True, cache=True)
def subtract_rows(W, ids, G, lr, Wh):
    """W[ids[h]] -= lr * G[h] in place, and the result into Wh[h] (the hot neurons' copy)."""
    d = W.shape[1]
    for h in prange(ids.shape[0]):
        w = W[ids[h]]
        g = G[h]
        wh = Wh[h]
        for j in range(d):
            w[j] -= lr * g[j]
            wh[j] = w[j]


@njit(parallel=True, nogil=True, cache=True)
def count_above(Z, b):
    """Per row of Z, the number of entries > b."""
    out = np.zeros(Z.shape[0], dtype=np.int64)
    for h in prange(Z.shape[0]):
        c = 0
        for k in range(Z.shape[1]):
            if Z[h, k] > b:
                c += 1
        out[h] = c
    return out


@njit(parallel=True, nogil=True, cache=True)
def hot_forward(Zhot, b, A, hot_ids, scale, out, T):
    """out[k, c] += scale * sum over hot neurons h with Zhot[h, k] > b of
    A[hot_ids[h], c] * (Zhot[h, k] - b): the hot neurons' share of the outputs, read from
    their dense correlations. ``T`` tasks sum row ranges of Zhot into float64 buffers."""
    nh, R = Zhot.shape
    C = A.shape[1]
    buf = np.zeros((T, C, R), dtype=np.float64)
    for t in prange(T):
        for h in range(nh * t // T, nh * (t + 1) // T):
            a = A[hot_ids[h]]
            z = Zhot[h]
            for c in range(C):
                bc = buf[t, c]
                ac = np.float64(a[c])
                for k in range(R):  # branch-free: max(z - b, 0)
                    bc[k] += ac * max(np.float64(z[k]) - b, 0.0)
    for k in prange(R):
        for c in range(C):
            s = 0.0
            for t in range(T):
                s += buf[t, c, k]
            out[k, c] += scale * s


@njit(parallel=True, nogil=True, cache=True)
def hot_coefficient_matrix(Zhot, b, A, hot_ids, E, scale, out):
    """out[h, k] = scale * sum_c A[r, c] * E[k, c] where hot neuron r = hot_ids[h] fires on
    batch row k (Zhot[h, k] > b), else 0. ``out @ X_batch`` is then the hot neurons' gradient.
    Each row's sums run over the outputs c outside the loop over batch rows (with E
    transposed, so that loop vectorises), in float64 and in the order of c."""
    nh, R = Zhot.shape
    C = A.shape[1]
    Et = np.ascontiguousarray(E.T)
    tasks = min(nh, 64)
    for t in prange(tasks):
        s = np.empty(R, dtype=np.float64)
        for h in range(nh * t // tasks, nh * (t + 1) // tasks):
            a = A[hot_ids[h]]
            z = Zhot[h]
            o = out[h]
            s[:] = 0.0
            for c in range(C):
                ac = a[c]
                e = Et[c]
                for k in range(R):
                    s[k] += ac * e[k]  # the product in A's precision, as neuron_coefficients
            for k in range(R):  # branch-free select
                o[k] = scale * s[k] if z[k] > b else 0


@njit(parallel=True, nogil=True, cache=True)
def index_rows(Z, ks, rows, delta, xnorm, hot, b_low, pre):
    """Candidates of the new batch rows ``ks`` from the batch's correlations Z with the
    current weights (rows = batch rows, columns = neurons), for an index whose references
    are older. By the triangle inequality <w(t'), x> <= <w(t), x> + (delta_r(t) +
    delta_r(t')) ||x||, so a pair is stored with value z + delta_r(t) ||x_i|| (rounded up)
    when that exceeds b_low, and the engine's usual bound (value + delta_r(t') ||x_i||)
    holds for it later. Hot neurons are left out. ``pre[k]``: a number of Z's precision
    below every z that can be stored for row k (a cheap first test). Returns point-major
    CSR over ``ks`` (int32 neuron ids, values)."""
    M = Z.shape[1]
    K = ks.shape[0]
    ptr = np.zeros(K + 1, dtype=np.int64)
    for j in prange(K):
        k = ks[j]
        row = Z[k]
        xn = xnorm[rows[k]]
        c = 0
        for r in range(M):
            if row[r] > pre[k] and not hot[r] and np.float64(row[r]) + delta[r] * xn > b_low:
                c += 1
        ptr[j + 1] = c
    for j in range(K):
        ptr[j + 1] += ptr[j]
    ids = np.empty(ptr[K], dtype=np.int32)
    vals = np.empty(ptr[K], dtype=Z.dtype)
    for j in prange(K):
        k = ks[j]
        row = Z[k]
        xn = xnorm[rows[k]]
        p = ptr[j]
        for r in range(M):
            if row[r] > pre[k] and not hot[r]:
                v = np.float64(row[r]) + delta[r] * xn
                if v > b_low:
                    ids[p] = r
                    vals[p] = v
                    if vals[p] < v:
                        vals[p] = np.nextafter(vals[p], np.inf)
                    p += 1
    return ptr, ids, vals


@njit(parallel=True, nogil=True, cache=True)
def neuron_output_gradient(nptr, brows, vals, b, E, scale, neurons, out):
    """out[u, c] = scale * sum over neuron-major pairs k of neuron neurons[u] of
    (vals[k] - b) * E[brows[k], c]: the output layer's gradient dLoss/dA at the firing pairs
    (vals: their correlations, each > b)."""
    C = E.shape[1]
    for u in prange(neurons.shape[0]):
        r = neurons[u]
        for c in range(C):
            out[u, c] = 0.0
        for k in range(nptr[r], nptr[r + 1]):
            h = vals[k] - b
            for c in range(C):
                out[u, c] += h * E[brows[k], c]
        for c in range(C):
            out[u, c] *= scale


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def apply_rows(W, ids, D, drift):
    """W[ids[u]] -= D[u] for each u, each row's drift written in the same pass as in
    ``neuron_step`` (hot rows update their copy in ``Wh`` instead)."""
    W_ref, delta, hot_pos, Wh = drift
    d = W.shape[1]
    for u in prange(ids.shape[0]):
        r = ids[u]
        w = W[r]
        g = D[u]
        h = hot_pos[r]
        if h >= 0:
            wh = Wh[h]
            for j in range(d):
                w[j] -= g[j]
                wh[j] = w[j]
        else:
            wr = W_ref[r]
            s = 0.0
            for j in range(d):
                w[j] -= g[j]
                t = np.float64(w[j]) - np.float64(wr[j])
                s += t * t
            delta[r] = np.sqrt(s)
