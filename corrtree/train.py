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
from .engines.base import PHASES, Engine, Options, StepInfo
from .losses import Loss, Squared, get_loss
from .optim import Adam, Optimizer, get_optimizer, get_schedule

__all__ = ["DivergenceError", "History", "auto_lr", "batch_schedule", "take_step", "train"]


_SQUARED = Squared()


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


@dataclass(repr=False)
class History:
    """Per-step record of a training run. ``loss[t]`` is the loss of the batch used by step
    ``t`` at the weights before that step (the whole training set for full-batch GD).

    With a held-out set (``train(..., eval=(X, y))``), evaluation ``k`` scored the weights
    after ``eval_step[k]`` steps: ``eval_loss`` (the loss summed over the held-out points),
    ``eval_accuracy`` (None for regression) and ``train_seconds``, the training wall time up
    to then (preprocessing included, evaluations excluded). ``stopped`` says why the run ended
    early ("target" accuracy reached, or "patience" ran out), ``best_step`` which evaluation
    scored best (its weights are the network's at the end when ``patience`` is set)."""

    engine: str
    batch_size: int | None = None
    preprocess_seconds: float = 0.0
    loss: list[float] = field(default_factory=list)
    fired_pairs: list[int] = field(default_factory=list)
    changed_neurons: list[int] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    stats: dict[str, int] = field(default_factory=dict)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float | None] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    best_step: int | None = None
    stopped: str | None = None

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

    def __repr__(self) -> str:
        parts = [f"engine={self.engine!r}", f"steps={self.steps}"]
        if self.loss:
            parts.append(f"loss {self.loss[0]:.6g} -> {self.loss[-1]:.6g} (batch)")
        if self.eval_step:
            acc = self.eval_accuracy[-1]
            last = f"eval loss {self.eval_loss[-1]:.6g}"
            if acc is not None:
                last += f", accuracy {acc:.4f}"
            parts.append(f"{last} after {self.eval_step[-1]} steps")
        if self.stopped:
            parts.append(f"stopped: {self.stopped}")
        return f"History({', '.join(parts)})"


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


def take_step(
    engines,
    Y: np.ndarray,
    lr: float,
    rows: np.ndarray | None = None,
    *,
    loss: Loss | None = None,
    optimizer: Optimizer | None = None,
    train_output: bool = False,
) -> StepInfo:
    """One gradient step of the engines (one engine, or several over disjoint blocks of
    neurons of one network) on the batch ``rows`` (None: all points): their partial outputs
    summed in the given order, the loss and its gradient E = dLoss/dF (``loss``, default the
    paper's squared loss, for which E = F - Y), then every engine's backward pass with E and
    its maintenance. ``optimizer`` (default plain SGD) turns the gradient rows into the step;
    ``train_output`` also updates the output layer A from its gradient at the firing pairs.
    Returns the step's ``StepInfo``."""
    engines = (engines,) if isinstance(engines, Engine) else tuple(engines)
    loss = _SQUARED if loss is None else loss
    seconds = dict.fromkeys(PHASES, 0.0)
    t0 = time.perf_counter()
    firing = [e.detect(rows) for e in engines]
    t1 = time.perf_counter()
    F = engines[0].forward(firing[0])
    for e, f in zip(engines[1:], firing[1:], strict=True):
        F += e.forward(f)
    value, E = loss(F, Y if rows is None else Y[rows])
    t2 = time.perf_counter()
    if optimizer is None or (optimizer.fused and not train_output):
        moved = [e.backward(f, E, lr) for e, f in zip(engines, firing, strict=True)]
    else:
        optimizer.begin_step()
        moved = [
            _update(k, e, f, E, lr, optimizer, train_output)
            for k, (e, f) in enumerate(zip(engines, firing, strict=True))
        ]
    t3 = time.perf_counter()
    for e, mv in zip(engines, moved, strict=True):
        e.maintain(mv)
    t4 = time.perf_counter()
    for p, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
        seconds[p] = dt
    return StepInfo(
        value,
        sum(f.pairs for f in firing),
        sum(int(mv.size) for mv in moved),
        seconds,
        F,
        rows,
    )


