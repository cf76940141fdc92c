"""The Ray side of distributed training: joining or starting a cluster, calls to workers
that fail with the worker's own error, and the blocks of neurons each worker owns."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

from .._validation import as_positive_int
from ..training.step import StepperLost

__all__ = ["Cluster", "WorkerLostError", "call", "shard_ranges"]


class WorkerLostError(StepperLost):
    """A worker process (or its node) died during training. ``step`` is the step that was
    running; a run folder recovers from its last checkpoint (``corrtree.app.run``)."""

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
        handlers = _signal_handlers()
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
        _restore(handlers)  # Ray installs its own; the caller's (the command line's) win

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


def _signal_handlers() -> dict:
    try:
        return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:
        return {}


def _restore(handlers: dict) -> None:
    for s, h in handlers.items():
        if h is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(s, h)


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


def _lost_errors():
    ex = _ray().exceptions
    names = ("RayActorError", "ActorUnavailableError", "ObjectLostError", "NodeDiedError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


START_TIMEOUT = float(os.environ.get("CORRTREE_WORKER_START_TIMEOUT", 120))


def call(refs, step: int | None = None, timeout: float | None = None):
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
