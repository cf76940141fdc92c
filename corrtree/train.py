"""The training loop: full-batch gradient descent or mini-batch SGD with any engine."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from ._validation import as_positive_int, as_scalar
from .engines import engine_class
from .engines.base import PHASES, Engine, StepInfo

__all__ = ["DivergenceError", "History", "auto_lr", "batch_schedule", "take_step", "train"]


class DivergenceError(FloatingPointError):
    """Training produced non-finite outputs, loss or weights (the step size is too large for
    the data's scale). ``step`` is the step at which it was seen, ``last_loss`` the last
    finite loss."""

    def __init__(self, step: int, what: str, last_loss: float | None):
        self.step, self.last_loss = step, last_loss
        last = "none" if last_loss is None else f"{last_loss:.6g}"
        super().__init__(
            f"training diverged at step {step}: {what} (last finite loss {last}); lower the "
            "learning rate (--lr) and keep inputs normalised"
        )


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


def auto_lr(n: int, batch_size: int | None, threshold: float, depth: int = 1) -> float:
    """Default step size: 2 / (B p L), with B the batch (n for full batch), p = P(z > b)
    the firing fraction at initialisation for unit-norm inputs, and L the number of trained
    layers (1 for the paper's network).

    The loss is a sum over the batch, and the largest eigenvalue of the network's kernel on
    a batch is at most its trace, B p for unit-norm inputs, so a step of 2 / (B p) cannot
    overshoot by more than a factor 2 along any direction of the linearised dynamics. In
    20-step sweeps on digits and on Fashion-MNIST (2000 images) at m = 2^10 .. 2^16, 2 / (B p)
    decreased the loss at every step everywhere; 4 / (B p) oscillated on digits at
    m <= 2^12 (docs/engines.md). The paper-scale benchmarks set their own (400 / B). Each
    trained layer adds a term of about the same size to the kernel (with the initialisation of
    ``corrtree.deep``), hence the 1 / L: on digits, 60 SGD steps of batch 256, widths
    (512, 256) and (2048, 1024), 2 / (B p L) reached 95.7% and 99.0% training accuracy;
    twice that diverged on (512, 256) (docs/deep.md)."""
    if n < 1:
        raise ValueError(f"cannot choose a learning rate for {n} points")
    from .model import firing_probability

    p = max(firing_probability(threshold), 1e-12)
    return 2.0 / (min(n, batch_size or n) * p * as_positive_int(depth, "depth"))


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


def take_step(engines, Y: np.ndarray, lr: float, rows: np.ndarray | None = None) -> StepInfo:
    """One gradient step of the engines (one engine, or several over disjoint blocks of
    neurons of one network) on the batch ``rows`` (None: all points): their partial outputs
    summed in the given order, the residuals E = F - Y, the loss, then every engine's
    backward pass with E and its maintenance. Returns the step's ``StepInfo``."""
    engines = (engines,) if isinstance(engines, Engine) else tuple(engines)
    seconds = dict.fromkeys(PHASES, 0.0)
    t0 = time.perf_counter()
    firing = [e.detect(rows) for e in engines]
    t1 = time.perf_counter()
    F = engines[0].forward(firing[0])
    for e, f in zip(engines[1:], firing[1:], strict=True):
        F += e.forward(f)
    E = F - (Y if rows is None else Y[rows])
    e64 = E.ravel().astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is divergence, seen later
        loss = 0.5 * float(np.dot(e64, e64))
    t2 = time.perf_counter()
    moved = [e.backward(f, E, lr) for e, f in zip(engines, firing, strict=True)]
    t3 = time.perf_counter()
    for e, mv in zip(engines, moved, strict=True):
        e.maintain(mv)
    t4 = time.perf_counter()
    for p, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
        seconds[p] = dt
    return StepInfo(
        loss,
        sum(f.pairs for f in firing),
        sum(int(mv.size) for mv in moved),
        seconds,
        F,
        rows,
    )


@contextmanager
def thread_limit(threads: int | None):
    """Run corrtree's work on ``threads`` threads (None: numba's current count): numba's
    kernels, and large products split by corrtree over its own threads while the BLAS
    library runs single-threaded (``corrtree._blas``), so that idle BLAS threads never spin
    on the cores the kernels need, whatever the import order."""
    import numba

    from ._blas import split_products

    if threads is None:
        n = numba.get_num_threads()
    else:
        n = min(as_positive_int(threads, "threads"), numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with split_products(n):
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
    engine="auto",
    engine_options: dict | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    callback: Callable | None = None,
    progress: bool = False,
    max_memory: int | None = None,
    start_step: int = 0,
    workers: int | None = None,
    cluster=None,
) -> History:
    """Train ``net`` (in place) on (X, y) and return its ``History``.

    Give ``steps`` or ``epochs`` (an epoch is ceil(n / batch_size) steps; one step for full
    batch). ``engine``: a name in ``corrtree.ENGINES``, ``"auto"`` (the default: dense for
    small problems, else certified) or an ``Engine`` subclass; ``engine_options``: that
    engine's declared options (``engine_class(...).Options``). ``callback(t, net, info)``
    runs after each step. ``start_step`` resumes a schedule part way (the batches stay the
    same). Non-finite outputs, loss or weights stop the run with a ``DivergenceError``.

    Distributed (Ray, ``pip install 'corrtree[ray]'``): ``workers=N`` splits the neurons into
    N blocks, each trained by its own engine on a Ray worker (``cluster``: a
    ``corrtree.distributed.Cluster``; default: the Ray of this process, else a local one);
    the trained weights come back into ``net.W``. A ``corrtree.distributed.ShardedNet``, whose
    weights live only on its workers, is trained in place (and is what ``callback`` gets).
    ``threads`` is then per worker. A lost worker raises ``WorkerLostError``.
    """
    X = net.check_X(X)
    Y = net.check_y(y, X.shape[0])
    net.validate()
    n = X.shape[0]
    if n == 0:
        raise ValueError("X has no rows: training needs at least one data point")
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
    if isinstance(start_step, bool) or not isinstance(start_step, int | np.integer):
        raise TypeError(f"start_step must be an integer, got {start_step!r}")
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step must be in [0, steps={steps}], got {start_step}")
    from .deep import DeepEngine, ShiftedReLUMLP
    from .distributed import ShardedNet

    deep = isinstance(net, ShiftedReLUMLP)
    distributed = workers is not None or cluster is not None or isinstance(net, ShardedNet)
    if deep and distributed:
        raise ValueError(
            "workers shard a two-layer network; a ShiftedReLUMLP trains in one process"
        )
    loop = functools.partial(
        _loop,
        n=n,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        callback=callback,
        progress=progress,
        start_step=start_step,
    )
    if distributed:
        return _train_distributed(
            net, X, Y, lr, engine, engine_options, threads, max_memory, workers, cluster, loop
        )
    with thread_limit(threads), np.errstate(over="ignore", invalid="ignore"):
        t0 = time.perf_counter()
        if deep:
            stepper = _DeepStepper(
                DeepEngine(net, X, engine, engine_options, max_memory=max_memory), Y, lr
            )
            name = stepper.engine.name
        else:
            cls = engine_class(engine, n, net.width)
            options = cls.make_options(engine_options)
            stepper = _LocalStepper(cls(net, X, options, max_memory=max_memory), Y, lr)
            name = cls.name
        preprocess = time.perf_counter() - t0
        return loop(stepper, net, name, preprocess)


class _LocalStepper:
    """One process: ``take_step`` on one engine."""

    def __init__(self, engine: Engine, Y: np.ndarray, lr: float):
        self.engine, self.Y, self.lr = engine, Y, lr

    def step(self, t, rows, next_rows, has_next) -> StepInfo:
        return take_step(self.engine, self.Y, self.lr, rows)

    def finite(self) -> bool:
        return bool(np.isfinite(np.sum(self.engine.net.W, dtype=np.float64)))

    def stats(self) -> dict:
        return self.engine.stats()


class _DeepStepper(_LocalStepper):
    """A deep network: ``DeepEngine.step``."""

    def step(self, t, rows, next_rows, has_next) -> StepInfo:
        return self.engine.step(self.Y, self.lr, rows)

    def finite(self) -> bool:
        return self.engine.finite()


def _train_distributed(
    net, X, Y, lr, engine, engine_options, threads, max_memory, workers, cluster, loop
) -> History:
    from .distributed import DistributedStepper, ShardedNet

    if isinstance(net, ShardedNet):
        if workers is not None and workers != net.workers:
            raise ValueError(
                f"the ShardedNet has {net.workers} workers; workers={workers} cannot change it"
            )
        snet, owned = net, False
    else:
        snet, owned = ShardedNet.from_net(net, workers or 1, cluster), True
    try:
        lo, hi = snet.ranges[0]
        cls = engine_class(engine, X.shape[0], hi - lo)
        options = cls.make_options(engine_options)
        with np.errstate(over="ignore", invalid="ignore"):
            stepper = DistributedStepper(snet, X, Y, engine, options, lr, threads, max_memory)
            hist = loop(stepper, snet, stepper.engine, stepper.preprocess_seconds)
        if owned:  # the caller's network gets the trained weights, in place
            net.W[...] = snet.gather().W
        return hist
    finally:
        if owned:
            snet.close()


def _loop(
    stepper, net, name, preprocess, *, n, steps, batch_size, seed, callback, progress, start_step
) -> History:
    hist = History(engine=name, batch_size=batch_size, preprocess_seconds=preprocess)
    batches = batch_schedule(n, batch_size, steps, seed, start_step)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps - start_step, desc=f"train [{name}]", unit="step")
    watch = _DivergenceWatch(stepper.finite)
    t = start_step - 1
    end = object()
    try:
        rows = next(batches, end)
        for t in range(start_step, steps):
            following = next(batches, end)
            has_next = following is not end
            try:
                info = stepper.step(t, rows, following if has_next else None, has_next)
            except Exception as e:  # an engine that met non-finite weights first
                watch.after_failure(t, e)
                raise
            watch(t, info)
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
            rows = following
        if t >= start_step:
            watch(t, None, final=True)
    finally:
        if bar is not None:
            bar.close()
    hist.stats = stepper.stats()
    return hist


class _DivergenceWatch:
    """Stops a diverging run. The loss (which covers the outputs) is checked at every step.
    Weights can turn NaN while the loss stays finite (a NaN neuron never fires again), so
    they are checked too, by their float64 sum: every step while that costs little, else
    every k steps with k chosen to keep the checks under 1% of the training time, and
    always after the last step."""

    def __init__(self, finite: Callable[[], bool]):
        self.finite, self.last, self.every, self.since, self.spent = finite, None, 1, 0, 0.0

    def after_failure(self, t: int, error: Exception) -> None:
        if isinstance(error, FloatingPointError):
            raise DivergenceError(t, str(error), self.last) from error
        from .distributed import WorkerLostError

        if not isinstance(error, WorkerLostError) and not self.finite():
            raise DivergenceError(t, "the weights hold NaN or inf", self.last) from error

    def __call__(self, t: int, info: StepInfo, final: bool = False) -> None:
        if not final:
            if not math.isfinite(info.loss):
                raise DivergenceError(t, f"the loss is {info.loss}", self.last)
            self.last = info.loss
            self.since += 1
            self.spent += sum(info.seconds.values())
            if self.since < self.every:
                return
        t0 = time.perf_counter()
        ok = self.finite()
        cost = time.perf_counter() - t0
        if not ok:
            raise DivergenceError(t, "the weights hold NaN or inf", self.last)
        if not final:
            per_step = self.spent / self.since
            self.every = max(1, math.ceil(100 * cost / per_step)) if per_step > 0 else 1
            self.since, self.spent = 0, 0.0
