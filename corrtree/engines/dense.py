"""The dense reference: every pair, BLAS matrix products. The oracle for every other engine."""

from __future__ import annotations

import time

import numpy as np

from .base import PHASES, Engine, StepInfo


class DenseEngine(Engine):
    """Theta(n m d) per step: Z = X W^T, mask Z > b, forward, gradient, all dense. Points are
    processed in blocks so that the (block, m) temporaries stay near ``block_bytes``."""

    name = "dense"

    def __init__(self, net, X, Y, *, block_bytes: int = 1 << 30, **kwargs):
        super().__init__(net, X, Y)
        self.block = max(1, block_bytes // (4 * max(1, self.m) * net.dtype.itemsize))

    def step(self, lr: float, rows: np.ndarray | None = None) -> StepInfo:
        net = self.net
        X = self.X if rows is None else self.X[rows]
        Y = self.Y if rows is None else self.Y[rows]
        R = X.shape[0]
        seconds = dict.fromkeys(PHASES, 0.0)
        F = np.empty((R, net.n_outputs), dtype=net.dtype)
        G = None
        fired = np.zeros(self.m, dtype=bool)
        pairs = 0
        loss = 0.0
        for lo in range(0, max(R, 1), self.block):
            Xb, Yb = X[lo : lo + self.block], Y[lo : lo + self.block]
            t0 = time.perf_counter()
            Z = Xb @ net.W.T
            mask = Z > self.b
            t1 = time.perf_counter()
            H = np.where(mask, Z - self.b, 0).astype(net.dtype, copy=False)
            Fb = (H @ net._A) * self.scale
            E = Fb - Yb
            F[lo : lo + self.block] = Fb
            loss += 0.5 * float(np.sum(E.astype(np.float64) ** 2))
            t2 = time.perf_counter()
            coef = np.where(mask, (E @ net._A.T) * self.scale, 0).astype(net.dtype, copy=False)
            part = coef.T @ Xb
            if G is None:
                G = part
            else:
                G += part
            fired |= mask.any(axis=0)
            pairs += int(np.count_nonzero(mask))
            t3 = time.perf_counter()
            for p, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2), strict=False):
                seconds[p] += dt
        t3 = time.perf_counter()
        net.W -= net.dtype.type(lr) * G
        seconds["maintain"] = time.perf_counter() - t3
        self.counters["inner_products"] += R * self.m
        self.counters["gradient_madds"] += R * self.m * net.d
        self.counters["steps"] += 1
        return StepInfo(loss, pairs, int(fired.sum()), seconds, F)
