"""Numba kernels of the LSH tables (SLIDE-style approximate detection).

A table is the neuron ids sorted by their hash code (``ids[l]``, ``codes[l]`` for table l).
A point's candidates are the union, over the tables, of the neurons sharing its code there;
a per-thread stamp array removes duplicates without clearing.
"""

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True)
def _bucket(codes, q):
    """[lo, hi) of the entries equal to q in the sorted array codes."""
    lo, hi = 0, codes.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if codes[mid] < q:
            lo = mid + 1
        else:
            hi = mid
    end = lo
    while end < codes.shape[0] and codes[end] == q:
        end += 1
    return lo, end


@njit(parallel=True, nogil=True, cache=True)
def candidates(qcodes, codes, ids, n_tasks):
    """Point-major CSR of the distinct neurons that share a bucket with each point in at
    least one table. ``qcodes`` (R, L) are the points' codes; ``codes``/``ids`` (L, m) the
    sorted tables."""
    R, L = qcodes.shape
    m = ids.shape[1]
    counts = np.zeros(R + 1, dtype=np.int64)
    for t in prange(n_tasks):
        stamp = np.zeros(m, dtype=np.int64)
        for k in range(R * t // n_tasks, R * (t + 1) // n_tasks):
            c = 0
            for tb in range(L):
                lo, hi = _bucket(codes[tb], qcodes[k, tb])
                for p in range(lo, hi):
                    r = ids[tb, p]
                    if stamp[r] != k + 1:
                        stamp[r] = k + 1
                        c += 1
            counts[k + 1] = c
    for k in range(R):
        counts[k + 1] += counts[k]
    out = np.empty(counts[R], dtype=np.int64)
    for t in prange(n_tasks):
        stamp = np.zeros(m, dtype=np.int64)
        for k in range(R * t // n_tasks, R * (t + 1) // n_tasks):
            p_out = counts[k]
            for tb in range(L):
                lo, hi = _bucket(codes[tb], qcodes[k, tb])
                for p in range(lo, hi):
                    r = ids[tb, p]
                    if stamp[r] != k + 1:
                        stamp[r] = k + 1
                        out[p_out] = r
                        p_out += 1
    return counts, out
