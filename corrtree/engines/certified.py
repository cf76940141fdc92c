"""Drift-certificate engine: exact firing detection from O(candidates) memory.

Idea. Keep, per neuron r, reference weights w_r(s) taken at the last rebuild and the drift
delta_r = ||w_r(t) - w_r(s)||. By Cauchy-Schwarz

    <w_r(t), x_i>  <=  <w_r(s), x_i> + delta_r * ||x_i||.

At a rebuild every pair with <w_r(s), x_i> > b - slack is stored as a *candidate* (with its
reference correlation), point-major. A pair that is not a candidate cannot fire while
delta_r * ||x_i|| <= slack. A candidate needs an exact inner product only when its bound
exceeds b. A neuron whose drift passes the slack becomes *hot* and is checked exactly on every
point of each batch (one BLAS product over the batch). Hot neurons cost batch * d each per
step; a rebuild from the current weights (one blocked X W^T over all n points, like the trees'
Init) costs n * m * d once and cools them all. The engine rebuilds when the work spent on hot
neurons since the last rebuild reaches ``rebuild_after`` times the cost of a rebuild: the
ski-rental rule, which keeps the total within a factor 1 + 1/rebuild_after of the best
schedule in hindsight. With full batches a rebuild comes after a few steps with many hot
neurons; with small mini-batches hot neurons are cheap and rebuilds are rare.

Cost per step: (candidates of the batch whose bound exceeds b) * d exact products for
detection, (firing pairs) * d for the gradient, (neurons moved) * d for the drift. Memory:
the candidates (about n * m * P(z > b - slack) pairs) and one reference copy of W. No O(nm)
structure, and no term in n when training on mini-batches.
"""

from __future__ import annotations

import time

import numpy as np

from .._kernels import sparse as S
from .._validation import check_memory, fmt_bytes
from ..model import firing_probability
from .base import PHASES, Engine, StepInfo

_BLOCK_BYTES = 128 << 20


