"""The paper's two data structures: Correlation DTree and Correlation WTree.

Both store every weight-data correlation <w_r, x_i> in a forest of max-trees (layout in
``corrtree/_kernels/forest.py``) and report the pairs above a threshold by pruned search.
They are the same forest seen from two sides:

============  ======================  ======================  ==============================
structure     one tree per            leaves                  query(k, tau) reports
============  ======================  ======================  ==============================
DTree         data point i (n trees)  the m neurons           neurons r with <w_r, x_i> > tau
WTree         neuron r (m trees)      the n data points       points i with <w_r, x_i> > tau
============  ======================  ======================  ==============================
"""

from __future__ import annotations

import numpy as np

from .. import _progress
from .._kernels import forest as K
from .._validation import (
    FLOAT_DTYPES,
    as_float_array,
    as_index,
    as_positive_int,
    as_scalar,
    check_memory,
)

__all__ = ["CHUNK_BYTES", "CorrelationDTree", "CorrelationWTree", "forest_nbytes"]

CHUNK_BYTES = 64 << 20  # default size of the blocked Init's temporaries


def _pow2(L: int) -> int:
    return 1 << max(0, (L - 1).bit_length())


def forest_nbytes(n_trees: int, n_leaves: int, dtype=np.float64) -> int:
    """Bytes of a forest of ``n_trees`` max-trees over ``n_leaves`` leaves each."""
    return n_trees * (2 * _pow2(n_leaves) - 1) * np.dtype(dtype).itemsize


