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
from its worker (``corrtree.sharded``). Ray is an optional extra: ``pip install
'corrtree[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time

import numpy as np

from ._validation import as_positive_int, check_memory, fmt_bytes
from .engines import engine_class
from .engines.base import PHASES, StepInfo
from .model import Network, ShiftedReLUNet, _as_dtype, default_threshold

__all__ = ["Cluster", "ShardedNet", "WorkerLostError", "shard_ranges"]


class WorkerLostError(RuntimeError):
    """A worker process (or its node) died during training. ``step`` is the step that was
    running; a run folder recovers from its last checkpoint (``corrtree.run``)."""

    def __init__(self, step: int | None, cause: BaseException):
        self.step = step
        at = "" if step is None else f" at step {step}"
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"a worker was lost{at}: {first}")


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("distributed training needs Ray: pip install 'corrtree[ray]'") from None
    return ray


def shard_ranges(width: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous blocks of neurons, one per worker, sizes differing by at most one."""
    width = as_positive_int(width, "width")
    workers = as_positive_int(workers, "workers")
    if workers > width:
        raise ValueError(f"cannot split {width} neurons over {workers} workers")
    base, extra = divmod(width, workers)
    out, lo = [], 0
    for k in range(workers):
        hi = lo + base + (k < extra)
        out.append((lo, hi))
        lo = hi
    return out


class Cluster:
    """A connection to Ray. ``address`` (``"HOST:PORT"`` or ``"auto"``) joins an existing
    cluster; None starts a local one on this machine (``num_cpus`` logical CPUs), unless Ray
    is already initialised in this process, which is then used as it is. A cluster started
    here is shut down by ``shutdown()`` or on leaving a ``with`` block."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None):
        ray = _ray()
        self.address, self.owned = address, False
        if ray.is_initialized():
            return
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is not None:
            _check_reachable(address)
            try:
                ray.init(address=address, **kw)
            except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError
                raise ConnectionError(f"cannot join the Ray cluster at {address}: {e}") from None
        else:
            try:
                ray.init(num_cpus=num_cpus or os.cpu_count(), **kw)
            except Exception as e:
                raise RuntimeError(f"cannot start a local Ray cluster: {e}") from None
            self.owned = True

    @property
    def cpus(self) -> int:
        return int(_ray().cluster_resources().get("CPU", 1))

    def shutdown(self) -> None:
        if self.owned:
            _ray().shutdown()
            self.owned = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with the address, when nothing listens there (Ray itself retries for
    a long time)."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--ray-address must be HOST:PORT or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address}: {reason} (is `ray start --head` "
            "running there?)"
        ) from None


