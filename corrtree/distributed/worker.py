"""A Ray worker (actor) of distributed training: one block of neurons of the network, its
engine and its index over all points."""

from __future__ import annotations

import contextlib
import os
import resource
import time

import numpy as np

from .._blas import thread_limit
from .._validation import check_memory
from ..engines import engine_class
from ..engines.base import PHASES
from ..nets import ShiftedReLUNet, init_weights
from ..nets.store import read_rows, write_shard

__all__ = ["Shard"]


class Shard:
    """One worker: a block of neurons [lo, hi) as a ``ShiftedReLUNet`` and its engine."""

    def __init__(self, spec: dict, weights=None):
        # An error here would kill the actor and reach the driver only as text; keep it and
        # raise it from ``info`` (the first call) with its own type and message.
        self.failed = None
        try:
            self._load(spec, weights)
        except Exception as e:
            self.failed = e

    def _load(self, spec: dict, weights) -> None:
        self.lo, self.hi = spec["lo"], spec["hi"]
        dtype = np.dtype(spec["dtype"])
        if weights is not None:
            W, A = (np.array(a, dtype=dtype, order="C") for a in weights)
        elif spec.get("source"):
            W, A = read_rows(spec["source"], self.lo, self.hi)
        else:
            W, A = init_weights(
                spec["d"],
                (self.lo, self.hi),
                n_outputs=spec["n_outputs"],
                seed=spec["seed"],
                dtype=dtype,
            )
        self.net = ShiftedReLUNet.from_weights(W, A, spec["threshold"], scale=spec["scale"])
        self.engine, self.firing, self.threads = None, None, 1

    @contextlib.contextmanager
    def _context(self):
        with thread_limit(self.threads), np.errstate(over="ignore", invalid="ignore"):
            yield

    def info(self) -> dict:
        import ray

        if self.failed is not None:
            raise self.failed

        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "lo": self.lo,
            "hi": self.hi,
        }

    def setup(self, X, engine, options, threads, max_memory) -> dict:
        net = self.net
        cls = engine_class(engine, X.shape[0], net.width)
        own = cls.estimate_bytes(
            X.shape[0],
            net.width,
            net.d,
            dtype=net.dtype,
            n_outputs=net.n_outputs,
            options=options,
        )
        check_memory(
            own + net.W.nbytes + net.A.nbytes,
            f"worker for neurons [{self.lo}, {self.hi}) with engine {cls.name!r}",
            max_memory,
        )
        self.threads = threads
        with self._context():
            t0 = time.perf_counter()
            self.engine = cls(net, X, options, max_memory=max_memory)
            seconds = time.perf_counter() - t0
        self.firing = None
        return {"engine": cls.name, "seconds": seconds, "nbytes": self.engine.nbytes}

    def advance(self, E, lr, rows, detect: bool):
        """Finish the pending step with the residuals E (if given), then detect and forward
        the next batch (if ``detect``): (F, pairs, moved, seconds)."""
        eng, seconds, moved = self.engine, dict.fromkeys(PHASES, 0.0), 0
        with self._context():
            if E is not None:
                t0 = time.perf_counter()
                mv = eng.backward(self.firing, E, lr)
                t1 = time.perf_counter()
                eng.maintain(mv)
                seconds["backward"] = t1 - t0
                seconds["maintain"] = time.perf_counter() - t1
                moved = int(mv.size)
                self.firing = None
            if not detect:
                return None, 0, moved, seconds
            t0 = time.perf_counter()
            self.firing = eng.detect(rows)
            t1 = time.perf_counter()
            F = eng.forward(self.firing)
            seconds["detect"] = t1 - t0
            seconds["forward"] = time.perf_counter() - t1
        return F, self.firing.pairs, moved, seconds

    def outputs(self, X) -> np.ndarray:
        with self._context():
            return self.net.outputs(X)

    def firing_counts(self, X) -> np.ndarray:
        with self._context():
            return self.net.firing_counts(X)

    def finite(self) -> bool:
        return self.net.finite()

    def weights(self):
        return self.net.W, self.net.A

    def save(self, path: str) -> str:
        return write_shard(path, self.net.W, self.net.A, self.lo, self.hi)

    def stats(self) -> dict:
        return self.engine.stats() if self.engine is not None else {}

    def peak_memory(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