class _CorrelationForest:
    """Shared implementation; subclasses fix which side owns the trees."""

    _rows_are_data: bool
    _row_name: str

    def __init__(
        self, W, X, *, dtype=None, max_memory: int | None = None, chunk_bytes: int = CHUNK_BYTES
    ):
        W = as_float_array(W, "W", 2)
        X = as_float_array(X, "X", 2)
        if dtype is None:
            dtype = np.result_type(W.dtype, X.dtype)
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if W.shape[1] != X.shape[1]:
            raise ValueError(
                f"W has {W.shape[1]} columns but X has {X.shape[1]}: both must have d columns"
            )
        if W.shape[0] == 0 or X.shape[0] == 0 or W.shape[1] == 0:
            raise ValueError(
                f"W {W.shape} and X {X.shape} must have at least one row and one column"
            )
        self.W = np.array(W, dtype=dtype, order="C")
        self.X = np.array(X, dtype=dtype, order="C")
        self.m, self.d = self.W.shape
        self.n = self.X.shape[0]
        R, L = (self.n, self.m) if self._rows_are_data else (self.m, self.n)
        self._L = L
        self._P = _pow2(L)
        check_memory(
            forest_nbytes(R, L, dtype),
            f"{type(self).__name__} with n={self.n}, m={self.m} ({dtype})",
            max_memory,
        )
        self._trees = np.empty((R, 2 * self._P - 1), dtype=dtype)
        self._stats = dict.fromkeys(
            (
                "queries",
                "nodes_visited",
                "reported",
                "inner_products",
                "leaves_updated",
                "nodes_repaired",
                "trees_rebuilt",
            ),
            0,
        )
        chunk_bytes = as_positive_int(chunk_bytes, "chunk_bytes")
        step = max(1, chunk_bytes // (L * dtype.itemsize))  # trees built per block
        with _progress.bar(R, f"building the {type(self).__name__}", "tree") as bar:
            for lo in range(0, R, step):
                rows = np.arange(lo, min(R, lo + step))
                self._build_rows(rows, self._correlate_rows(rows))
                bar.update(rows.size)
        self._stats["trees_rebuilt"] = 0

    # --- orientation helpers -------------------------------------------------------------
    def _correlate_rows(self, rows: np.ndarray) -> np.ndarray:
        """Correlations of the tree rows ``rows`` with all leaves: shape (len(rows), L)."""
        A, B = (self.X, self.W) if self._rows_are_data else (self.W, self.X)
        self._stats["inner_products"] += len(rows) * self._L
        return np.ascontiguousarray(A[rows] @ B.T)

    def _build_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        if len(rows) == self._trees.shape[0] and rows[0] == 0 and rows[-1] == len(rows) - 1:
            K.build(self._trees, values)
        else:
            K.build_rows(self._trees, rows.astype(np.int64), values)
        self._stats["trees_rebuilt"] += len(rows)

    def _set_cols(self, cols: np.ndarray, values: np.ndarray) -> None:
        written = K.set_leaves(self._trees, cols.astype(np.int64), np.ascontiguousarray(values))
        self._stats["leaves_updated"] += values.size
        self._stats["nodes_repaired"] += int(written)

    def _neurons_moved(self, neurons: np.ndarray, Wn: np.ndarray) -> None:
        self.W[neurons] = Wn
        Z = self.X @ Wn.T  # (n, k)
        self._stats["inner_products"] += Z.size
        if self._rows_are_data:
            self._set_cols(neurons, Z)
        else:
            self._build_rows(neurons, np.ascontiguousarray(Z.T))

    def _data_moved(self, points: np.ndarray, Xn: np.ndarray) -> None:
        self.X[points] = Xn
        Z = Xn @ self.W.T  # (k, m)
        self._stats["inner_products"] += Z.size
        if self._rows_are_data:
            self._build_rows(points, np.ascontiguousarray(Z))
        else:
            self._set_cols(points, np.ascontiguousarray(Z.T))

    # --- public API -----------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held by the trees and the stored copies of W and X."""
        return self._trees.nbytes + self.W.nbytes + self.X.nbytes

    @property
    def dtype(self) -> np.dtype:
        return self._trees.dtype

    def _vector(self, v, name: str) -> np.ndarray:
        v = as_float_array(v, name, 1, dtype=self.dtype)
        if v.shape[0] != self.d:
            raise ValueError(f"{name} has {v.shape[0]} entries but the structure has d={self.d}")
        return v

    def update(self, r, w) -> None:
        """Set neuron ``r``'s weight vector to ``w`` and repair every affected tree."""
        r = as_index(r, "r", self.m)
        w = self._vector(w, "w")
        self._neurons_moved(np.array([r], dtype=np.int64), w[None, :])

    def update_many(self, neurons, W_new) -> None:
        """Set the weights of several neurons at once (one pass over the trees)."""
        neurons = np.asarray(neurons)
        if neurons.ndim != 1 or not np.issubdtype(neurons.dtype, np.integer):
            raise TypeError(
                f"neurons must be a 1-D integer array, got {neurons.dtype} of shape {neurons.shape}"
            )
        if neurons.size and (neurons.min() < 0 or neurons.max() >= self.m):
            raise IndexError(
                f"neuron ids must be in [0, {self.m}), got range [{neurons.min()}, {neurons.max()}]"
            )
        if np.unique(neurons).size != neurons.size:
            raise ValueError("neurons must not contain duplicates")
        W_new = as_float_array(W_new, "W_new", 2, dtype=self.dtype)
        if W_new.shape != (neurons.size, self.d):
            raise ValueError(f"W_new has shape {W_new.shape}, expected {(neurons.size, self.d)}")
        if neurons.size:
            self._neurons_moved(neurons.astype(np.int64), W_new)

    def update_data(self, i, x) -> None:
        """Set data point ``i`` to ``x`` and repair every affected tree."""
        i = as_index(i, "i", self.n)
        x = self._vector(x, "x")
        self._data_moved(np.array([i], dtype=np.int64), x[None, :])

    def value(self, i, r) -> float:
        """The stored correlation <w_r, x_i>."""
        i = as_index(i, "i", self.n)
        r = as_index(r, "r", self.m)
        t, j = (i, r) if self._rows_are_data else (r, i)
        return float(self._trees[t, self._P - 1 + j])

    def correlations(self) -> np.ndarray:
        """All stored correlations as an (n, m) array (a copy)."""
        leaves = self._trees[:, self._P - 1 : self._P - 1 + self._L]
        return np.array(leaves if self._rows_are_data else leaves.T)

    def query(self, k, threshold) -> np.ndarray:
        """Sorted ids of the leaves of tree ``k`` whose correlation is > ``threshold``."""
        k = as_index(k, self._row_name, self._trees.shape[0])
        tau = as_scalar(threshold, "threshold")
        ids, _, visited = K.query_one(self._trees, k, tau)
        self._count_query(1, visited, ids.size)
        return ids

    def query_all(self, threshold) -> tuple[np.ndarray, np.ndarray]:
        """Query every tree: CSR ``(indptr, indices)``, each row sorted."""
        indptr, ids, _ = self.query_rows(None, threshold)
        return indptr, ids

    def query_rows(self, rows, threshold):
        """Query the trees ``rows`` (all when None): CSR ``(indptr, indices, values)``."""
        tau = as_scalar(threshold, "threshold")
        R = self._trees.shape[0]
        if rows is None:
            rows = np.arange(R, dtype=np.int64)
        else:
            rows = np.asarray(rows)
            if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
                raise TypeError(
                    f"rows must be a 1-D array of integer ids, got {rows.dtype} of shape "
                    f"{rows.shape}"
                )
            rows = rows.astype(np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= R):
                raise IndexError(f"{self._row_name} ids must be in [0, {R})")
        indptr, ids, vals, visited = K.query_rows(self._trees, rows, tau)
        self._count_query(rows.size, visited, ids.size)
        return indptr, ids, vals

    def _count_query(self, q: int, visited: int, reported: int) -> None:
        self._stats["queries"] += q
        self._stats["nodes_visited"] += int(visited)
        self._stats["reported"] += int(reported)

    def stats(self) -> dict[str, int]:
        """Work counters since construction (or the last ``reset_stats``)."""
        return dict(self._stats)

    def reset_stats(self) -> None:
        for key in self._stats:
            self._stats[key] = 0

    def invariant_violations(self) -> int:
        """Internal nodes that are not the max of their children, plus non ``-inf`` padding."""
        return int(K.check_invariants(self._trees, self._L))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, m={self.m}, d={self.d}, "
            f"dtype={self.dtype}, nbytes={self.nbytes})"
        )


class CorrelationDTree(_CorrelationForest):
    """One max-tree per data point over all m neurons (the paper's Correlation DTree).

    ``query(i, tau)`` returns the neurons firing on point ``i``; ``update(r, w)`` costs
    O(n (d + log m)); ``update_data(i, x)`` rebuilds tree ``i`` in O(m d). Memory O(n m).
    """

    _rows_are_data = True
    _row_name = "i"


class CorrelationWTree(_CorrelationForest):
    """One max-tree per neuron over all n data points (the paper's Correlation WTree).

    ``query(r, tau)`` returns the data points on which neuron ``r`` fires; ``update(r, w)``
    rebuilds tree ``r`` in O(n d); ``update_data(i, x)`` repairs leaf ``i`` of all m trees.
    """

    _rows_are_data = False
    _row_name = "r"
