"""Exact training with the neurons of one network sharded across a Ray cluster.

f(x) = scale * sum_r a_r max(<w_r, x> - b, 0) is a sum over neurons, and neuron r's gradient
needs only its own firing pairs and the residuals E = F - Y. So worker k owns a block of
neurons (its rows of W and A, an engine and its index over all n points), and one step is:

    every worker: the partial outputs F_k of the batch       (detect + forward)
    driver:       F = F_0 + F_1 + ... (in shard order), E = F - Y, the loss
    every worker: backward with E, maintenance, then F_k of the next batch

which is one round trip per step (the backward of step t and the forward of step t + 1 travel
in the same call), carrying O(batch x outputs) numbers whatever m and d are. The reduction
order is fixed, so a distributed run is deterministic, and it equals the single-process run
to rounding (the test suite checks 1e-12 in float64 after every step).

The weight matrix never has to exist on the driver: ``ShardedNet`` initialises each block on
its worker (``init_weights`` makes any block reproducible on its own), and saves each block
from its worker (``corrtree.nets.store``). Ray is an optional extra: ``pip install
'corrtree[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import secrets

import numpy as np

from .._validation import as_positive_int, check_memory
from ..nets import Network, ShiftedReLUNet, as_dtype, default_threshold
from ..nets.store import commit_index, read_meta, shard_path
from .cluster import START_TIMEOUT, Cluster, _ray, call, shard_ranges
from .worker import Shard

__all__ = ["ShardedNet"]


class ShardedNet(Network):
    """A ``ShiftedReLUNet`` whose neurons live in blocks on Ray workers (actors).

    ``ShardedNet(d, width, threshold, seed, dtype, n_outputs, workers=4)`` initialises each
    block on its worker, exactly as ``ShiftedReLUNet`` with the same seed would (see
    ``init_weights``): the whole W is never built on the driver. ``from_net`` ships an
    existing network's rows, ``load`` reads a saved model (sharded index or ``.npz``), each
    worker reading only its rows. ``cluster``: a ``Cluster`` (default: Ray as initialised in
    this process, else a local cluster). Train with ``corrtree.train(sharded_net, X, y, ...)``.
    """

    def __init__(
        self,
        d: int,
        width: int,
        threshold: float | None = None,
        seed: int = 0,
        dtype=np.float64,
        n_outputs: int = 1,
        *,
        workers: int = 2,
        cluster: Cluster | None = None,
    ):
        width = as_positive_int(width, "width")
        self._meta(
            as_positive_int(d, "d"),
            width,
            as_positive_int(n_outputs, "n_outputs"),
            default_threshold(width) if threshold is None else float(threshold),
            1 / np.sqrt(width),
            as_dtype(dtype),
            seed,
        )
        self._start(workers, cluster, source=None)

    def _meta(self, d, width, n_outputs, threshold, scale, dtype, seed) -> None:
        if threshold < 0 or not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        self.d, self.width, self.n_outputs = d, width, n_outputs
        self.threshold, self.scale, self.dtype, self.seed = threshold, float(scale), dtype, seed
        self.actors, self.ranges, self.cluster = [], [], None

    @classmethod
    def from_net(cls, net: ShiftedReLUNet, workers: int = 2, cluster=None) -> ShardedNet:
        """The network ``net`` split over ``workers`` workers (its rows are sent to them)."""
        self = cls.__new__(cls)
        self._meta(net.d, net.width, net.n_outputs, net.threshold, net.scale, net.dtype, net.seed)
        self._start(workers, cluster, net=net)
        return self

    @classmethod
    def load(cls, path: str, workers: int = 2, cluster=None) -> ShardedNet:
        """A saved model (``model.json``/``checkpoint.json`` index, or ``.npz``) split over
        ``workers`` workers, each reading its own rows from the files."""
        m = read_meta(path)
        self = cls.__new__(cls)
        self._meta(
            int(m["d"]),
            int(m["width"]),
            int(m["n_outputs"]),
            float(m["threshold"]),
            float(m["scale"]),
            m["dtype"],
            None,
        )
        self._start(workers, cluster, source=os.path.abspath(path))
        return self

    # --- workers ------------------------------------------------------------------------
    def _start(self, workers, cluster, source=None, net=None) -> None:
        ray = _ray()
        self.cluster = cluster if cluster is not None else Cluster()
        self.ranges = shard_ranges(self.width, workers)
        self._source = source
        # One CPU per worker, or an equal part of the cluster's when it has fewer.
        cpus = min(1.0, self.cluster.cpus / len(self.ranges))
        remote = ray.remote(num_cpus=cpus, max_restarts=0, scheduling_strategy="SPREAD")(Shard)
        self.actors = []
        for lo, hi in self.ranges:
            spec = {
                "lo": lo,
                "hi": hi,
                "d": self.d,
                "n_outputs": self.n_outputs,
                "threshold": self.threshold,
                "scale": self.scale,
                "dtype": self.dtype.name,
                "seed": self.seed,
                "source": source,
            }
            weights = None if net is None else (net.W[lo:hi], net.A[lo:hi])
            self.actors.append(remote.remote(spec, weights))
        try:
            self.workers_info = call([a.info.remote() for a in self.actors], timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise RuntimeError(
                f"{len(self.ranges)} workers did not start within {START_TIMEOUT:.0f} s on a "
                f"cluster with {self.cluster.cpus} CPUs (ray status shows what it has)"
            ) from None
        except BaseException:
            self.close()
            raise

    def restore(self, source: str | None) -> None:
        """Replace every worker by a fresh one holding the weights of ``source`` (a saved
        model or checkpoint) or, with None, the seeded initialisation."""
        if source is None and self.seed is None:
            raise ValueError("no checkpoint to restore from and no seed to initialise from")
        self.close()
        self._start(len(self.ranges), self.cluster, source=source)

    def close(self) -> None:
        """Stop the workers (their weights are lost unless saved)."""
        if self.actors:
            ray = _ray()
            for a in self.actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)
        self.actors = []

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.workers_info]

    @property
    def workers(self) -> int:
        return len(self.ranges)

    # --- the network's interface --------------------------------------------------------
    sharded = True

    @property
    def thresholds(self) -> tuple[float]:
        return (self.threshold,)

    def validate(self) -> None:
        if not self.actors:
            raise RuntimeError("this ShardedNet has no workers (it was closed)")

    def finite(self) -> bool:
        return all(call([a.finite.remote() for a in self.actors]))

    def outputs(self, X: np.ndarray) -> np.ndarray:
        ref = _ray().put(np.ascontiguousarray(X))
        parts = call([a.outputs.remote(ref) for a in self.actors])
        out = parts[0].copy()
        for p in parts[1:]:
            out += p
        return out

    def firing_counts(self, X: np.ndarray) -> np.ndarray:
        ref = _ray().put(np.ascontiguousarray(X))
        return sum(call([a.firing_counts.remote(ref) for a in self.actors]))

    def gather(self, max_memory: int | None = None) -> ShiftedReLUNet:
        """The whole network in this process (refused if W would not fit)."""
        need = self.width * (self.d + self.n_outputs) * self.dtype.itemsize
        check_memory(need, f"gathering a {self.width}-neuron network", max_memory)
        parts = call([a.weights.remote() for a in self.actors])
        W = np.concatenate([p[0] for p in parts])
        A = np.concatenate([p[1] for p in parts])
        net = ShiftedReLUNet.from_weights(W, A, self.threshold, scale=self.scale)
        net.seed = self.seed
        return net

    def save(self, out: str, kind: str = "model", **meta) -> str:
        """Write the network as shards under ``out`` (each worker writes its rows) and commit
        the index ``out/kind.json``. ``out`` must be reachable by every worker (a shared
        file system on a multi-node cluster). Returns the index path."""
        out = os.path.abspath(out)
        step = int(meta.get("step", 0))
        token = secrets.token_hex(4)
        paths = [shard_path(out, kind, step, k, token) for k in range(len(self.actors))]
        call([a.save.remote(p) for a, p in zip(self.actors, paths, strict=True)])
        shards = [
            {"file": os.path.relpath(p, out), "lo": lo, "hi": hi}
            for p, (lo, hi) in zip(paths, self.ranges, strict=True)
        ]
        return commit_index(out, kind, {**self.describe(), **meta}, shards)

    def describe(self) -> dict:
        return {
            "d": self.d,
            "width": self.width,
            "n_outputs": self.n_outputs,
            "threshold": self.threshold,
            "scale": self.scale,
            "dtype": self.dtype.name,
        }

    def peak_memory(self) -> list[int]:
        """Peak resident memory of each worker process, in bytes."""
        return call([a.peak_memory.remote() for a in self.actors])

    def __repr__(self) -> str:
        return (
            f"ShardedNet(d={self.d}, width={self.width}, workers={len(self.ranges)}, "
            f"threshold={self.threshold:.4g}, n_outputs={self.n_outputs}, dtype={self.dtype})"
        )
