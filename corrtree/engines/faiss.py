"""FAISS as the firing-set detector: ``IndexFlatIP.range_search`` over the weights.

FAISS (``faiss-cpu``, an optional dependency) computes every inner product of the batch with
the m weights in float32 BLAS and returns those above a radius, which is what a user would
reach for first. It is exact up to float32 rounding, so the search uses the radius
b - margin, with margin a rigorous bound on that rounding (d + 2 units of float32 roundoff
times max ||w|| ||x||), and the reported pairs are re-checked in the network's dtype: the
firing set is then exactly dense's. Moved weights are written into the index's own storage
(no rebuild). Per step Theta(B m d) like dense, but only the firing pairs leave FAISS.
"""

from __future__ import annotations

import numpy as np

from .._kernels import sparse as S
from .._validation import dot_margin, max_row_norm
from .base import SparseEngine


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "the 'faiss' engine needs FAISS: pip install 'corrtree[faiss]' (faiss-cpu)"
        ) from None
    return faiss


class FaissEngine(SparseEngine):
    """Exact sparse training with FAISS range search as the detector."""

    name = "faiss"

    def __init__(self, net, X, options=None, *, max_memory=None):
        super().__init__(net, X, options, max_memory=max_memory)
        faiss = import_faiss()
        self.X32 = np.ascontiguousarray(X, dtype=np.float32)
        self.index = faiss.IndexFlatIP(net.d)
        self.index.add(np.ascontiguousarray(net.W, dtype=np.float32))
        self.stored = faiss.rev_swig_ptr(self.index.get_xb(), self.m * net.d).reshape(self.m, net.d)
        self.xmax = float(np.linalg.norm(self.X32, axis=1).max()) if self.n else 0.0
        self.counters.update(reported_by_faiss=0)

    @classmethod
    def estimate_bytes(cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None):
        return m * d * 4 + n * d * 4  # the index's float32 copy of W, and of X

    def find(self, rows):
        W = self.net.W
        wmax = max_row_norm(W)
        margin = 2 * dot_margin(self.net.d, np.float32, wmax, self.xmax)
        if not float(self.b) - margin > -float(np.finfo(np.float32).max):
            raise FloatingPointError(f"weights of norm {wmax:.3g} overflow FAISS's float32")
        lims, _, ids = self.index.range_search(self.X32[rows], float(self.b) - margin)
        self.counters["reported_by_faiss"] += int(ids.size)
        self.counters["inner_products"] += rows.size * self.m + int(ids.size)
        return S.rows_exact(lims.astype(np.int64), ids, rows, self.X, W, self.b)

    def maintain(self, neurons):
        with np.errstate(over="ignore"):  # overflow to inf is divergence, caught by train
            self.stored[neurons] = self.net.W[neurons]

    @property
    def nbytes(self) -> int:
        return int(self.stored.nbytes)
