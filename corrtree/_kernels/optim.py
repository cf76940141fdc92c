"""Numba kernels of the optimizers: per-row state updates over the rows with a gradient."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, nogil=True, cache=True)
def sparse_adam_rows(ids, G, M, V, beta1, beta2, eps, step_size):
    """Lazy Adam (``torch.optim.SparseAdam``'s arithmetic) on rows ``ids`` of a parameter with
    moments M, V: for each row r = ids[u] with gradient g = G[u],
    m += (g - m)(1 - beta1), v += (g^2 - v)(1 - beta2), and G[u] becomes the row's step
    step_size * m / (sqrt(v) + eps) (to subtract from the parameter). Other rows keep their
    moments."""
    d = G.shape[1]
    one_b1 = 1.0 - beta1
    one_b2 = 1.0 - beta2
    for u in prange(ids.shape[0]):
        r = ids[u]
        for j in range(d):
            g = G[u, j]
            m = M[r, j]
            v = V[r, j]
            m = m + (g - m) * one_b1
            v = v + (g * g - v) * one_b2
            M[r, j] = m
            V[r, j] = v
            G[u, j] = step_size * (m / (np.sqrt(v) + eps))
