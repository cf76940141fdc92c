"""Drift-certificate engine: exact firing detection from O(candidates) memory.

Idea. Keep, per neuron r, reference weights w_r(s) taken at the last rebuild and the drift
delta_r = ||w_r(t) - w_r(s)||. By Cauchy-Schwarz

    <w_r(t), x_i>  <=  <w_r(s), x_i> + delta_r * ||x_i||.

At a rebuild every pair with <w_r(s), x_i> > b - slack is stored as a *candidate* (with its
reference correlation), point-major. A pair that is not a candidate cannot fire while
delta_r * ||x_i|| <= slack. A candidate needs an exact inner product only when its bound
exceeds b. A neuron whose drift passes the slack becomes *hot* and is checked exactly on every
point of each batch (one BLAS product over the batch). Hot neurons cost batch * d each per
step. Taking a new reference for one neuron (the paper's Update: its inner products with all
n points, n * d) cools it again: a hot neuron is re-referenced once the checks it has cost
since it turned hot reach ``rebuild_after`` times that price, the ski-rental rule per neuron,
which keeps each neuron's cost within a factor 1 + 1/rebuild_after of the best schedule in
hindsight. Neurons that come due are re-referenced together (one BLAS product X W_group^T)
and their new candidates merged into the index. ``rereference="rebuild"`` keeps the older
rule instead: one rebuild of all neurons (n * m * d) once the hot work since the last
rebuild reaches ``rebuild_after`` times its cost.

Cost per step: (candidates of the batch whose bound exceeds b) * d exact products for
detection, (firing pairs) * d for the gradient, (neurons moved) * d for the drift. Memory:
the candidates (about n * m * P(z > b - slack) pairs) and one reference copy of W. No O(nm)
structure, and no term in n when training on mini-batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import get_num_threads

from .. import _bf16, _progress
from .._blas import matmul
from .._kernels import deep as K
from .._kernels import sparse as S
from .._validation import check_memory, dot_margin, fmt_bytes, max_row_norm
from ..nets import default_threshold, firing_probability
from .base import Engine, Firing, Options, check_number


@dataclass(frozen=True)
class CertifiedOptions(Options):
    """``slack``: how far below b candidates reach (for unit-norm data).
    ``rebuild_after``: re-reference a hot neuron once the exact checks spent on it since it
    turned hot reach this multiple of its re-reference's n * d (with
    ``rereference="rebuild"``: rebuild once the checks on all hot neurons reach this multiple
    of a rebuild's n * m * d).
    ``dense_fraction``: neurons with candidates on more than this fraction of the points are
    checked on the whole batch by BLAS (where BLAS's rate beats gathering).
    ``blas_gradient``: the hot neurons' gradient is one BLAS product over the batch when their
    firing pairs fill more than this fraction of (hot neuron, batch row) pairs. None: 0.1 on
    batches of 1024 rows or more, never on smaller ones, whose rows stay in cache and are
    gathered faster (measured on Fashion-MNIST: docs/engines.md).
    ``block_bytes``: size of the correlation blocks X W^T of an index pass (at least 1024
    points each, over chunks of neurons when all of them do not fit).
    ``rereference``: ``"neuron"`` re-references hot neurons one by one as they come due (in
    groups); ``"rebuild"`` rebuilds the whole index instead.
    ``lazy``: index each point at its first visit (one BLAS product of its batch with all
    weights, which also gives that batch's firing pairs), so training starts at once, the
    preprocessing pass is spread over the first epoch and the index is smaller; batches
    whose correlations with all neurons would take more than 4 ``block_bytes`` (full-batch
    GD at large m) build the whole index in one blocked pass at their first step instead.
    Off by default: no faster over 10 epochs of SGD at m = 2^16 and 10% slower at m = 2^18
    (docs/engines.md, "Bounds").
    ``index_bf16``: run the index passes (rebuilds, re-references) on bfloat16 matrix units
    (``corrtree._bf16``: a three-term split with a certified error bound; the index then
    stores upper bounds, and the exact checks are unchanged). None: when PyTorch is installed,
    the CPU has the units (Intel AMX), the network is float32 and the pass is large.
    """

    slack: float = 0.25
    rebuild_after: float = 1.0
    dense_fraction: float = 0.15
    blas_gradient: float | None = None
    block_bytes: int = 128 << 20
    rereference: str = "neuron"
    lazy: bool = False
    index_bf16: bool | None = None

    def check(self):
        check_number("slack", self.slack, low=0, low_open=True)
        check_number("rebuild_after", self.rebuild_after, low=0)
        check_number("dense_fraction", self.dense_fraction, low=0, low_open=True)
        if self.blas_gradient is not None:
            check_number("blas_gradient", self.blas_gradient, low=0)
        check_number("block_bytes", self.block_bytes, kind=int, low=1)
        if not isinstance(self.lazy, (bool, np.bool_)):
            raise TypeError(f"lazy must be True or False, got {self.lazy!r}")
        if self.index_bf16 not in (None, True, False):
            raise TypeError(f"index_bf16 must be None, True or False, got {self.index_bf16!r}")
        if self.rereference not in ("neuron", "rebuild"):
            raise ValueError(f"rereference must be 'neuron' or 'rebuild', got {self.rereference!r}")


@dataclass
class CertifiedFiring(Firing):
    """Neuron-major firing pairs of the batch (``pairs_``: ptr over neurons, batch rows,
    exact values), the hot neurons' correlations with the batch, and whether the hot
    neurons are handled as one dense block (``blas``), their pairs then not listed."""

    found: S.Pairs = field(repr=False, default=None)
    Zhot: np.ndarray = field(repr=False, default=None)
    blas: bool = False
    hot_fired: np.ndarray | None = field(repr=False, default=None)
    Xb: np.ndarray | None = field(repr=False, default=None)  # the batch's rows of X
    first: bool = False  # a first visit: every neuron was checked by BLAS, hot ones for free


class CertifiedEngine(Engine):
    """Exact sparse training with drift certificates over a candidate index."""

    name = "certified"
    Options = CertifiedOptions

    def __init__(self, net, X, options=None, *, max_memory=None):
        super().__init__(net, X, options, max_memory=max_memory)
        if self.m >= 2**31:
            raise ValueError(f"certified supports up to 2^31 - 1 neurons, got m={self.m}")
        o = self.options
        self.slack = float(o.slack)
        self.xnorm = np.linalg.norm(X.astype(np.float64), axis=1)
        self.xmax = float(self.xnorm.max()) if self.n else 0.0
        self.counters.update(rebuilds=0, rereferenced=0, exact_checks=0, hot_checks=0)
        self._scratch: dict[str, np.ndarray] = {}
        self._batch = self.n  # rows of the last step
        self._split = None  # X split for bfloat16 index passes, made at the first one
        if o.index_bf16:
            if net.dtype != np.float32:
                raise ValueError(f"index_bf16 needs a float32 network, got {net.dtype}")
            try:
                import torch  # noqa: F401
            except ImportError:
                raise ImportError(
                    "index_bf16=True needs PyTorch: pip install 'corrtree[torch]'"
                ) from None
        if o.lazy:
            self._reference_all()
        else:
            self.rebuild()

    # --- index ----------------------------------------------------------------------------
    @classmethod
    def estimate_bytes(
        cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None, xmax=1.0, threshold=None
    ):
        """The candidates (about n m P(z > b - slack) pairs at initialisation, where
        <w_r, x_i> ~ N(0, ||x_i||^2), bounded with ||x||_max), a reference copy of W, and for
        a lazy index the correlations of one batch with all neurons (first visits)."""
        o = cls.make_options(options)
        b = default_threshold(m) if threshold is None else threshold
        frac = firing_probability((b - o.slack) / xmax) if xmax > 0 else 1.0
        item = np.dtype(dtype).itemsize
        first = min((batch or n) * m * item, 4 * o.block_bytes) if o.lazy else 0
        split = 6 * (n + m) * d if cls._uses_bf16(o, n, m, d, np.dtype(dtype)) else 0
        return int(1.2 * n * m * frac * (8 + item)) + m * d * item + first + split

    @staticmethod
    def _uses_bf16(options, n, k, d, dtype) -> bool:
        """Whether an index pass over n points and k neurons runs on bfloat16 units."""
        if options.index_bf16 is None:
            return dtype == np.float32 and _bf16.worth_it(n, k, d)
        return bool(options.index_bf16)

    def rebuild(self) -> None:
        """Take the current weights as reference and recompute all candidates."""
        self._reference_all()
        ptr, ids, val = self._candidates(self._b_low())
        self.index = S.Index(ptr[:-1], ptr[1:], ids, val)
        self._stored = ids.size
        self.indexed[:] = True
        self._n_indexed = self.n
        # Dense neurons: candidates on more than dense_fraction of the points. Gathering their
        # candidate rows one by one is slower than one BLAS product with the whole batch, so
        # they are checked like hot neurons from the start (and do not count as drift).
        self._set_dense(np.bincount(ids, minlength=self.m) > self.options.dense_fraction * self.n)
        self.counters["rebuilds"] += 1
        self.counters["inner_products"] += self.n * self.m

    def _reference_all(self) -> None:
        """Take the current weights as every neuron's reference, with an empty index and no
        hot neuron (the index is then filled by a rebuild or batch by batch)."""
        net = self.net
        check_memory(
            self.estimate_bytes(
                self.n,
                self.m,
                net.d,
                dtype=net.dtype,
                options=self.options,
                xmax=self.xmax,
                threshold=float(self.b),
            ),
            f"the candidate index (n={self.n}, m={self.m}, slack={self.slack})",
            self.max_memory,
        )
        self.index = self._by_neuron = None  # freed before the new index is built
        if getattr(self, "W_ref", None) is None:
            self.W_ref = net.W.copy()
        else:
            np.copyto(self.W_ref, net.W)  # reuse the pages: no fresh 4 m d bytes to fault in
        wmax = max_row_norm(net.W)
        # Rounding allowance of the bound test: the reference values (BLAS, network dtype) and
        # the exact checks (network dtype) each round a d-term sum of products with
        # ||w|| <= wmax + slack / xmax for every neuron that is not hot.
        reach = wmax + (self.slack / self.xmax if self.xmax > 0 else 0.0)
        self.margin = 2 * dot_margin(net.d, net.dtype, reach, self.xmax)
        empty = np.zeros(self.n, dtype=np.int64)
        self.index = S.Index(empty, empty.copy(), np.empty(0, np.int32), np.empty(0, net.dtype))
        self._stored = 0
        self.indexed = np.zeros(self.n, dtype=np.bool_)
        self._n_indexed = 0
        self.delta = np.zeros(self.m, dtype=np.float64)
        self.dense = None  # decided by the first pass over points
        self.n_dense = 0
        self.hot = np.zeros(self.m, dtype=np.bool_)
        self.hot_cost = np.zeros(self.m, dtype=np.int64)  # checks spent on each while hot
        self.hot_ids = np.zeros(0, dtype=np.int64)
        self.hot_pos = np.full(self.m, -1, dtype=np.int64)
        self._Wh = np.empty((0, net.d), dtype=net.dtype)
        self._no_hot = np.zeros((1, 1), dtype=net.dtype)
        self._hot_work = 0  # inner products spent on drifted hot neurons since this rebuild

    def _b_low(self):
        return self.net.dtype.type(float(self.b) - self.slack - self.margin)

    def _set_dense(self, dense: np.ndarray) -> None:
        self.dense = dense
        self.n_dense = int(dense.sum())
        self._add_hot(np.flatnonzero(dense))

    def _first_visit(self, rows: np.ndarray, ks: np.ndarray, full: bool) -> CertifiedFiring:
        """Detection for a batch holding points not indexed yet (positions ``ks``): one BLAS
        product of the batch with all current weights, which gives the firing pairs exactly
        (as dense's step) and the new points' candidates (``index_rows``). A lazy index costs
        the preprocessing pass spread over the first epoch, and spares that epoch's sparse
        detection."""
        net = self.net
        Xb = (
            self.X
            if full
            else np.take(self.X, rows, axis=0, out=self._buffer("Xb", rows.shape + (net.d,)))
        )
        Z = matmul(Xb, net.W.T, out=self._buffer("Zfirst", (rows.size, self.m)))
        b_low = float(self._b_low())
        cool = self.delta[~self.hot]
        reach = b_low - (cool.max() if cool.size else 0.0) * self.xnorm[rows]
        ptr, ids, val = S.index_rows(
            Z,
            ks,
            rows,
            self.delta,
            self.xnorm,
            self.hot,
            b_low,
            _round_down(reach, net.dtype),
        )
        self._append(rows[ks], ptr, ids, val)
        if self.dense is None:  # from the first points: their share of each neuron's candidates
            self._set_dense(
                np.bincount(ids, minlength=self.m) > self.options.dense_fraction * ks.size
            )
        # The firing pairs: z > b exactly when z > b rounded down to Z's precision.
        fptr, fids, fval = S.extract_candidates(Z, _round_down(float(self.b), net.dtype))
        found = S.Pairs(*S.transpose(fptr, fids, fval, self.m))
        self.counters["inner_products"] += rows.size * self.m
        return CertifiedFiring(rows, fids.size, found, self._no_hot, False, None, Xb, first=True)

    def _append(self, points: np.ndarray, ptr: np.ndarray, ids: np.ndarray, val: np.ndarray):
        """Store the candidates of newly indexed ``points`` (point-major CSR over them)."""
        lo, hi, all_ids, all_val = self.index
        fill = self._stored + ids.size
        scale = self.n / (self._n_indexed + points.size)
        all_ids = _room(all_ids, self._stored, fill, scale)
        all_val = _room(all_val, self._stored, fill, scale)
        all_ids[self._stored : fill] = ids
        all_val[self._stored : fill] = val
        lo[points] = self._stored + ptr[:-1]
        hi[points] = self._stored + ptr[1:]
        self.index = S.Index(lo, hi, all_ids, all_val)
        self._stored = fill
        self.indexed[points] = True
        self._n_indexed += points.size
        self._by_neuron = None
        if self._n_indexed == self.n:  # the first-visit buffer is not needed any more
            self._scratch.pop("Zfirst", None)

    def _candidates(self, b_low, W=None) -> S.Pairs:
        """All pairs with <w_r, x_i> > b_low, point-major, from one blocked pass of X W^T
        (each block's correlations computed once, its candidates appended). ``W``: these
        rows instead of the network's (ids are then positions in ``W``). On bfloat16 units
        (``index_bf16``) the values are upper bounds of the correlations and the pairs those
        whose bound passes b_low (a few percent more)."""
        net = self.net
        W = net.W if W is None else W
        k = max(1, W.shape[0])
        split = None
        if self._uses_bf16(self.options, self.n, k, net.d, net.dtype):
            c_abs, c_rel = _bf16.bound(net.d, self.xmax, max_row_norm(W))
            above = _bf16.threshold_bits(float(b_low), c_abs, c_rel)
            if above is not None:  # else b_low is too low for the integer test: BLAS
                if self._split is None:
                    self._split = _bf16.SplitProduct(self.X)
                split, W3T = self._split, _bf16.SplitProduct.weights(W)
        item = 2 if split is not None else net.dtype.itemsize
        P, kb = _block_shape(self.n, k, item, self.options.block_bytes)
        Z = np.empty(P * kb, dtype=net.dtype) if split is None else split.buffer(P * kb)
        ptr = np.zeros(self.n + 1, dtype=np.int64)
        ids = np.empty(0, dtype=np.int32)
        val = np.empty(0, dtype=net.dtype)
        fill = 0
        what = "indexing" if k == self.m else f"re-referencing {k} neurons"
        with _progress.bar(self.n, what) as bar:
            for lo in range(0, self.n, P):
                hi = min(self.n, lo + P)
                parts = []  # point-major candidates of each chunk of neurons
                for c0 in range(0, k, kb):
                    c1 = min(k, c0 + kb)
                    zb = Z[: (hi - lo) * (c1 - c0)].reshape(hi - lo, c1 - c0)
                    if split is None:
                        zb = matmul(self.X[lo:hi], W[c0:c1].T, out=zb)
                        parts.append((*S.extract_candidates(zb, b_low), c0))
                    else:
                        # the bit patterns of positive bfloat16 numbers order as the numbers do
                        zb = split.block(lo, hi, W3T[:, c0:c1], zb)
                        bptr, bids, bbits = S.extract_candidates(zb, above)
                        parts.append((bptr, bids, S.bf16_upper_bounds(bbits, c_abs, c_rel), c0))
                bptr, bids, bval = parts[0][:3] if len(parts) == 1 else _join_chunks(parts)
                ids = _room(ids, fill, fill + bids.size, self.n / hi)
                val = _room(val, fill, fill + bids.size, self.n / hi)
                ids[fill : fill + bids.size] = bids
                val[fill : fill + bids.size] = bval
                ptr[lo + 1 : hi + 1] = fill + bptr[1:]
                fill += bids.size
                bar.update(hi - lo)
        return S.Pairs(
            ptr,
            ids[:fill].copy() if fill < 0.9 * ids.size else ids[:fill],
            val[:fill].copy() if fill < 0.9 * val.size else val[:fill],
        )

    @property
    def candidates(self) -> int:
        return int(self._stored)

    @property
    def nbytes(self) -> int:
        own = [*self.index, self.W_ref, self._Wh, *(self._by_neuron or ())]
        split = self._split.nbytes if self._split is not None else 0
        return sum(a.nbytes for a in own) + sum(a.nbytes for a in self._scratch.values()) + split

    # --- the step -------------------------------------------------------------------------
    def detect(self, rows):
        net = self.net
        full = rows is None
        rows = self._rows(rows)
        if self._n_indexed < self.n:
            ks = np.flatnonzero(~self.indexed[rows])
            if ks.size and rows.size * self.m * net.dtype.itemsize > 4 * self.options.block_bytes:
                self.rebuild()  # too large a batch to hold its correlations: index all now
            elif ks.size:
                return self._first_visit(rows, ks, full)
        # Candidates whose bound reaches b, grouped by neuron, then checked exactly with
        # each weight row read once.
        cert = S.Certificate(self.xnorm, self.delta, self.hot, float(self.b), self.margin)
        if full:  # full batch: the neuron-major copy of the index
            if self._by_neuron is None:
                self._by_neuron = S.Pairs(*S.transpose_rows(*self.index, self.m))
            col_ptr, brows = S.neuron_candidates(self._by_neuron, cert)
        else:
            bptr, bcand = S.batch_candidates(self.index, rows, cert)
            col_ptr, brows, _ = S.transpose(bptr, bcand, bcand, self.m)
        nh = self.hot_ids.size
        blas, hot_fired = False, None  # hot neurons as one dense block (BLAS forward, gradient)
        # The batch's rows, contiguous: every gathered kernel of the step then reads them
        # from a small block that stays in cache, not from rows scattered over X.
        Xb = (
            self.X
            if full
            else np.take(self.X, rows, axis=0, out=self._buffer("Xb", rows.shape + (net.d,)))
        )
        every = self._every(rows.size)
        if nh:
            Zhot = matmul(self._Wh[:nh], Xb.T, out=self._buffer("Zhot", (nh, rows.size)))
            threshold = self._blas_gradient(rows.size)
            if threshold < np.inf:
                hot_fired = S.count_above(Zhot, self.b)
                blas = hot_fired.sum() > threshold * nh * rows.size
        else:
            Zhot = self._no_hot
        nptr, frows, fval, checks = S.neuron_exact(
            col_ptr, brows, every, Xb, net.W, self.hot_pos, Zhot, float(self.b), not blas
        )
        self.counters["exact_checks"] += int(checks)
        self.counters["hot_checks"] += rows.size * nh
        self.counters["inner_products"] += int(checks) + rows.size * nh
        pairs = frows.size + (int(hot_fired.sum()) if blas else 0)
        return CertifiedFiring(rows, pairs, S.Pairs(nptr, frows, fval), Zhot, blas, hot_fired, Xb)

    def forward(self, firing):
        net = self.net
        F = np.empty((firing.rows.size, net.n_outputs), dtype=net.dtype)
        nptr, frows, fval = firing.found
        S.forward_neurons(nptr, frows, fval, net.A, self.b, self.scale, F, get_num_threads())
        if firing.blas:  # add the hot neurons' share of the outputs
            S.hot_forward(
                firing.Zhot, self.b, net.A, self.hot_ids, self.scale, F, get_num_threads()
            )
        return F

    def backward(self, firing, E, lr):
        nptr, frows, _ = firing.found
        coef = np.empty(frows.size, dtype=self.net.dtype)
        S.neuron_coefficients(nptr, frows, self.net.A, E, self.scale, coef)
        hot_coef = None
        if firing.blas:
            # The hot neurons fire densely enough that one BLAS product over the batch beats
            # gathering their pairs: their gradient is C_hot @ X_batch.
            hot_coef = self._buffer("Chot", (self.hot_ids.size, firing.rows.size))
            S.hot_coefficient_matrix(
                firing.Zhot, self.b, self.net.A, self.hot_ids, E, self.scale, hot_coef
            )
        return self._descend(firing, coef, lr, hot_coef)

    def neuron_pairs(self, firing):
        """The listed pairs, and with a hot BLAS block its pairs too, read from its
        correlations (the hot neurons' segments of the listed pairs are then empty)."""
        if not firing.blas:
            return firing.found
        nptr, frows, fval = firing.found
        hptr, hrows, hval = K.above(firing.Zhot, self.b)  # ptr over hot positions
        counts, hot_counts = np.diff(nptr), np.diff(hptr)
        counts[self.hot_ids] += hot_counts
        ptr = np.zeros(self.m + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        rows = np.empty(ptr[-1], dtype=frows.dtype)
        vals = np.empty(ptr[-1], dtype=fval.dtype)
        at = np.repeat(ptr[:-1] - nptr[:-1], np.diff(nptr)) + np.arange(frows.size)
        rows[at], vals[at] = frows, fval
        at = np.repeat(ptr[self.hot_ids] - hptr[:-1], hot_counts) + np.arange(hrows.size)
        rows[at], vals[at] = hrows, hval
        return S.Pairs(ptr, rows, vals)

    def descend(self, firing, pairs, coef, lr):
        """The update from the coefficient at each pair of ``neuron_pairs(firing)``, each
        moved row's drift written in the same pass; with a hot BLAS block, its pairs'
        coefficients form the block's (hot neuron, batch row) matrix."""
        if not firing.blas:
            return self._descend(firing, coef, lr)
        owner = np.repeat(np.arange(self.m), np.diff(pairs[0]))
        hot = self.hot[owner]
        hot_coef = self._buffer("Chot", (self.hot_ids.size, firing.rows.size))
        hot_coef.fill(0)
        hot_coef[self.hot_pos[owner[hot]], pairs[1][hot]] = coef[hot]
        return self._descend(firing, coef[~hot], lr, hot_coef)

    def _descend(self, firing, coef, lr, hot_coef=None):
        """The update from the gradient's coefficient at each firing pair (``coef``, in the
        order of ``firing.found``; ``hot_coef``: the hot block's, when ``firing.blas``):
        w_r -= lr * sum of coef * x over r's pairs, each moved row's drift written in the same
        pass. Returns the moved neurons."""
        net = self.net
        rows = firing.rows
        nptr, frows, _ = firing.found
        if firing.blas and hot_coef is None:
            raise ValueError("the hot block's pairs were not listed: hot_coef is needed")
        neurons = np.flatnonzero(np.diff(nptr))
        lr = net.dtype.type(lr)
        nh = self.hot_ids.size
        moved = neurons
        if firing.blas:
            G = matmul(hot_coef, firing.Xb, out=self._buffer("Ghot", (nh, net.d)))
            S.subtract_rows(net.W, self.hot_ids, G, lr, self._Wh)
            # the union as a mask over the neurons: np.union1d sorts, 70 ms at m = 2^19
            mask = np.zeros(self.m, dtype=np.bool_)
            mask[neurons] = True
            mask[self.hot_ids[firing.hot_fired > 0]] = True
            moved = np.flatnonzero(mask)
        # Update fused with maintenance: each moved row is read and written once, its drift
        # from the reference (or its hot copy) written in the same pass.
        S.neuron_step(
            S.Pairs(nptr, frows, coef),
            neurons,
            self._every(rows.size),
            firing.Xb,
            net.W,
            lr,
            S.Drift(self.W_ref, self.delta, self.hot_pos, self._Wh),
        )
        self._after_step(firing)
        return moved

    def _after_step(self, firing) -> None:
        self._batch = 0 if firing.first else firing.rows.size  # checks charged to each hot one
        self._hot_work += self._batch * (self.hot_ids.size - self.n_dense)
        self.counters["gradient_madds"] += firing.pairs * self.net.d
        self.counters["steps"] += 1

    def gradient(self, firing, E):
        net = self.net
        nptr, frows, _ = firing.found
        coef = np.empty(frows.size, dtype=net.dtype)
        S.neuron_coefficients(nptr, frows, net.A, E, self.scale, coef)
        ids = np.flatnonzero(np.diff(nptr))
        G = np.empty((ids.size, net.d), dtype=net.dtype)
        S.neuron_gradient(nptr, frows, coef, ids, firing.Xb, self._every(firing.rows.size), G)
        if firing.blas:  # the hot block's gradient, C_hot @ X_batch, for the hot rows that fired
            hot = self._hot_fired(firing)
            C = self._buffer("Chot", (self.hot_ids.size, firing.rows.size))
            S.hot_coefficient_matrix(firing.Zhot, self.b, net.A, self.hot_ids, E, self.scale, C)
            ids, G = _merge_rows(ids, G, self.hot_ids[hot], matmul(C[hot], firing.Xb))
        return ids, G

    def output_gradient(self, firing, E):
        net = self.net
        nptr, frows, fval = firing.found
        ids = np.flatnonzero(np.diff(nptr))
        GA = np.empty((ids.size, net.n_outputs), dtype=net.dtype)
        S.neuron_output_gradient(nptr, frows, fval, self.b, E, self.scale, ids, GA)
        if firing.blas:
            hot = self._hot_fired(firing)
            H = np.maximum(firing.Zhot[hot] - self.b, 0)
            GAh = H @ E
            GAh *= self.scale
            ids, GA = _merge_rows(ids, GA, self.hot_ids[hot], GAh)
        return ids, GA

    def apply(self, firing, ids, D):
        """W[ids] -= D, each moved row's drift (or hot copy) written in the same pass."""
        S.apply_rows(self.net.W, ids, D, S.Drift(self.W_ref, self.delta, self.hot_pos, self._Wh))
        self._after_step(firing)
        return ids

    def _hot_fired(self, firing) -> np.ndarray:
        """Positions in the hot set of the hot neurons with a firing pair in the batch."""
        return np.flatnonzero(firing.hot_fired > 0)

    def maintain(self, moved):
        """Neurons whose drift passed the slack turn hot; hot neurons that have cost as much
        as a new reference get one (or, with ``rereference="rebuild"``, the whole index is
        rebuilt once the hot work has cost as much as a rebuild)."""
        moved = moved[~self.hot[moved]]
        newly = moved[self.delta[moved] * self.xmax > self.slack]
        if newly.size:
            self._add_hot(newly)
        if self.hot_ids.size == self.n_dense:
            return
        due_cost = self.options.rebuild_after * self.n
        if self.options.rereference == "rebuild":
            if self._hot_work >= due_cost * self.m:
                self.rebuild()
            return
        drifted = self.hot_ids[~self.dense[self.hot_ids]]
        self.hot_cost[drifted] += self._batch
        due = drifted[self.hot_cost[drifted] >= due_cost]
        # Re-referencing a group merges its candidates into the index, a pass over all of it
        # (and in full-batch training a new neuron-major copy): due neurons wait for company
        # until the checks they have cost past their price pay for that pass, about one
        # inner product per stored candidate. The ski-rental rule again, per group.
        waste = int(self.hot_cost[due].sum()) - due_cost * due.size
        if due.size and waste >= self.candidates:
            if 2 * due.size >= self.m:
                self.rebuild()
            else:
                self.rereference(due)

    def rereference(self, ids: np.ndarray) -> None:
        """Take the current weights of neurons ``ids`` as their reference (n d each): their
        candidates are recomputed against all points and replace theirs in the index; they
        stop being hot, unless their candidates now cover more than ``dense_fraction`` of the
        points (they are then dense, checked by BLAS on every batch from here on)."""
        net = self.net
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        try:  # the merge holds the old index and the new one at once
            check_memory(
                2 * sum(a.nbytes for a in self.index) + self.n * ids.size * net.dtype.itemsize,
                f"re-referencing {ids.size} neurons",
                self.max_memory,
            )
        except MemoryError:
            self.rebuild()  # frees the index before building the new one
            return
        Wg = net.W[ids]
        reach = max_row_norm(Wg) + (self.slack / self.xmax if self.xmax > 0 else 0.0)
        self.margin = max(self.margin, 2 * dot_margin(net.d, net.dtype, reach, self.xmax))
        gptr, gpos, gval = self._candidates(
            net.dtype.type(float(self.b) - self.slack - self.margin), Wg
        )
        dense = np.bincount(gpos, minlength=ids.size) > self.options.dense_fraction * self.n
        drop = np.zeros(self.m, dtype=np.bool_)
        drop[ids] = True
        take = np.zeros(self.m, dtype=np.bool_)
        take[ids[~dense]] = True
        group = S.Pairs(gptr, ids.astype(np.int32)[gpos], gval)
        ptr, new_ids, new_val = S.merge_index(self.index, drop, group, take, self.indexed)
        self.index = S.Index(ptr[:-1], ptr[1:], new_ids, new_val)
        self._stored = new_ids.size
        self._by_neuron = None
        self.W_ref[ids] = Wg
        self.delta[ids] = 0.0
        self.hot_cost[ids] = 0
        self.dense[ids[dense]] = True
        self.n_dense += int(dense.sum())
        self._remove_hot(ids[~dense])
        self.counters["rereferenced"] += int(ids.size)
        self.counters["inner_products"] += self.n * int(ids.size)

    def _blas_gradient(self, batch: int) -> float:
        if self.options.blas_gradient is not None:
            return self.options.blas_gradient
        return 0.1 if batch >= 1024 else np.inf

    def _every(self, size: int) -> np.ndarray:
        """arange(size) as int64, kept: the batch rows' positions in their contiguous copy."""
        if getattr(self, "_arange", None) is None or self._arange.size < size:
            self._arange = np.arange(max(size, self.n), dtype=np.int64)
        return self._arange[:size]

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A scratch array of this shape, a view of flat storage kept between steps. The
        storage grows by half again when it must (a growing hot set does not reallocate at
        every step) and never for a change of shape alone (batches of other sizes, such as an
        epoch's last, reuse it), so it stays within 1.5x of the largest shape asked for."""
        size = int(np.prod(shape))
        buf = self._scratch.get(name)
        if buf is None or buf.size < size:
            grown = max(size, 3 * (0 if buf is None else buf.size) // 2)
            buf = self._scratch[name] = np.empty(grown, dtype=self.net.dtype)
        return buf[:size].reshape(shape)

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

    def _remove_hot(self, ids: np.ndarray) -> None:
        """Hot neurons ``ids`` cool down: they leave the hot set and its weight copy."""
        if not ids.size:
            return
        self.hot[ids] = False
        self.hot_pos[ids] = -1
        keep = np.flatnonzero(self.hot[self.hot_ids])
        self._Wh[: keep.size] = self._Wh[keep]
        self.hot_ids = self.hot_ids[keep]
        self.hot_pos[self.hot_ids] = np.arange(keep.size)

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


_MIN_BLOCK_POINTS = 1024  # rows per product of an index pass: each weight read once per block


def _block_shape(n: int, k: int, item: int, block_bytes: int) -> tuple[int, int]:
    """(points, neurons) of one block of an index pass's correlations within ``block_bytes``:
    all k neurons when at least ``_MIN_BLOCK_POINTS`` points fit, else that many points (or
    n) and as many neurons as fit. Fewer points per block would stream all the weights
    through memory once per handful of points (at m = 2^20, 64 points per block, the pass
    was bound by that traffic, not by the product)."""
    P = max(1, min(n, block_bytes // (k * item)))
    if P >= min(n, _MIN_BLOCK_POINTS):
        return P, k
    P = min(n, _MIN_BLOCK_POINTS)
    return P, max(1, min(k, block_bytes // (P * item)))


def _join_chunks(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point-major CSR from the candidates of consecutive chunks of neurons of a block
    of points (``parts``: their (ptr, ids within the chunk, values, first neuron))."""
    ptrs = np.stack([p[0] for p in parts])
    sizes = np.array([p[1].size for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = np.array([p[3] for p in parts], dtype=np.int32)
    ids = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    return S.join_chunks(ptrs, starts, first, ids, vals)


def _room(a, keep, need, scale):
    """``a`` if it holds ``need`` entries, else a larger copy of its first ``keep``: sized for
    ``need`` extrapolated by ``scale`` (the points not done yet), 10% over."""
    if need <= a.size:
        return a
    cap = max(need, int(1.1 * need * scale) + 1024)
    return np.concatenate([a[:keep], np.empty(cap - keep, dtype=a.dtype)])


def _merge_rows(ids, G, more_ids, more_G):
    """Rows of two disjoint sets of neurons as one, sorted by neuron id."""
    ids = np.concatenate([ids, more_ids])
    order = np.argsort(ids, kind="stable")
    return ids[order], np.concatenate([G, more_G])[order]


def _round_down(t, dtype):
    """The largest numbers of ``dtype`` <= t (elementwise): for z of that dtype, z > t
    exactly when z > _round_down(t)."""
    t = np.asarray(t, dtype=np.float64)
    v = t.astype(dtype)
    v = np.where(v > t, np.nextafter(v, dtype.type(-np.inf)), v).astype(dtype)
    return v if v.ndim else v[()]
