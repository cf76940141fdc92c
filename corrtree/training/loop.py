"""The training loop: full-batch gradient descent or mini-batch SGD of any network, through
the stepper registered for its kind (``corrtree.training.step``); the batch schedule, the
learning-rate schedule, held-out evaluation, early stopping and divergence checks."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import _progress
from .._validation import as_positive_int, as_scalar
from ..engines.base import PHASES, StepInfo
from ..nets import firing_probability
from .losses import get_loss
from .optim import Adam, get_optimizer, get_schedule
from .step import Plan, Stepper, StepperLost, shard, stepper_for

__all__ = ["DivergenceError", "History", "auto_lr", "batch_schedule", "train"]


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
    ``corrtree.nets.deep``), hence the 1 / L: on digits, 60 SGD steps of batch 256, widths
    (512, 256) and (2048, 1024), 2 / (B p L) reached 95.7% and 99.0% training accuracy;
    twice that diverged on (512, 256) (docs/deep.md)."""
    if n < 1:
        raise ValueError(f"cannot choose a learning rate for {n} points")
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
    labels or one-hot rows; "logistic", 0/1 labels on one output; or a
    ``corrtree.training.losses.Loss``), ``optimizer`` ("sgd", "adam" with torch.optim's
    defaults, or an object from ``corrtree.training.optim``; Adam is lazy on the hidden
    weights, as ``torch.optim.SparseAdam``),
    ``train_output`` (also train the output layer A, +-1 at initialisation) and ``lr``
    (default: 1e-3 for Adam, ``auto_lr`` for SGD), scaled at step t by ``schedule(t, steps)``
    ("constant", "cosine", or a callable from ``corrtree.training.optim``).

    ``progress``: a bar over the steps, and one over any other pass of the run longer than
    two seconds (index build, held-out scoring) while it runs (``corrtree._progress``).

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

    Any kind of network trains here: the loop runs the stepper registered for the network's
    type (``stepper_for``): a ``ShiftedReLUNet`` on one engine, a ``ShiftedReLUMLP`` through
    ``DeepEngine``, a ``corrtree.distributed.ShardedNet`` (weights on Ray workers, trained in
    place; ``threads`` is then per worker) through one round trip per step. Deep and sharded
    networks train with plain SGD and a fixed output layer; deep networks with every loss,
    sharded ones with the squared loss. ``workers=N`` (and ``cluster``, a
    ``corrtree.distributed.Cluster``; default: the Ray of this process, else a local one) is
    a convenience: the two-layer ``net`` is split over N Ray workers for this run and the
    trained weights come back into ``net.W``. A lost worker raises ``WorkerLostError``.
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
    sharding = workers is not None or cluster is not None
    if patience is not None and (net.sharded or sharding):
        raise ValueError("patience keeps the best weights in this process: not for sharded runs")
    if lr is None:
        adam = isinstance(optimizer, Adam)
        lr = 1e-3 if adam else auto_lr(n, batch_size, net.thresholds[0], net.depth)
    lr = as_scalar(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    plan = Plan(
        lr=lr,
        loss=loss,
        optimizer=optimizer,
        train_output=bool(train_output),
        engine=engine,
        engine_options=engine_options,
        threads=threads,
        max_memory=max_memory,
        epochs=(steps - start_step) * (batch_size or n) / n,
    )
    loop = functools.partial(
        _loop,
        n=n,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        callback=callback,
        start_step=start_step,
        schedule=schedule,
        evaluator=evaluator,
    )
    with _progress.shown(progress):
        if not sharding:
            return _train(net, X, Y, plan, loop)
        with shard(net, workers, cluster, plan) as target:
            return _train(target, X, Y, plan, loop)


def _train(net, X, Y, plan: Plan, loop) -> History:
    """Build the network's stepper (found by its type), run the loop, close the stepper."""
    cls = stepper_for(net)
    cls.check(net, plan)
    with np.errstate(over="ignore", invalid="ignore"):
        stepper = cls(net, X, Y, plan)
        try:
            with stepper.running():
                return loop(stepper, net)
        finally:
            stepper.close()


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
    stepper: Stepper,
    net,
    *,
    n,
    steps,
    batch_size,
    seed,
    callback,
    start_step,
    schedule,
    evaluator,
) -> History:
    name, preprocess = stepper.name, stepper.preprocess_seconds
    hist = History(engine=name, batch_size=batch_size, preprocess_seconds=preprocess)
    batches = batch_schedule(n, batch_size, steps, seed, start_step)
    bar = _progress.bar(steps - start_step, f"train [{name}]", "step", delay=0, leave=True)
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
        if not isinstance(error, StepperLost) and not self.finite():
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