class CertifiedEngine(Engine):
    """Exact sparse training with drift certificates over a candidate index.

    ``slack``: how far below b candidates reach (default 0.25 for unit-norm data).
    ``rebuild_after``: rebuild once the exact checks spent on hot neurons since the last
    rebuild reach this multiple of a rebuild's n * m * d (default 1).
    ``dense_fraction``: neurons with candidates on more than this fraction of the points are
    checked on the whole batch by BLAS (default 0.15, where BLAS's rate beats gathering).
    """

    name = "certified"

    def __init__(
        self,
        net,
        X,
        Y,
        *,
        slack: float = 0.25,
        rebuild_after: float = 1.0,
        dense_fraction: float = 0.15,
        max_memory: int | None = None,
        **kwargs,
    ):
        super().__init__(net, X, Y)
        if not slack > 0:
            raise ValueError(f"slack must be > 0, got {slack}")
        self.slack = float(slack)
        if not rebuild_after >= 0:
            raise ValueError(f"rebuild_after must be >= 0, got {rebuild_after}")
        self.rebuild_after = float(rebuild_after)
        if not 0 < dense_fraction:
            raise ValueError(f"dense_fraction must be > 0, got {dense_fraction}")
        self.dense_fraction = float(dense_fraction)
        self.max_memory = max_memory
        self.xnorm = np.linalg.norm(X.astype(np.float64), axis=1)
        self.xmax = float(self.xnorm.max()) if self.n else 0.0
        eps = np.finfo(net.dtype).eps
        # Rounding allowance for the bound test: products are accumulated in float64, the
        # reference values come from BLAS in the network's dtype.
        self.margin = (
            64
            * eps
            * (
                1.0
                + abs(float(self.b))
                + float(np.sqrt(np.max(np.sum(net.W.astype(np.float64) ** 2, axis=1)))) * self.xmax
            )
        )
        self.counters.update(rebuilds=0, exact_checks=0, hot_checks=0)
        self.rebuild()

    # --- index ----------------------------------------------------------------------------
    def estimate_bytes(self) -> int:
        # <w_r, x_i> ~ N(0, ||x_i||^2) at initialisation; ||x||_max bounds the tail.
        b_low = float(self.b) - self.slack
        frac = firing_probability(b_low / self.xmax) if self.xmax > 0 else 1.0
        item = np.dtype(self.net.dtype).itemsize
        return int(1.2 * self.n * self.m * frac * (8 + item)) + self.net.W.nbytes

    def rebuild(self) -> None:
        """Take the current weights as reference and recompute all candidates."""
        net = self.net
        check_memory(
            self.estimate_bytes(),
            f"the candidate index (n={self.n}, m={self.m}, slack={self.slack})",
            self.max_memory,
        )
        self.W_ref = net.W.copy()
        b_low = net.dtype.type(float(self.b) - self.slack - self.margin)
        block = max(1, _BLOCK_BYTES // (self.m * net.dtype.itemsize))
        ptr = np.zeros(self.n + 1, dtype=np.int64)
        for lo in range(0, self.n, block):
            Z = self.X[lo : lo + block] @ net.W.T
            S.candidates_from_block(Z, b_low, lo, True, ptr, ptr[:0], Z[0, :0])
        np.cumsum(ptr, out=ptr)
        idx = np.empty(ptr[-1], dtype=np.int32 if self.m < 2**31 else np.int64)
        val = np.empty(ptr[-1], dtype=net.dtype)
        for lo in range(0, self.n, block):
            Z = self.X[lo : lo + block] @ net.W.T
            S.candidates_from_block(Z, b_low, lo, False, ptr, idx, val)
        self.cptr, self.cidx, self.zref = ptr, idx, val
        self._by_neuron = None  # neuron-major copy, made by the first full-batch step
        self.delta = np.zeros(self.m, dtype=np.float64)
        # Dense neurons: candidates on more than dense_fraction of the points. Gathering their
        # candidate rows one by one is slower than one BLAS product with the whole batch, so
        # they are checked like hot neurons from the start (and do not count as drift).
        dense = np.bincount(idx, minlength=self.m) > self.dense_fraction * self.n
        self.n_dense = int(dense.sum())
        self.hot = dense
        self.hot_ids = np.zeros(0, dtype=np.int64)
        self.hot_pos = np.full(self.m, -1, dtype=np.int64)
        self._set_hot_ids()
        self._no_hot = np.zeros((1, 1), dtype=net.dtype)
        self._hot_work = 0  # inner products spent on drifted hot neurons since this rebuild
        self.counters["rebuilds"] += 1
        self.counters["inner_products"] += self.n * self.m

    @property
    def candidates(self) -> int:
        return int(self.cptr[-1])

    @property
    def nbytes(self) -> int:
        return self.cidx.nbytes + self.zref.nbytes + self.cptr.nbytes + self.W_ref.nbytes

    # --- one step ----------------------------------------------------------------------------
    def step(self, lr: float, rows: np.ndarray | None = None) -> StepInfo:
        net = self.net
        full = rows is None
        if full:
            rows = np.arange(self.n, dtype=np.int64)
        t0 = time.perf_counter()
        # Candidates whose bound reaches b, grouped by neuron, then checked exactly with
        # each weight row read once.
        bound = (self.xnorm, self.delta, self.hot, float(self.b), self.margin)
        if full:  # full batch: the neuron-major copy of the index
            if self._by_neuron is None:
                self._by_neuron = S.transpose(self.cptr, self.cidx, self.zref, self.m)
            col_ptr, brows = S.neuron_candidates(*self._by_neuron, *bound)
        else:
            bptr, bcand = S.batch_candidates(self.cptr, self.cidx, self.zref, rows, *bound)
            col_ptr, brows, _ = S.transpose(bptr, bcand, bcand, self.m)
        Zhot = net.W[self.hot_ids] @ self.X[rows].T if self.hot_ids.size else self._no_hot
        nptr, frows, fval, checks = S.neuron_exact(
            col_ptr, brows, rows, self.X, net.W, self.hot_pos, Zhot, float(self.b)
        )
        t1 = time.perf_counter()
        F, E, loss = self.forward(nptr, frows, fval, rows, neuron_major=True)
        t2 = time.perf_counter()
        coef = np.empty(frows.size, dtype=net.dtype)
        S.neuron_coefficients(nptr, frows, net._A, E, self.scale, coef)
        neurons = np.flatnonzero(np.diff(nptr))
        t3 = time.perf_counter()
        S.neuron_step(
            nptr,
            frows,
            coef,
            neurons,
            rows,
            self.X,
            net.W,
            net.dtype.type(lr),
            self.W_ref,
            self.delta,
            self.hot,
        )
        self._hot_work += rows.size * (self.hot_ids.size - self.n_dense)
        self._after_move(neurons)
        t4 = time.perf_counter()
        self.counters["exact_checks"] += int(checks)
        self.counters["hot_checks"] += rows.size * self.hot_ids.size
        self.counters["inner_products"] += int(checks) + rows.size * self.hot_ids.size
        self.counters["gradient_madds"] += frows.size * net.d
        self.counters["steps"] += 1
        return StepInfo(
            loss,
            int(frows.size),
            int(neurons.size),
            dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True)),
            F,
        )

    def _after_move(self, neurons: np.ndarray) -> None:
        """Neurons whose drift passed the slack turn hot; rebuild by the ski-rental rule."""
        newly = neurons[(self.delta[neurons] * self.xmax > self.slack) & ~self.hot[neurons]]
        if newly.size:
            self.hot[newly] = True
            self._set_hot_ids()
        if self.hot_ids.size > self.n_dense and self._hot_work >= self.rebuild_after * (
            self.n * self.m
        ):
            self.rebuild()

    def _set_hot_ids(self) -> None:
        self.hot_ids = np.flatnonzero(self.hot).astype(np.int64)
        self.hot_pos[self.hot_ids] = np.arange(self.hot_ids.size)

    def stats(self):
        return {
            **self.counters,
            "candidates": self.candidates,
            "hot_neurons": int(self.hot_ids.size),
            "dense_neurons": self.n_dense,
        }

    def __repr__(self) -> str:
        return (
            f"CertifiedEngine(n={self.n}, m={self.m}, slack={self.slack}, "
            f"candidates={self.candidates}, {fmt_bytes(self.nbytes)})"
        )
