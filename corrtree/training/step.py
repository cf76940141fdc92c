"""One training step, and the stepper protocol that runs it for every kind of network.

``take_step`` is the step of the paper's network over one engine or several engines over
disjoint blocks of its neurons: outputs summed, the loss and dLoss/dF (the **loss seam**,
``corrtree.training.losses``), the engines' backward pass, the optimizer's update (the
**optimizer seam**, ``corrtree.training.optim``) and the engines' maintenance.

A ``Stepper`` runs steps for one network on one data set: ``step`` (one step, returning its
``StepInfo``), ``preprocess_seconds`` (what building it took), ``finite``, ``stats`` and
``close``. The training loop (``corrtree.training.train``) finds the stepper of a network
by the network's type (``stepper_for``, a ``functools.singledispatch`` function); each kind
registers its own: ``EngineStepper`` for ``ShiftedReLUNet`` here,
``corrtree.training.deep.DeepStepper`` for ``ShiftedReLUMLP``, and
``corrtree.distributed.DistributedStepper`` for ``ShardedNet``. The loop itself knows no
kind of network.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from .._blas import thread_limit
from ..engines import engine_class
from ..engines.base import PHASES, Engine, Options, StepInfo
from ..nets import ShiftedReLUNet
from .losses import Loss, Squared
from .optim import Optimizer

__all__ = [
    "Plan",
    "Stepper",
    "StepperLost",
    "EngineStepper",
    "shard",
    "stepper_for",
    "take_step",
]

_SQUARED = Squared()


@dataclass(frozen=True)
class Plan:
    """What a stepper is built from: the engine and its options, the recipe (loss,
    optimizer, whether the output layer trains), the step size, threads, a memory limit,
    and how many epochs this run will train (engines plan their index for it)."""

    lr: float
    loss: Loss = _SQUARED
    optimizer: Optimizer | None = None  # None or a fused optimizer: the engines' own SGD step
    train_output: bool = False
    engine: object = "auto"
    engine_options: object = None
    threads: int | None = None
    max_memory: int | None = None
    epochs: float = math.inf  # planned length of the run (inf: unknown, long)

    @property
    def paper_step(self) -> bool:
        """Plain SGD on W with the output layer fixed: the engines' fused update."""
        return (self.optimizer is None or self.optimizer.fused) and not self.train_output

    def refuse_beyond_paper(self, kind: str, losses: tuple[type[Loss], ...] | None = None):
        """For kinds that train only the paper's step: a clear error for anything else."""
        if not self.paper_step:
            raise ValueError(
                f"{kind} trains with plain SGD and a fixed output layer; optimizer="
                f"{self.optimizer!r}, train_output={self.train_output} are for two-layer "
                "networks"
            )
        if losses is not None and not isinstance(self.loss, losses):
            raise ValueError(f"{kind} trains the squared loss, got {self.loss.name!r}")


class StepperLost(RuntimeError):
    """A stepper that can no longer run (e.g. a lost worker): the loop re-raises it as it is,
    without checking the weights for divergence."""


class Stepper:
    """The stepper protocol (see the module docstring). ``lr`` is the step size of the next
    step (the loop sets it from the schedule); ``name`` names the engine in the history."""

    name: str = "stepper"
    lr: float
    preprocess_seconds: float = 0.0

    @classmethod
    def check(cls, net, plan: Plan) -> None:
        """Refuse, before anything is built, a plan this kind cannot train."""

    def step(self, t: int, rows, next_rows, has_next: bool) -> StepInfo:
        """Step ``t`` on the batch ``rows`` (None: all points); ``next_rows`` is the next
        step's batch when ``has_next`` (a stepper may start on it)."""
        raise NotImplementedError

    def finite(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict:
        return {}

    def running(self):
        """The context the steps run in (threads)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Free what the stepper holds (workers, indexes)."""


@functools.singledispatch
def stepper_for(net) -> type[Stepper]:
    """The stepper class of a network, by the network's type."""
    raise TypeError(
        f"no stepper is registered for {type(net).__name__}; register one with "
        "corrtree.training.stepper_for.register"
    )


@functools.singledispatch
def shard(net, workers, cluster, plan: Plan):
    """A context manager yielding ``net`` split over Ray workers (``train(..., workers=k)``);
    ``corrtree.distributed`` registers it for the kinds it can shard."""
    raise ValueError(
        f"workers shard a two-layer network; a {type(net).__name__} trains in one process"
    )


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


class EngineStepper(Stepper):
    """A ``ShiftedReLUNet`` in one process: ``take_step`` on one engine (``engine``). Also
    what the tests and benchmarks drive step by step (``advance``)."""

    def __init__(self, net, X, Y, plan: Plan):
        cls = engine_class(plan.engine, X.shape[0], net.width)
        options = cls.make_options(
            _planned(cls, plan.engine, plan.engine_options, plan.paper_step, plan.epochs)
        )
        self.Y, self.lr, self.plan, self.name = Y, plan.lr, plan, cls.name
        self.optimizer = None if plan.paper_step else plan.optimizer
        with self.running():
            t0 = time.perf_counter()
            self.engine = cls(net, X, options, max_memory=plan.max_memory)
            self.preprocess_seconds = time.perf_counter() - t0

    def running(self):
        return thread_limit(self.plan.threads)

    def step(self, t, rows, next_rows, has_next) -> StepInfo:
        return self._take(rows)

    def _take(self, rows) -> StepInfo:
        return take_step(
            self.engine,
            self.Y,
            self.lr,
            rows,
            loss=self.plan.loss,
            optimizer=self.optimizer,
            train_output=self.plan.train_output,
        )

    def advance(self, lr: float, rows=None) -> StepInfo:
        """One step of size ``lr`` on ``rows`` (None: all points), outside the loop."""
        self.lr = lr
        with self.running():
            return self._take(rows)

    def finite(self) -> bool:
        return self.engine.net.finite()

    def stats(self) -> dict:
        return self.engine.stats()


stepper_for.register(ShiftedReLUNet, lambda net: EngineStepper)
