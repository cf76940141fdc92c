"""The engine interface and the sparse step shared by the tree engines."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from numba import get_num_threads

from .._kernels import sparse as S

PHASES = ("detect", "forward", "backward", "maintain")


@dataclass
class StepInfo:
    """What one gradient step did: the loss at the weights it started from, work, time."""

    loss: float
    fired_pairs: int
    changed_neurons: int
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: np.ndarray | None = field(default=None, repr=False)  # batch outputs, pre-step
    rows: np.ndarray | None = field(default=None, repr=False)  # the batch (None: all points)


class Engine:
    """Base class. Subclasses set ``name`` and implement ``step``.

    ``net`` is updated in place: ``net.W`` is the engine's weight matrix.
    """

    name = "base"

    def __init__(self, net, X: np.ndarray, Y: np.ndarray, **kwargs):
        self.net = net
        self.X = X
        self.Y = Y
        self.n = X.shape[0]
        self.m = net.width
        self.scale = net.dtype.type(1.0 / math.sqrt(net.width))
        self.b = net.dtype.type(net.threshold)
        self.counters = {"inner_products": 0, "gradient_madds": 0, "steps": 0}

    def step(self, lr: float, rows: np.ndarray | None = None) -> StepInfo:
        raise NotImplementedError

    def forward(self, ptr, idx, val, rows, neuron_major=False):
        """Outputs, residuals and loss of the batch from firing pairs (point-major CSR, or
        neuron-major with batch rows in ``idx``)."""
        net = self.net
        F = np.empty((rows.size, net.n_outputs), dtype=net.dtype)
        if neuron_major:
            S.forward_neurons(ptr, idx, val, net._A, self.b, self.scale, F, get_num_threads())
        else:
            S.forward(ptr, idx, val, net._A, self.b, self.scale, F)
        E = F - self.Y[rows]
        return F, E, 0.5 * float(np.sum(E.astype(np.float64) ** 2))

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    @property
    def nbytes(self) -> int:
        """Bytes held by the engine's own structures (beyond X, y and W)."""
        return 0


class SparseEngine(Engine):
    """A step over firing pairs: subclasses provide ``detect`` and ``maintain``.

    ``detect(rows)`` returns point-major CSR pairs over the batch rows with the current
    correlations; ``maintain(neurons)`` brings the index up to date after ``net.W[neurons]``
    moved.
    """

    def detect(self, rows: np.ndarray):
        raise NotImplementedError

    def maintain(self, neurons: np.ndarray) -> None:
        raise NotImplementedError

    def step(self, lr: float, rows: np.ndarray | None = None) -> StepInfo:
        net = self.net
        if rows is None:
            rows = np.arange(self.n, dtype=np.int64)
        t0 = time.perf_counter()
        indptr, idx, val = self.detect(rows)
        t1 = time.perf_counter()
        F, E, loss = self.forward(indptr, idx, val, rows)
        t2 = time.perf_counter()
        col_ptr, prow, _ = S.transpose(indptr, idx, idx, self.m)
        pcoef = np.empty(idx.size, dtype=net.dtype)
        S.neuron_coefficients(col_ptr, prow, net._A, E, self.scale, pcoef)
        neurons = np.flatnonzero(np.diff(col_ptr))
        G = np.empty((neurons.size, net.d), dtype=net.dtype)
        S.neuron_gradient(col_ptr, prow, pcoef, neurons, self.X, rows, G)
        t3 = time.perf_counter()
        if neurons.size:
            net.W[neurons] -= net.dtype.type(lr) * G
            self.maintain(neurons)
        t4 = time.perf_counter()
        self.counters["gradient_madds"] += idx.size * net.d
        self.counters["steps"] += 1
        return StepInfo(
            loss,
            int(idx.size),
            int(neurons.size),
            dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True)),
            F,
        )
