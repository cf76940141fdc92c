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

    def __init__(self, net, X, Y, **kwargs):
        super().__init__(net, X, Y)
        faiss = import_faiss()
        self.X32 = np.ascontiguousarray(X, dtype=np.float32)
        self.index = faiss.IndexFlatIP(net.d)
        self.index.add(np.ascontiguousarray(net.W, dtype=np.float32))
        self.stored = faiss.rev_swig_ptr(self.index.get_xb(), self.m * net.d).reshape(self.m, net.d)
        self.xmax = float(np.linalg.norm(self.X32, axis=1).max()) if self.n else 0.0
        self.counters.update(reported_by_faiss=0)

    def detect(self, rows):
        W = self.net.W
        wmax = float(np.sqrt(np.max(np.einsum("ij,ij->i", W, W)))) if self.m else 0.0
        eps = float(np.finfo(np.float32).eps)
        margin = 2.0 * (self.net.d + 2) * eps * (1.0 + wmax * self.xmax)
        lims, _, ids = self.index.range_search(self.X32[rows], float(self.b) - margin)
        self.counters["reported_by_faiss"] += int(ids.size)
        self.counters["inner_products"] += rows.size * self.m + int(ids.size)
        return S.rows_exact(lims.astype(np.int64), ids, rows, self.X, W, self.b)

    def maintain(self, neurons):
        self.stored[neurons] = self.net.W[neurons]

    @property
    def nbytes(self) -> int:
        return int(self.stored.nbytes)