def _update(k, engine, firing, E, lr, optimizer, train_output) -> np.ndarray:
    """One engine's update through the optimizer: the output layer's gradient first (the
    engine may reuse the firing record's buffers for the hidden gradient), both gradients at
    the weights of the step's start, then W's step (applied by the engine) and A's."""
    net = engine.net
    if train_output:
        aids, GA = engine.output_gradient(firing, E)
    if optimizer.fused:
        moved = engine.backward(firing, E, lr)
    else:
        ids, G = engine.gradient(firing, E)
        ids, D = optimizer.update(f"W{k}", net.W, ids, G, lr, lazy=True)
        moved = engine.apply(firing, ids, D)
    if train_output:
        aids, DA = optimizer.update(f"A{k}", net.A, aids, GA, lr, lazy=False)
        net.A[aids] -= DA
    return moved


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
    lr: float | None = None,
    loss="squared",
    optimizer="sgd",
    train_output: bool = False,
    schedule=None,
    engine="auto",
    engine_options: dict | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    callback: Callable | None = None,
    progress: bool = False,
    max_memory: int | None = None,
    start_step: int = 0,
    eval: tuple | None = None,  # noqa: A002 (the keyword users know from the docs)
    eval_every: int | None = None,
    target_accuracy: float | None = None,
    patience: int | None = None,
    workers: int | None = None,
    cluster=None,
) -> History:
    """Train ``net`` (in place) on (X, y) and return its ``History``.

    Give ``steps`` or ``epochs`` (an epoch is ceil(n / batch_size) steps; one step for full
    batch). The recipe: ``loss`` ("squared", the paper's; "cross_entropy", y then class
    labels or one-hot rows; "logistic", 0/1 labels on one output; or a ``corrtree.losses.Loss``),
    ``optimizer`` ("sgd", "adam" with torch.optim's defaults, or an object from
    ``corrtree.optim``; Adam is lazy on the hidden weights, as ``torch.optim.SparseAdam``),
    ``train_output`` (also train the output layer A, +-1 at initialisation) and ``lr``
    (default: 1e-3 for Adam, ``auto_lr`` for SGD), scaled at step t by ``schedule(t, steps)``
    ("constant", "cosine", or a callable from ``corrtree.optim``).

    ``engine``: a name in ``corrtree.ENGINES``, ``"auto"`` (the default: dense for small
    problems, else certified) or an ``Engine`` subclass; ``engine_options``: that engine's
    declared options (``engine_class(...).Options``). ``callback(t, net, info)`` runs after
    each step. ``start_step`` resumes a schedule part way (the batches stay the same).
    Non-finite outputs, loss or weights stop the run with a ``DivergenceError``.

    Held-out evaluation: ``eval=(X_eval, y_eval)`` is scored every ``eval_every`` steps (default:
    once per epoch, or every step of full-batch GD), at each epoch's end and after the last
    step, into the history (wall times exclude it). ``target_accuracy`` stops the run once
    reached; ``patience`` stops it after that many evaluations without a better held-out loss
    and puts the best evaluated weights back into ``net``.

    Distributed (Ray, ``pip install 'corrtree[ray]'``): ``workers=N`` splits the neurons into
    N blocks, each trained by its own engine on a Ray worker (``cluster``: a
    ``corrtree.distributed.Cluster``; default: the Ray of this process, else a local one);
    the trained weights come back into ``net.W``. A ``corrtree.distributed.ShardedNet``, whose
    weights live only on its workers, is trained in place (and is what ``callback`` gets).
    ``threads`` is then per worker. A lost worker raises ``WorkerLostError``. Deep and
    sharded networks train with the paper's recipe (squared loss, SGD, fixed output layer);
    deep networks also with the other losses.
    """
    loss = get_loss(loss)
    optimizer = get_optimizer(optimizer)
    schedule = get_schedule(schedule)
    if not isinstance(train_output, bool | np.bool_):
        raise TypeError(f"train_output must be True or False, got {train_output!r}")
    X = net.check_X(X)
    Y = loss.targets(y, X.shape[0], net.n_outputs, net.dtype)
    net.validate()
    n = X.shape[0]
    if n == 0:
        raise ValueError("X has no rows: training needs at least one data point")
    if batch_size is not None:
        batch_size = as_positive_int(batch_size, "batch_size")
    if workers is not None:
        workers = as_positive_int(workers, "workers")
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps and epochs")
    per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
    if epochs is not None:
        steps = as_positive_int(epochs, "epochs") * per_epoch
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if isinstance(start_step, bool) or not isinstance(start_step, int | np.integer):
        raise TypeError(f"start_step must be an integer, got {start_step!r}")
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step must be in [0, steps={steps}], got {start_step}")
    evaluator = None
    if eval is not None:
        evaluator = _Evaluator(
            net, loss, eval, eval_every or per_epoch, per_epoch, steps, target_accuracy, patience
        )
    elif target_accuracy is not None or patience is not None:
        raise ValueError("target_accuracy and patience need a held-out set: eval=(X, y)")
    if patience is not None and (net.sharded or workers is not None or cluster is not None):
        raise ValueError("patience keeps the best weights in this process: not for sharded runs")
    from .deep import DeepEngine, ShiftedReLUMLP
    from .distributed import ShardedNet

    deep = isinstance(net, ShiftedReLUMLP)
    if lr is None:
        adam = isinstance(optimizer, Adam)
        lr = 1e-3 if adam else auto_lr(n, batch_size, net.thresholds[0], net.depth)
    lr = as_scalar(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    distributed = workers is not None or cluster is not None or isinstance(net, ShardedNet)
    if deep and distributed:
        raise ValueError(
            "workers shard a two-layer network; a ShiftedReLUMLP trains in one process"
        )
    paper_step = optimizer.fused and not train_output
    if (deep or distributed) and not paper_step:
        kind = "a deep network" if deep else "a sharded network"
        raise ValueError(
            f"{kind} trains with plain SGD and a fixed output layer; optimizer="
            f"{optimizer!r}, train_output={train_output} are for two-layer networks"
        )
    if distributed and not isinstance(loss, Squared):
        raise ValueError(f"a sharded network trains the squared loss, got {loss.name!r}")
    loop = functools.partial(
        _loop,
        n=n,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        callback=callback,
        progress=progress,
        start_step=start_step,
        schedule=schedule,
        evaluator=evaluator,
    )
    if distributed:
        return _train_distributed(
            net, X, Y, lr, engine, engine_options, threads, max_memory, workers, cluster, loop
        )
    with thread_limit(threads), np.errstate(over="ignore", invalid="ignore"):
        t0 = time.perf_counter()
        if deep:
            stepper = _DeepStepper(
                DeepEngine(net, X, engine, engine_options, max_memory=max_memory), Y, lr, loss
            )
            name = stepper.engine.name
        else:
            cls = engine_class(engine, n, net.width)
            options = cls.make_options(
                _planned(
                    cls,
                    engine,
                    engine_options,
                    paper_step,
                    (steps - start_step) * (batch_size or n) / n,
                )
            )
            stepper = _LocalStepper(
                cls(net, X, options, max_memory=max_memory),
                Y,
                lr,
                loss,
                None if paper_step else optimizer,
                train_output,
            )
            name = cls.name
        preprocess = time.perf_counter() - t0
        return loop(stepper, net, name, preprocess)


def _planned(cls, engine, options, paper_step: bool, epochs: float):
    """The options ``auto`` gives certified for the run it is about to train, under those the
    user set: a lazy index (no upfront n m d pass) for runs shorter than two epochs, which
    cannot amortise that pass, and for optimizers whose steps move every touched row by
    about lr per coordinate (Adam), which turn the moving neurons hot within a few steps, so
    that re-referencing them is also put off (eight times the hot checks of the paper's
    rule: they turn hot again at once). docs/engines.md, "Optimizers"."""
    if engine != "auto" or cls.name != "certified" or isinstance(options, Options):
        return options
    planned = {"lazy": not paper_step or epochs < 2}
    if not paper_step:
        planned["rebuild_after"] = 8.0
    return {**planned, **(options or {})}


class _LocalStepper:
    """One process: ``take_step`` on one engine."""

    def __init__(self, engine: Engine, Y, lr, loss=None, optimizer=None, train_output=False):
        self.engine, self.Y, self.lr = engine, Y, lr
        self.loss, self.optimizer, self.train_output = loss, optimizer, train_output

    def step(self, t, rows, next_rows, has_next) -> StepInfo:
        return take_step(
            self.engine,
            self.Y,
            self.lr,
            rows,
            loss=self.loss,
            optimizer=self.optimizer,
            train_output=self.train_output,
        )

    def finite(self) -> bool:
        return self.engine.net.finite()

    def stats(self) -> dict:
        return self.engine.stats()


class _DeepStepper(_LocalStepper):
    """A deep network: ``DeepEngine.step``."""

    def step(self, t, rows, next_rows, has_next) -> StepInfo:
        return self.engine.step(self.Y, self.lr, rows, loss=self.loss)

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


class _Evaluator:
    """Scores the network on a held-out set on its schedule, keeps the best weights when
    ``patience`` is set, and says when to stop."""

    def __init__(self, net, loss, data, every, per_epoch, total, target, patience):
        if not (isinstance(data, tuple | list) and len(data) == 2):
            raise TypeError("eval must be a pair (X, y) of held-out points and their targets")
        self.net, self.loss = net, loss
        self.X = net.check_X(data[0])
        self.Y = loss.targets(data[1], self.X.shape[0], net.n_outputs, net.dtype)
        self.every = as_positive_int(every, "eval_every")
        self.per_epoch, self.total = per_epoch, total
        if target is not None:
            target = as_scalar(target, "target_accuracy")
            if not 0 < target <= 1:
                raise ValueError(f"target_accuracy must be in (0, 1], got {target}")
        self.target = target
        self.patience = None if patience is None else as_positive_int(patience, "patience")
        self.best, self.best_state, self.waited = math.inf, None, 0

    def due(self, t: int) -> bool:
        done = t + 1
        return done % self.every == 0 or done % self.per_epoch == 0 or done == self.total

    def __call__(self, t: int, hist: History, train_seconds: float) -> str | None:
        F = self.net.outputs(self.X)
        value, _ = self.loss(F, self.Y)
        acc = self.loss.accuracy(F, self.Y)
        hist.eval_step.append(t + 1)
        hist.eval_loss.append(value)
        hist.eval_accuracy.append(acc)
        hist.train_seconds.append(train_seconds)
        if value < self.best:
            self.best, self.waited, hist.best_step = value, 0, t + 1
            if self.patience is not None:
                self.best_state = {k: v.copy() for k, v in _arrays(self.net).items()}
        else:
            self.waited += 1
        if self.target is not None and acc is not None and acc >= self.target:
            return "target"
        if self.patience is not None and self.waited >= self.patience:
            return "patience"
        return None

    def restore_best(self) -> None:
        if self.best_state is not None:
            for k, v in _arrays(self.net).items():
                v[...] = self.best_state[k]


def _arrays(net) -> dict[str, np.ndarray]:
    """The network's live weight arrays (its state's arrays with at least one axis)."""
    return {k: v for k, v in net.state_dict().items() if np.ndim(v) > 0}


def _loop(
    stepper,
    net,
    name,
    preprocess,
    *,
    n,
    steps,
    batch_size,
    seed,
    callback,
    progress,
    start_step,
    schedule,
    evaluator,
) -> History:
    hist = History(engine=name, batch_size=batch_size, preprocess_seconds=preprocess)
    batches = batch_schedule(n, batch_size, steps, seed, start_step)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps - start_step, desc=f"train [{name}]", unit="step")
    watch = _DivergenceWatch(stepper.finite)
    lr = stepper.lr
    t = start_step - 1
    end = object()
    clock = preprocess
    try:
        rows = next(batches, end)
        for t in range(start_step, steps):
            t0 = time.perf_counter()
            following = next(batches, end)
            has_next = following is not end
            stepper.lr = lr * schedule(t, steps)
            try:
                info = stepper.step(t, rows, following if has_next else None, has_next)
            except Exception as e:  # an engine that met non-finite weights first
                watch.after_failure(t, e)
                raise
            watch(t, info)
            clock += time.perf_counter() - t0
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
            if evaluator is not None and evaluator.due(t):
                hist.stopped = evaluator(t, hist, clock)
                if hist.stopped:
                    break
        if t >= start_step:
            watch(t, None, final=True)
    finally:
        stepper.lr = lr
        if bar is not None:
            bar.close()
    if evaluator is not None and hist.stopped != "target":
        evaluator.restore_best()
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
