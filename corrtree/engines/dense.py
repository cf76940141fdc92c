"""The dense reference: every pair, BLAS matrix products. The oracle for every other engine."""

from __future__ import annotations

import time

import numpy as np

from .base import PHASES, Engine, StepInfo


class DenseEngine(Engine):
    """Theta(n m d) per step: Z = X W^T, mask Z > b, forward, gradient, all dense."""

    name = "dense"

    def step(self, lr: float, rows: np.ndarray | None = None) -> StepInfo:
        net = self.net
        X = self.X if rows is None else self.X[rows]
        Y = self.Y if rows is None else self.Y[rows]
        t0 = time.perf_counter()
        Z = X @ net.W.T
        mask = Z > self.b
        t1 = time.perf_counter()
        H = np.where(mask, Z - self.b, 0).astype(net.dtype, copy=False)
        F = (H @ net._A) * self.scale
        E = F - Y
        loss = 0.5 * float(np.sum(E.astype(np.float64) ** 2))
        t2 = time.perf_counter()
        coef = np.where(mask, (E @ net._A.T) * self.scale, 0).astype(net.dtype, copy=False)
        G = coef.T @ X
        changed = int(mask.any(axis=0).sum())
        t3 = time.perf_counter()
        net.W -= net.dtype.type(lr) * G
        t4 = time.perf_counter()
        pairs = int(mask.sum())
        self.counters["inner_products"] += Z.size
        self.counters["gradient_madds"] += Z.size * net.d
        self.counters["steps"] += 1
        return StepInfo(
            loss,
            pairs,
            changed,
            dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True)),
            F,
        )