class _Shard:
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
        from .model import init_weights
        from .sharded import read_rows

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
        from .train import thread_limit

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
        from . import _io

        os.makedirs(os.path.dirname(path), exist_ok=True)
        _io.write_npz(path, W=self.net.W, a=self.net.A, lo=np.array(self.lo), hi=np.array(self.hi))
        return path

    def stats(self) -> dict:
        return self.engine.stats() if self.engine is not None else {}

    def peak_memory(self) -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _lost_errors():
    ex = _ray().exceptions
    names = ("RayActorError", "ActorUnavailableError", "ObjectLostError", "NodeDiedError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


START_TIMEOUT = float(os.environ.get("CORRTREE_WORKER_START_TIMEOUT", 120))


def _get(refs, step: int | None = None, timeout: float | None = None):
    """``ray.get`` with a worker's own exception re-raised as itself (its type and one-line
    message) and a lost worker as ``WorkerLostError``."""
    ray = _ray()
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise RuntimeError(str(e).splitlines()[0]) from None
    except _lost_errors() as e:
        raise WorkerLostError(step, e) from None


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
            _as_dtype(dtype),
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
        from . import _io
        from .sharded import read_index

        if path.endswith(".json"):
            ix = read_index(path)
            meta = (ix["d"], ix["width"], ix["n_outputs"], ix["threshold"], ix["scale"])
            dtype = np.dtype(ix["dtype"])
        else:
            st = _io.read_npz(path, "corrtree model file")
            W = st["W"]
            width = W.shape[0]
            scale = float(st["scale"]) if "scale" in st else 1 / np.sqrt(width)
            meta = (W.shape[1], width, st["a"].reshape(width, -1).shape[1], st["threshold"], scale)
            dtype = W.dtype
        self = cls.__new__(cls)
        d, width, C, b, scale = meta
        self._meta(int(d), int(width), int(C), float(b), float(scale), dtype, None)
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
        remote = ray.remote(num_cpus=cpus, max_restarts=0, scheduling_strategy="SPREAD")(_Shard)
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
            self.workers_info = _get([a.info.remote() for a in self.actors], timeout=START_TIMEOUT)
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
        return all(_get([a.finite.remote() for a in self.actors]))

    def outputs(self, X: np.ndarray) -> np.ndarray:
        ref = _ray().put(np.ascontiguousarray(X))
        parts = _get([a.outputs.remote(ref) for a in self.actors])
        out = parts[0].copy()
        for p in parts[1:]:
            out += p
        return out

    def firing_counts(self, X: np.ndarray) -> np.ndarray:
        ref = _ray().put(np.ascontiguousarray(X))
        return sum(_get([a.firing_counts.remote(ref) for a in self.actors]))

    def gather(self, max_memory: int | None = None) -> ShiftedReLUNet:
        """The whole network in this process (refused if W would not fit)."""
        need = self.width * (self.d + self.n_outputs) * self.dtype.itemsize
        check_memory(need, f"gathering a {self.width}-neuron network", max_memory)
        parts = _get([a.weights.remote() for a in self.actors])
        W = np.concatenate([p[0] for p in parts])
        A = np.concatenate([p[1] for p in parts])
        net = ShiftedReLUNet.from_weights(W, A, self.threshold, scale=self.scale)
        net.seed = self.seed
        return net

    def save(self, out: str, kind: str = "model", **meta) -> str:
        """Write the network as shards under ``out`` (each worker writes its rows) and commit
        the index ``out/kind.json``. ``out`` must be reachable by every worker (a shared
        file system on a multi-node cluster). Returns the index path."""
        from .sharded import commit_index, shard_path

        out = os.path.abspath(out)
        step = int(meta.get("step", 0))
        token = secrets.token_hex(4)
        paths = [shard_path(out, kind, step, k, token) for k in range(len(self.actors))]
        _get([a.save.remote(p) for a, p in zip(self.actors, paths, strict=True)])
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
        return _get([a.peak_memory.remote() for a in self.actors])

    def __repr__(self) -> str:
        return (
            f"ShardedNet(d={self.d}, width={self.width}, workers={len(self.ranges)}, "
            f"threshold={self.threshold:.4g}, n_outputs={self.n_outputs}, dtype={self.dtype})"
        )


class DistributedStepper:
    """The training step of ``corrtree.train`` over a ``ShardedNet``: one round trip per
    step (see the module docstring)."""

    def __init__(self, snet: ShardedNet, X, Y, engine, options, lr, threads, max_memory):
        ray = _ray()
        self.snet, self.Y, self.lr = snet, Y, lr
        if threads is None:
            threads = max(1, snet.cluster.cpus // snet.workers)
        if max_memory is None and os.environ.get("CORRTREE_MAX_MEMORY"):
            # the driver's limit holds on every worker, whatever environment they started in
            max_memory = int(float(os.environ["CORRTREE_MAX_MEMORY"]))
        t0 = time.perf_counter()
        self.X_ref = ray.put(X)
        setup = _get(
            [a.setup.remote(self.X_ref, engine, options, threads, max_memory) for a in snet.actors]
        )
        self.preprocess_seconds = time.perf_counter() - t0
        self.engine = setup[0]["engine"]
        self.pending = None  # (rows, F, pairs, seconds) of the batch already detected
        self.communication_seconds = 0.0
        self._ahead_spent = 0.0  # detect + forward of the pending batch, done last call
        self.shard_nbytes = [s["nbytes"] for s in setup]

    def _sum(self, results):
        F = None if results[0][0] is None else results[0][0].copy()
        for r in results[1:]:  # fixed order: shard 0, 1, ...
            if F is not None:
                F += r[0]
        seconds = {p: max(r[3][p] for r in results) for p in PHASES}
        return F, sum(r[1] for r in results), sum(r[2] for r in results), seconds

    def step(self, t: int, rows, next_rows, has_next: bool) -> StepInfo:
        actors, lr = self.snet.actors, self.lr
        t0 = time.perf_counter()
        if self.pending is None or not _same(self.pending[0], rows):
            self._ahead_spent = 0.0
            F, pairs, _, sec = self._sum(
                _get([a.advance.remote(None, lr, rows, True) for a in actors], t)
            )
        else:
            _, F, pairs, sec = self.pending
        E = F - (self.Y if rows is None else self.Y[rows])
        e64 = E.ravel().astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            loss = 0.5 * float(np.dot(e64, e64))
        F_next, next_pairs, moved, sec2 = self._sum(
            _get([a.advance.remote(E, lr, next_rows, has_next) for a in actors], t)
        )
        wall = time.perf_counter() - t0
        # This step: its detect and forward (from the call before, or the first call above)
        # and its backward and maintenance; the next batch's detect and forward belong to
        # the next step.
        ahead = {p: sec2[p] if p in ("detect", "forward") else 0.0 for p in PHASES}
        seconds = {p: sec[p] if p in ("detect", "forward") else sec2[p] for p in PHASES}
        self.communication_seconds += max(
            0.0, wall - sum(seconds.values()) - sum(ahead.values()) + self._ahead_spent
        )
        self._ahead_spent = sum(ahead.values()) if has_next else 0.0
        self.pending = (next_rows, F_next, next_pairs, ahead) if has_next else None
        return StepInfo(loss, pairs, moved, seconds, F, rows)

    def finite(self) -> bool:
        return self.snet.finite()

    def stats(self) -> dict:
        per = _get([a.stats.remote() for a in self.snet.actors])
        out: dict = {}
        for s in per:
            for k, v in s.items():
                out[k] = out.get(k, 0) + v
        out["steps"] = per[0].get("steps", 0)
        out["workers"] = self.snet.workers
        out["communication_us"] = int(1e6 * self.communication_seconds)
        return out

    def describe_memory(self) -> str:
        return ", ".join(fmt_bytes(b) for b in self.shard_nbytes)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))
