"""The paper's algorithm with each correlation structure: query the trees for the firing
pairs, Update every neuron that moved (Alman et al. 2023, "Training with the trees")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernels import sparse as S
from ..structures import CHUNK_BYTES, CorrelationDTree, CorrelationWTree, forest_nbytes
from .base import Options, SparseEngine, check_number


@dataclass(frozen=True)
class TreeOptions(Options):
    """``chunk_bytes``: size of the correlation blocks of the trees' Init (X W^T in blocks of
    trees)."""

    chunk_bytes: int = CHUNK_BYTES

    def check(self):
        check_number("chunk_bytes", self.chunk_bytes, kind=int, low=1)


class _TreeEngine(SparseEngine):
    """Shared by both tree engines: build the structure, Update every neuron that moved."""

    structure: type
    Options = TreeOptions

    def __init__(self, net, X, options=None, *, max_memory=None):
        super().__init__(net, X, options, max_memory=max_memory)
        self.tree = self.structure(
            net.W,
            X,
            dtype=net.dtype,
            max_memory=max_memory,
            chunk_bytes=self.options.chunk_bytes,
        )

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

    @classmethod
    def estimate_bytes(cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None):
        return forest_nbytes(n, m, dtype) + (n + m) * d * np.dtype(dtype).itemsize

    def find(self, rows):
        return self.tree.query_rows(rows, self.b)


class WTreeEngine(_TreeEngine):
    """Detect with one WTree query per neuron, then transpose; rebuild the tree of every
    neuron that moved (n d). With a mini-batch the queries still cover all n points and the
    pairs outside the batch are dropped."""

    name = "wtree"
    structure = CorrelationWTree

    @classmethod
    def estimate_bytes(cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None):
        return forest_nbytes(m, n, dtype) + (n + m) * d * np.dtype(dtype).itemsize

    def find(self, rows):
        nptr, pts, vals = self.tree.query_rows(None, self.b)
        ptr, ids, v = S.transpose(nptr, pts, vals, self.n)
        if rows.size == self.n and np.array_equal(rows, np.arange(self.n)):
            return ptr, ids, v
        return S.select_rows(ptr, ids, v, rows)
