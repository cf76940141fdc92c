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
from numba import get_num_threads

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
    ``blas_gradient``: the hot neurons' gradient is one BLAS product over the batch when their
    firing pairs fill more than this fraction of (hot neuron, batch row) pairs. Default: 0.1
    on batches of 1024 rows or more, never on smaller ones, whose rows stay in cache and are
    gathered faster (measured on Fashion-MNIST: docs/engines.md).
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
        blas_gradient: float | None = None,
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
        if blas_gradient is not None and not blas_gradient >= 0:
            raise ValueError(f"blas_gradient must be >= 0, got {blas_gradient}")
        self.blas_gradient = blas_gradient
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
        self._scratch: dict[str, np.ndarray] = {}
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
        self.hot = np.zeros(self.m, dtype=np.bool_)
        self.hot_ids = np.zeros(0, dtype=np.int64)
        self.hot_pos = np.full(self.m, -1, dtype=np.int64)
        self._Wh = np.empty((0, net.d), dtype=net.dtype)
        self._add_hot(np.flatnonzero(dense))
        self._no_hot = np.zeros((1, 1), dtype=net.dtype)
        self._hot_work = 0  # inner products spent on drifted hot neurons since this rebuild
        self.counters["rebuilds"] += 1
        self.counters["inner_products"] += self.n * self.m

    @property
    def candidates(self) -> int:
        return int(self.cptr[-1])

    @property
    def nbytes(self) -> int:
        own = [self.cidx, self.zref, self.cptr, self.W_ref, self._Wh, *(self._by_neuron or ())]
        return sum(a.nbytes for a in own) + sum(a.nbytes for a in self._scratch.values())

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
        Xb = self.X if full else self.X[rows]
        nh = self.hot_ids.size
        blas = False  # hot neurons handled as one dense block (forward and gradient by BLAS)
        if nh:
            Zhot = np.matmul(self._Wh[:nh], Xb.T, out=self._buffer("Zhot", (nh, rows.size)))
            threshold = self._blas_gradient(rows.size)
            if threshold < np.inf:
                hot_fired = S.count_above(Zhot, self.b)
                blas = hot_fired.sum() > threshold * nh * rows.size
        else:
            Zhot = self._no_hot
        nptr, frows, fval, checks = S.neuron_exact(
            col_ptr, brows, rows, self.X, net.W, self.hot_pos, Zhot, float(self.b), not blas
        )
        t1 = time.perf_counter()
        F, E, loss = self.forward(nptr, frows, fval, rows, neuron_major=True)
        if blas:  # add the hot neurons' share of the outputs
            S.hot_forward(Zhot, self.b, net._A, self.hot_ids, self.scale, F, get_num_threads())
            E = F - self.Y[rows]
            loss = 0.5 * float(np.sum(E.astype(np.float64) ** 2))
        t2 = time.perf_counter()
        coef = np.empty(frows.size, dtype=net.dtype)
        S.neuron_coefficients(nptr, frows, net._A, E, self.scale, coef)
        neurons = np.flatnonzero(np.diff(nptr))
        t3 = time.perf_counter()
        lr = net.dtype.type(lr)
        pairs, moved = frows.size, neurons.size
        if blas:
            # The hot neurons fire densely enough that one BLAS product over the batch beats
            # gathering their pairs: their gradient is C_hot @ X_batch.
            C = self._buffer("Chot", (nh, rows.size))
            S.hot_coefficient_matrix(Zhot, self.b, net._A, self.hot_ids, E, self.scale, C)
            G = np.matmul(C, Xb, out=self._buffer("Ghot", (nh, net.d)))
            S.subtract_rows(net.W, self.hot_ids, G, lr, self._Wh)
            pairs += int(hot_fired.sum())
            moved += int(np.count_nonzero(hot_fired))
        S.neuron_step(
            nptr,
            frows,
            coef,
            neurons,
            rows,
            self.X,
            net.W,
            lr,
            self.W_ref,
            self.delta,
            self.hot_pos,
            self._Wh,
        )
        self._hot_work += rows.size * (self.hot_ids.size - self.n_dense)
        self._after_move(neurons)
        t4 = time.perf_counter()
        self.counters["exact_checks"] += int(checks)
        self.counters["hot_checks"] += rows.size * self.hot_ids.size
        self.counters["inner_products"] += int(checks) + rows.size * self.hot_ids.size
        self.counters["gradient_madds"] += pairs * net.d
        self.counters["steps"] += 1
        return StepInfo(
            loss,
            pairs,
            moved,
            dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True)),
            F,
        )

    def _blas_gradient(self, batch: int) -> float:
        if self.blas_gradient is not None:
            return self.blas_gradient
        return 0.1 if batch >= 1024 else np.inf

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A scratch array of this shape kept between steps; its first axis grows by half
        again when it must, so a growing hot set does not reallocate at every step."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            rows = max(shape[0], 3 * (0 if buf is None else buf.shape[0]) // 2)
            buf = self._scratch[name] = np.empty((rows, *shape[1:]), dtype=self.net.dtype)
        return buf[: shape[0]]

    def _after_move(self, neurons: np.ndarray) -> None:
        """Neurons whose drift passed the slack turn hot; rebuild by the ski-rental rule."""
        newly = neurons[(self.delta[neurons] * self.xmax > self.slack) & ~self.hot[neurons]]
        if newly.size:
            self._add_hot(newly)
        if self.hot_ids.size > self.n_dense and self._hot_work >= self.rebuild_after * (
            self.n * self.m
        ):
            self.rebuild()

    def _add_hot(self, ids: np.ndarray) -> None:
        """Turn neurons hot. Their rows are appended to ``_Wh``, a contiguous copy of the hot
        neurons' weights that the steps keep in sync, so that the BLAS check reads it
        directly instead of gathering the rows from W at every step."""
        nh = self.hot_ids.size
        new = nh + ids.size
        if new > self._Wh.shape[0]:
            grown = np.empty((max(new, 3 * nh // 2), self.net.d), dtype=self.net.dtype)
            grown[:nh] = self._Wh[:nh]
            self._Wh = grown
        np.take(self.net.W, ids, axis=0, out=self._Wh[nh:new])
        self.hot[ids] = True
        self.hot_pos[ids] = np.arange(nh, new)
        self.hot_ids = np.concatenate([self.hot_ids, ids.astype(np.int64)])

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
