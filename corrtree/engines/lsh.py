"""SLIDE-style approximate detection with locality-sensitive hash tables over the weights.

This is what sampling-based sparse training does (SLIDE, Chen et al. 2020): L hash tables,
each keyed by K hash functions of the weight vector; a data point looks up its own code in
every table and takes the union of the neurons found as its active set. Those neurons'
inner products are computed exactly and kept when above b, so nothing wrong is ever added;
but firing neurons that share no bucket with the point are missed, and the gradient then
differs from dense. The tables are rebuilt from the current weights every ``rebuild_every``
steps; in between, moved neurons stay in their old buckets.

Hash families: ``simhash`` (signs of K random projections: collisions follow the angle) and
``dwta`` (winner-take-all over random bins of ``bin_size`` coordinates; densification is not
needed for dense vectors). NOT an exact engine: it is not in ``ENGINES``, ``auto`` never
picks it, and benchmarks report its recall of the firing set and its loss gap to dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import get_num_threads

from .._kernels import lsh as H
from .._kernels import sparse as S
from .base import Options, SparseEngine, check_number

_BLOCK = 8192


@dataclass(frozen=True)
class LSHOptions(Options):
    """``hash``: simhash or dwta; ``K`` hash functions per table, ``L`` tables; ``bin_size``:
    coordinates per DWTA bin; tables rebuilt every ``rebuild_every`` steps; ``seed`` of the
    hash functions."""

    hash: str = "simhash"
    K: int = 8
    L: int = 32
    bin_size: int = 8
    rebuild_every: int = 10
    seed: int = 0

    def check(self):
        if self.hash not in ("simhash", "dwta"):
            raise ValueError(f"option hash must be 'simhash' or 'dwta', got {self.hash!r}")
        for name in ("K", "L", "bin_size", "rebuild_every"):
            check_number(name, getattr(self, name), kind=int, low=1)
        check_number("seed", self.seed, kind=int, low=0)


class LSHEngine(SparseEngine):
    """Approximate sparse training with SLIDE-style LSH tables (``hash``: simhash or dwta)."""

    name = "lsh"
    exact = False

    Options = LSHOptions

    def __init__(self, net, X, options=None, *, max_memory=None):
        super().__init__(net, X, options, max_memory=max_memory)
        o = self.options
        hash, K, L, bin_size = o.hash, o.K, o.L, o.bin_size
        bits = K if hash == "simhash" else K * int(np.ceil(np.log2(max(bin_size, 2))))
        if bits > 62 or (hash == "dwta" and bin_size > net.d):
            raise ValueError(
                f"hash codes of {bits} bits (K={K}, bin_size={bin_size}, d={net.d}) do not fit"
            )
        self.hash, self.K, self.L, self.bin_size = hash, K, L, bin_size
        self.rebuild_every = o.rebuild_every
        rng = np.random.default_rng(o.seed)
        if hash == "simhash":
            self.R = rng.standard_normal((net.d, L * K)).astype(net.dtype)
        else:
            self.bins = np.stack(
                [rng.choice(net.d, bin_size, replace=False) for _ in range(L * K)]
            ).reshape(L, K, bin_size)
        self.Xcodes = self.codes(X)
        self.counters.update(rebuilds=0, candidates=0)
        self.rebuild()

    def codes(self, V: np.ndarray) -> np.ndarray:
        """(N, L) int64 hash codes of the rows of V."""
        out = np.empty((V.shape[0], self.L), dtype=np.int64)
        for lo in range(0, V.shape[0], _BLOCK):
            B = V[lo : lo + _BLOCK]
            if self.hash == "simhash":
                bits = (B @ self.R > 0).reshape(B.shape[0], self.L, self.K)
                digits, base = bits.astype(np.int64), 2
            else:
                digits = np.argmax(B[:, self.bins], axis=-1).astype(np.int64)
                base = self.bin_size
            out[lo : lo + _BLOCK] = digits @ (base ** np.arange(self.K, dtype=np.int64))
        return out

    def rebuild(self) -> None:
        codes = self.codes(self.net.W).T  # (L, m)
        order = np.argsort(codes, axis=1, kind="stable")
        self.table_ids = np.ascontiguousarray(order)
        self.table_codes = np.ascontiguousarray(np.take_along_axis(codes, order, axis=1))
        self.counters["rebuilds"] += 1
        self._since = 0

    @classmethod
    def estimate_bytes(cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None):
        return (2 * m + n) * cls.make_options(options).L * 8

    def find(self, rows):
        ptr, cand = H.candidates(
            self.Xcodes[rows], self.table_codes, self.table_ids, get_num_threads()
        )
        found = S.rows_exact(ptr, cand, rows, self.X, self.net.W, self.b)
        self.counters["candidates"] += int(cand.size)
        self.counters["inner_products"] += int(cand.size)
        return found

    def maintain(self, neurons):
        self._since += 1
        if self._since >= self.rebuild_every:
            self.rebuild()

    @property
    def nbytes(self) -> int:
        return int(self.table_ids.nbytes + self.table_codes.nbytes + self.Xcodes.nbytes)
