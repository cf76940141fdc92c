"""The Ray side of distributed training: joining or starting a cluster, calls to workers
that fail with the worker's own error, and the blocks of neurons each worker owns."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys

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
    here is shut down by ``shutdown()`` or on leaving a ``with`` block. ``notices=False``
    keeps Ray's own warnings (such as its token-authentication notice) off stderr."""

    def __init__(
        self, address: str | None = None, *, num_cpus: int | None = None, notices: bool = True
    ):
        ray = _ray()
        if not notices:
            logging.getLogger("ray").setLevel(logging.ERROR)
        self.address, self.owned, self._reaper = address, False, None
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
            self._reaper = _start_reaper(ray)
        _restore(handlers)  # Ray installs its own; the caller's (the command line's) win

    @property
    def cpus(self) -> int:
        return int(_ray().cluster_resources().get("CPU", 1))

    def shutdown(self) -> None:
        if self.owned:
            _ray().shutdown()
            self.owned = False
        if self._reaper is not None:  # it now stops whatever Ray left running
            self._reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
            self._reaper = None

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


# The reaper of a local cluster: a small process that watches the processes Ray started
# for this driver (GCS, raylet, monitors) and everything they start (agents, workers) and
# kills what is left of them when the driver ends, however it ends: its stdin is a pipe
# only the driver holds, which reads EOF when the driver exits, even killed (SIGKILL). Ray's
# own helpers otherwise outlive a killed driver by a minute or more. A process is killed
# only if it is still the one seen (same start time in /proc), never a reused pid.
_REAPER = r"""
import os, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
roots = {int(p) for p in sys.argv[1:]}

def table():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(name)] = (int(rest[1]), rest[19])  # parent, start time
    return out

def tree(procs):
    kids = {}
    for pid, (parent, _) in procs.items():
        kids.setdefault(parent, []).append(pid)
    found, todo = {}, [p for p in roots if p in procs]
    while todo:
        pid = todo.pop()
        found[pid] = procs[pid][1]
        todo.extend(kids.get(pid, ()))
    return found

seen = {}
while not select.select([sys.stdin], [], [], 1.0)[0]:
    seen.update(tree(table()))
procs = table()
seen.update(tree(procs))
for pid, start in seen.items():
    if procs.get(pid, (None, None))[1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def _start_reaper(ray) -> subprocess.Popen | None:
    """The reaper of the local cluster just started (Linux; None where there is no /proc
    or Ray does not say which processes it started)."""
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    started = getattr(node, "all_processes", None)
    if not started or not os.path.isdir("/proc/self"):
        return None
    pids = [str(info.process.pid) for infos in started.values() for info in infos]
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, *pids],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C at the terminal reaches the driver, not it
    )


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
