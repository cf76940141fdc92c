"""The paper's algorithm with each correlation structure (PAPER.md, "Training with the trees")."""

from __future__ import annotations

import numpy as np

from .._kernels import sparse as S
from ..trees import CorrelationDTree, CorrelationWTree
from .base import SparseEngine


class _TreeEngine(SparseEngine):
    """Shared by both tree engines: build the structure, Update every neuron that moved."""

    structure: type

    def __init__(self, net, X, Y, *, max_memory: int | None = None, **kwargs):
        super().__init__(net, X, Y)
        self.tree = self.structure(net.W, X, dtype=net.dtype, max_memory=max_memory)

    def maintain(self, neurons):
        self.tree.update_many(neurons, self.net.W[neurons])

    def stats(self):
        return {**self.counters, **self.tree.stats()}

    @property
    def nbytes(self):
        return self.tree.nbytes


class DTreeEngine(_TreeEngine):
    """Detect with one DTree query per point; Update every neuron that moved (n(d + log m))."""

    name = "dtree"
    structure = CorrelationDTree

    def detect(self, rows):
        return self.tree.query_rows(rows, self.b)


class WTreeEngine(_TreeEngine):
    """Detect with one WTree query per neuron, then transpose; rebuild the tree of every
    neuron that moved (n d). With a mini-batch the queries still cover all n points and the
    pairs outside the batch are dropped."""

    name = "wtree"
    structure = CorrelationWTree

    def detect(self, rows):
        nptr, pts, vals = self.tree.query_rows(None, self.b)
        ptr, ids, v = S.transpose(nptr, pts, vals, self.n)
        if rows.size == self.n and np.array_equal(rows, np.arange(self.n)):
            return ptr, ids, v
        return S.select_rows(ptr, ids, v, rows)
