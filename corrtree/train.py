"""The training loop: full-batch gradient descent or mini-batch SGD with any engine."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from ._validation import as_positive_int, as_scalar
from .engines import make_engine
from .engines.base import PHASES

__all__ = ["History", "auto_lr", "batch_schedule", "train"]


@dataclass
class History:
    """Per-step record of a training run. ``loss[t]`` is the loss of the batch used by step
    ``t`` at the weights before that step (the whole training set for full-batch GD)."""

    engine: str
    batch_size: int | None = None
    preprocess_seconds: float = 0.0
    loss: list[float] = field(default_factory=list)
    fired_pairs: list[int] = field(default_factory=list)
    changed_neurons: list[int] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.loss)

    def append(self, info) -> None:
        self.loss.append(info.loss)
        self.fired_pairs.append(info.fired_pairs)
        self.changed_neurons.append(info.changed_neurons)
        for p in PHASES:
            self.seconds[p].append(info.seconds[p])

    def as_dict(self) -> dict:
        return asdict(self)


def auto_lr(n: int, batch_size: int | None) -> float:
    """Default step size. The loss is a sum over the batch, so the largest stable step shrinks
    like 1 / batch; 400 / batch trains unit-norm inputs at the default threshold steadily
    (checked on Fashion-MNIST, where 1000 / batch oscillates)."""
    return 400.0 / min(n, batch_size or n)


def batch_schedule(
    n: int, batch_size: int | None, steps: int, seed: int = 0, start: int = 0
) -> Iterator[np.ndarray | None]:
    """Row indices of each step's batch: None for full batch; otherwise epochs of a seeded
    permutation cut into consecutive batches (the last one of an epoch may be smaller).
    ``start`` skips that many steps, so a resumed run sees the same batches."""
    if batch_size is None or batch_size >= n:
        for _ in range(start, steps):
            yield None
        return
    per_epoch = math.ceil(n / batch_size)
    rng = np.random.default_rng(seed)
    epoch = -1
    perm = None
    for t in range(steps):
        e, k = divmod(t, per_epoch)
        while epoch < e:
            perm = rng.permutation(n)
            epoch += 1
        if t >= start:
            yield np.sort(perm[k * batch_size : (k + 1) * batch_size]).astype(np.int64)


@contextmanager
def thread_limit(threads: int | None):
    """Limit numba and BLAS threads inside the block (None leaves them as they are)."""
    if threads is None:
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits

    threads = as_positive_int(threads, "threads")
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        numba.set_num_threads(old)


def train(
    net,
    X,
    y,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float,
    engine: str = "dense",
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    callback: Callable | None = None,
    progress: bool = False,
    max_memory: int | None = None,
    start_step: int = 0,
) -> History:
    """Train ``net`` (in place) on (X, y) and return its ``History``.

    Give ``steps`` or ``epochs`` (an epoch is ceil(n / batch_size) steps; one step for full
    batch). ``engine`` is one of ``corrtree.ENGINES``. ``callback(t, net, info)`` runs after
    each step. ``start_step`` resumes a schedule part way (the batches stay the same).
    """
    X = net.check_X(X)
    Y = net.check_y(y, X.shape[0])
    n = X.shape[0]
    lr = as_scalar(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size is not None:
        batch_size = as_positive_int(batch_size, "batch_size")
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps and epochs")
    if epochs is not None:
        per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
        steps = as_positive_int(epochs, "epochs") * per_epoch
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    hist = History(engine=engine, batch_size=batch_size)
    with thread_limit(threads):
        t0 = time.perf_counter()
        eng = make_engine(engine, net, X, Y, max_memory=max_memory)
        hist.preprocess_seconds = time.perf_counter() - t0
        hist.engine = eng.name
        batches = batch_schedule(n, batch_size, steps, seed, start_step)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps - start_step, desc=f"train [{engine}]", unit="step")
        try:
            for t, rows in enumerate(batches, start=start_step):
                info = eng.step(lr, rows)
                info.rows = rows
                hist.append(info)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{info.loss:.4g}",
                        fired=info.fired_pairs,
                        changed=info.changed_neurons,
                        refresh=False,
                    )
                    bar.update()
                if callback is not None:
                    callback(t, net, info)
        finally:
            if bar is not None:
                bar.close()
    hist.stats = eng.stats()
    return hist
