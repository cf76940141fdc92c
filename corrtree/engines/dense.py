"""The dense reference: every pair, BLAS matrix products. The oracle for every other engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._blas import matmul
from .._kernels import deep as K
from .._kernels import sparse as S
from .._validation import check_memory
from .base import Engine, Firing, Options, check_number


@dataclass(frozen=True)
class DenseOptions(Options):
    """``buffer_bytes``: the largest (batch, m) activation buffer kept between the forward and
    the backward pass; a larger batch is processed in blocks of rows whose correlations are
    computed again in the backward pass (one more X W^T, no more memory)."""

    buffer_bytes: int = 2 << 30

    def check(self):
        check_number("buffer_bytes", self.buffer_bytes, kind=int, low=1)


@dataclass
class DenseFiring(Firing):
    H: np.ndarray | None = field(repr=False, default=None)  # max(Z - b, 0), or None: blocked
    fired: np.ndarray | None = field(repr=False, default=None)  # neurons firing on some row


class DenseEngine(Engine):
    """Theta(B m d) per step, written tight: Z = X_B W^T into one preallocated buffer, then in
    place H = max(Z - b, 0), F = scale H A, the gradient's coefficients sign(H) * scale E A^T
    (written over H), G = C^T X_B and W -= lr G. H > 0 exactly where Z > b (the difference of
    two distinct floats is never zero), so the mask needs no array of its own."""

    name = "dense"
    Options = DenseOptions

    def __init__(self, net, X, options=None, *, max_memory=None):
        super().__init__(net, X, options, max_memory=max_memory)
        need = self.estimate_bytes(self.n, self.m, net.d, dtype=net.dtype, options=self.options)
        check_memory(need, f"the dense engine's buffers (n={self.n}, m={self.m})", max_memory)
        self.block = max(1, self.options.buffer_bytes // (max(1, self.m) * net.dtype.itemsize))
        self._buf = np.empty((0, self.m), dtype=net.dtype)
        self._G = None

    @classmethod
    def estimate_bytes(cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None):
        opts = cls.make_options(options)
        item = np.dtype(dtype).itemsize
        rows = min(n, batch or n)
        return min(rows * m * item, opts.buffer_bytes + m * item) + m * d * item

    @property
    def nbytes(self):
        return self._buf.nbytes + (0 if self._G is None else self._G.nbytes)

    def _H(self, Xb: np.ndarray) -> np.ndarray:
        """max(X_b W^T - b, 0) into the kept buffer (grown when a batch is larger)."""
        R = Xb.shape[0]
        if self._buf.shape[0] < R:
            self._buf = np.empty((R, self.m), dtype=self.net.dtype)
        H = matmul(Xb, self.net.W.T, out=self._buf[:R])
        H -= self.b
        np.maximum(H, 0, out=H)
        return H

    def _batch(self, rows):
        return (self.X, rows) if rows is None else (self.X[rows], rows)

    def detect(self, rows):
        Xb, _ = self._batch(rows)
        rows = self._rows(rows)
        self.counters["inner_products"] += Xb.shape[0] * self.m
        if Xb.shape[0] <= self.block:
            H = self._H(Xb)
            return DenseFiring(rows, int(np.count_nonzero(H)), H, _fired(H))
        pairs, fired = 0, np.zeros(self.m, dtype=bool)
        for lo in range(0, Xb.shape[0], self.block):
            H = self._H(Xb[lo : lo + self.block])
            pairs += int(np.count_nonzero(H))
            fired |= _fired(H)
        return DenseFiring(rows, pairs, None, fired)

    def forward(self, firing):
        net = self.net
        Xb = self.X if firing.rows.size == self.n else self.X[firing.rows]
        F = np.empty((Xb.shape[0], net.n_outputs), dtype=net.dtype)
        for lo, H in self._blocks(firing, Xb):
            np.matmul(H, net.A, out=F[lo : lo + H.shape[0]])
        F *= self.scale
        return F

    def backward(self, firing, E, lr):
        G = self._gradient(firing, E)
        G *= self.net.dtype.type(lr)
        self.net.W -= G
        self.counters["steps"] += 1
        return np.flatnonzero(firing.fired)

    def gradient(self, firing, E):
        G = self._gradient(firing, E)
        ids = np.flatnonzero(firing.fired)
        return ids, G[ids]

    def output_gradient(self, firing, E):
        net = self.net
        Xb = self.X if firing.rows.size == self.n else self.X[firing.rows]
        GA = np.zeros((self.m, net.n_outputs), dtype=net.dtype)
        for lo, H in self._blocks(firing, Xb):
            GA += H.T @ E[lo : lo + H.shape[0]]
        GA *= self.scale
        ids = np.flatnonzero(firing.fired)
        return ids, GA[ids]

    def _gradient(self, firing, E) -> np.ndarray:
        """dLoss/dW for all m neurons into the kept buffer (H is overwritten)."""
        net = self.net
        Xb = self.X if firing.rows.size == self.n else self.X[firing.rows]
        if self._G is None:
            self._G = np.empty_like(net.W)
        G = self._G
        aT = (net.A * self.scale).T  # (C, m)
        written = False
        for lo, H in self._blocks(firing, Xb):
            np.sign(H, out=H)  # the mask, 0 or 1
            R = H.shape[0]
            for a in range(0, R, 64):  # coefficients sign(H) * scale E A^T, 64 rows at once
                H[a : a + 64] *= E[lo + a : lo + min(a + 64, R)] @ aT
            if written:
                G += matmul(H.T, Xb[lo : lo + H.shape[0]])
            else:
                matmul(H.T, Xb[: H.shape[0]], out=G)
                written = True
        if not written:
            G.fill(0)
        self.counters["gradient_madds"] += Xb.shape[0] * self.m * net.d
        return G

    def neuron_pairs(self, firing):
        Xb = self.X if firing.rows.size == self.n else self.X[firing.rows]
        parts = [K.above(H, 0.0) for _, H in self._blocks(firing, Xb)]
        if len(parts) == 1:
            ptr, idx, val = parts[0]
        else:  # blocks of rows, point-major: concatenate
            ptr = np.concatenate([[0], *(p[0][1:] + o for p, o in _offsets(parts))])
            idx = np.concatenate([p[1] for p in parts])
            val = np.concatenate([p[2] for p in parts])
        val += self.b  # H = z - b where it fires
        return S.Pairs(*S.transpose(ptr, idx, val, self.m))

    def _blocks(self, firing, Xb):
        """(first row, H) per block of rows: the kept H, or H computed again per block."""
        if firing.H is not None:
            yield 0, firing.H
            return
        for lo in range(0, Xb.shape[0], self.block):
            yield lo, self._H(Xb[lo : lo + self.block])


def _fired(H: np.ndarray) -> np.ndarray:
    """Neurons (columns of H >= 0) that fire on some row, without an (R, m) temporary."""
    return H.max(axis=0) > 0 if H.shape[0] else np.zeros(H.shape[1], dtype=bool)


def _offsets(parts):
    """Each block's point-major pairs with the number of pairs before it."""
    at = 0
    for p in parts:
        yield p, at
        at += int(p[0][-1])
