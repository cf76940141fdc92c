"""What a benchmark times: corrtree's engines through the training step, and the dense
baselines written the way a competent user writes them (preallocated buffers, in-place
operations, no full-size temporaries), in NumPy and in PyTorch.

Every method has ``step(lr, rows=None) -> StepInfo``, ``stats()`` and ``nbytes``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
from threadpoolctl import threadpool_limits

from corrtree.engines import StepInfo
from corrtree.training import thread_limit
from corrtree.training.step import EngineStepper, Plan

BASELINES = ("numpy-tight", "torch-tight")


def method_threads(name: str, threads: int):
    """The context a method runs in with ``threads`` threads: corrtree's engines under
    ``thread_limit`` (numba and corrtree's product threads, BLAS single-threaded); the NumPy
    baseline with BLAS on ``threads`` threads, as a user runs it; PyTorch with its own pool
    (``torch.set_num_threads``, set by the benchmark)."""
    if name == "numpy-tight":
        return threadpool_limits(limits=threads, user_api="blas")
    if name == "torch-tight":
        return nullcontext()
    return thread_limit(threads)


class EngineMethod(EngineStepper):
    """A corrtree engine driven by the training loop's stepper, step by step (its threads set
    by ``method_threads``)."""

    def __init__(self, engine, net, X, Y, options=None):
        super().__init__(net, X, Y, Plan(lr=0.0, engine=engine, engine_options=options))

    def running(self):
        return nullcontext()

    def step(self, lr, rows=None):
        return self.advance(lr, rows)

    @property
    def nbytes(self):
        return self.engine.nbytes


class _TightDense:
    """Shared by both tight baselines: buffers sized for the largest batch seen."""

    nbytes = 0

    def stats(self):
        return {}

    def _info(self, loss, t0, F):
        secs = time.perf_counter() - t0
        # The tight step counts nothing: pairs and moved neurons are not its business.
        return StepInfo(
            loss, -1, -1, {"detect": secs, "forward": 0.0, "backward": 0.0, "maintain": 0.0}, F
        )


class NumpyTight(_TightDense):
    """Dense GD/SGD in NumPy: Z = X_B W^T into a kept buffer, then in place
    H = max(Z - b, 0), F = scale H A, coefficients sign(H) * scale E A^T, G = C^T X_B,
    W -= lr G."""

    name = "numpy-tight"

    def __init__(self, net, X, Y):
        self.W, self.A, self.X, self.Y = net.W, net.A, X, Y
        self.b = net.dtype.type(net.threshold)
        self.aT = np.ascontiguousarray((net.A * net.dtype.type(net.scale)).T)  # (C, m)
        self.Z = np.empty((0, net.width), dtype=net.dtype)
        self.G = np.empty_like(net.W)
        self.T = None

    def step(self, lr, rows=None):
        t0 = time.perf_counter()
        X, Y = (self.X, self.Y) if rows is None else (self.X[rows], self.Y[rows])
        R = X.shape[0]
        if self.Z.shape[0] < R:
            self.Z = np.empty((R, self.W.shape[0]), dtype=self.W.dtype)
        Z = np.matmul(X, self.W.T, out=self.Z[:R])
        Z -= self.b
        np.maximum(Z, 0, out=Z)
        F = Z @ self.aT.T
        E = F - Y
        loss = 0.5 * float(np.sum(E.astype(np.float64) ** 2))
        np.sign(Z, out=Z)
        if E.shape[1] == 1:
            Z *= E
            Z *= self.aT[0]
        else:
            if self.T is None or self.T.shape[0] < R:
                self.T = np.empty_like(self.Z)
            Z *= np.matmul(E, self.aT, out=self.T[:R])
        np.matmul(Z.T, X, out=self.G)
        self.G *= self.W.dtype.type(lr)
        self.W -= self.G
        return self._info(loss, t0, F)


class TorchTight(_TightDense):
    """The same step in PyTorch on the CPU (shares memory with the network's W):
    ``torch.matmul(X, W.T, out=Z)``, ``Z.sub_(b).clamp_(min=0)``, ``F = Z @ A_s``,
    ``Z.sign_().mul_(E).mul_(a_s)``, ``torch.matmul(Z.T, X, out=G)``, ``W.sub_(G, alpha=lr)``."""

    name = "torch-tight"

    def __init__(self, net, X, Y):
        import torch

        self.torch = torch
        self.W = torch.from_numpy(net.W)
        self.As = torch.from_numpy(np.ascontiguousarray(net.A * net.dtype.type(net.scale)))
        self.aT = self.As.T.contiguous()
        self.X, self.Y = torch.from_numpy(X), torch.from_numpy(Y)
        self.b = float(net.threshold)
        self.Z = torch.empty((0, net.width), dtype=self.W.dtype)
        self.G = torch.empty_like(self.W)
        self.T = None

    def step(self, lr, rows=None):
        torch = self.torch
        t0 = time.perf_counter()
        with torch.no_grad():
            if rows is None:
                X, Y = self.X, self.Y
            else:
                idx = torch.from_numpy(rows)
                X, Y = self.X.index_select(0, idx), self.Y.index_select(0, idx)
            R = X.shape[0]
            if self.Z.shape[0] < R:
                self.Z = torch.empty((R, self.W.shape[0]), dtype=self.W.dtype)
            Z = self.Z[:R]
            torch.matmul(X, self.W.T, out=Z)
            Z.sub_(self.b).clamp_(min=0)
            F = Z @ self.As
            E = F - Y
            loss = 0.5 * float((E.double() ** 2).sum())
            Z.sign_()
            if E.shape[1] == 1:
                Z.mul_(E).mul_(self.aT[0])
            else:
                if self.T is None or self.T.shape[0] < R:
                    self.T = torch.empty_like(self.Z)
                Z.mul_(torch.matmul(E, self.aT, out=self.T[:R]))
            torch.matmul(Z.T, X, out=self.G)
            self.W.sub_(self.G, alpha=lr)
        return self._info(loss, t0, F.numpy())


def make_method(name, net, X, Y, options=None):
    """A baseline (``numpy-tight``, ``torch-tight``), an approximate LSH engine
    (``lsh-simhash``, ``lsh-dwta``) or a corrtree engine by name (with its ``options``)."""
    if name == "numpy-tight":
        return NumpyTight(net, X, Y)
    if name == "torch-tight":
        return TorchTight(net, X, Y)
    if name.startswith("lsh-"):
        return EngineMethod("lsh", net, X, Y, {"hash": name[4:]})
    return EngineMethod(name, net, X, Y, options)
