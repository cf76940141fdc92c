"""The engine protocol, declared engine options, and the sparse step shared by the tree engines.

An engine owns what makes it an engine: the structures that find firing pairs, and how it
reads and writes the weights of its neurons. The training step
(``corrtree.training.take_step``) owns the step: it asks every engine for the partial
outputs of a batch, sums them, forms the residuals and the loss, and hands the residuals
back. One step is, for an engine ``eng``::

    firing = eng.detect(rows)          # the batch's firing pairs (engine-defined record)
    F = eng.forward(firing)            # (batch, C) outputs of this engine's neurons
    E = sum of F over engines - Y      # done by the training loop
    moved = eng.backward(firing, E, lr)  # gradient and w -= lr * g; ids of neurons written
    eng.maintain(moved)                # bring the index up to date with the moved neurons

E is dLoss/dF of the step's loss (F - Y for the paper's squared loss). ``backward`` may fuse
part of the maintenance into the update (certified does), in which case ``maintain`` does
what is left. Optimizers other than plain SGD, and a trained output layer, split the update::

    ids, GA = eng.output_gradient(firing, E)  # dLoss/dA rows (before gradient: see there)
    ids, G = eng.gradient(firing, E)       # dLoss/dW rows of the neurons with a firing pair
    moved = eng.apply(firing, ids, D)      # W[ids] -= D, the optimizer's step

The base class implements ``backward`` from ``gradient`` and ``apply``, so an engine needs
either the fused ``backward`` or the two parts; the split path needs the parts.

Layer 1 of a deep network (``corrtree.training.deep``) uses an engine through two more
methods: ``neuron_pairs(firing)`` (every firing pair of the batch, neuron-major, with its
pre-activation z) and ``descend(firing, pairs, coef, lr)`` (w_r -= lr * sum of coef * x over
r's pairs, the coefficients back-propagated from the layers above). ``SparseEngine``
provides the first, the base class the second (engines with state tied to W override it).

Because F is a plain sum over neurons, several engines over disjoint blocks of neurons
(shards, each a ``ShiftedReLUNet.from_weights`` over its rows with the whole network's
``scale``) are trained exactly by summing their F.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .._kernels import deep as K
from .._kernels import sparse as S

PHASES = ("detect", "forward", "backward", "maintain")


@dataclass
class StepInfo:
    """What one gradient step did: the loss at the weights it started from, work, time."""

    loss: float
    fired_pairs: int
    changed_neurons: int
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: np.ndarray | None = field(default=None, repr=False)  # batch outputs, pre-step
    rows: np.ndarray | None = field(default=None, repr=False)  # the batch (None: all points)


@dataclass
class Firing:
    """The firing pairs of one batch as an engine found them. ``rows``: the batch's data
    points (int64, sorted); ``pairs``: how many (neuron, row) pairs fire. Engines subclass it
    with whatever their forward and backward passes need."""

    rows: np.ndarray
    pairs: int


@dataclass(frozen=True)
class Options:
    """Base of every engine's declared options: a frozen dataclass whose fields are the
    options, with their types and defaults; ``check`` validates them."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError or TypeError naming a bad value (subclasses extend)."""


def check_number(name: str, value, *, kind=float, low=None, high=None, low_open=False):
    """A declared option's value: ``kind`` (int or float, bool refused), within the bounds."""
    ok = isinstance(value, int | np.integer) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise TypeError(f"option {name} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value) and not (high is None and value == math.inf):
        raise ValueError(f"option {name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"option {name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"option {name} must be <= {high}, got {value}")


class Engine:
    """Base class of every engine (see the module docstring for the protocol).

    Subclasses set ``name``, declare ``Options`` (a frozen dataclass, subclass of
    ``engines.base.Options``) and implement ``detect``, ``forward``, ``backward`` and, if
    they keep an index, ``maintain``. ``net.W`` is the engine's weight matrix, updated in
    place; the engine reads ``net.A``, ``net.threshold`` and ``net.scale``.
    """

    name: ClassVar[str] = "base"
    Options: ClassVar[type[Options]] = Options
    exact: ClassVar[bool] = True  # finds every firing pair (False: approximate, e.g. LSH)

    def __init__(self, net, X: np.ndarray, options=None, *, max_memory: int | None = None):
        self.options = self.make_options(options)
        self.net = net
        self.X = X
        self.n = X.shape[0]
        self.m = net.width
        self.scale = net.dtype.type(net.scale)
        self.b = net.dtype.type(net.threshold)
        self.max_memory = max_memory
        self.counters = {"inner_products": 0, "gradient_madds": 0, "steps": 0}

    # --- options ------------------------------------------------------------------------
    @classmethod
    def make_options(cls, options=None):
        """``cls.Options`` from None, an instance, or a mapping of option names to values;
        an unknown name is a TypeError that lists the engine's options."""
        if options is None:
            return cls.Options()
        if isinstance(options, cls.Options):
            return options
        if not isinstance(options, Mapping):
            raise TypeError(
                f"engine options must be a mapping of names to values, got {type(options).__name__}"
            )
        names = [f.name for f in dataclasses.fields(cls.Options)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                f"engine {cls.name!r}; its options are: {', '.join(names) or '(none)'}"
            )
        return cls.Options(**options)

    @classmethod
    def parse_options(cls, items) -> dict:
        """Options from ``KEY=VALUE`` strings (the command line), converted by the declared
        types (int, float, bool, str, or one of them or None)."""
        hints = typing.get_type_hints(cls.Options)
        out = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise ValueError(f"engine option {item!r} is not KEY=VALUE")
            if key not in hints:
                cls.make_options({key: None})  # raises the unknown-option error
            out[key] = _convert(text.strip(), hints[key], key)
        return out

    # --- memory ---------------------------------------------------------------------------
    @classmethod
    def estimate_bytes(
        cls, n: int, m: int, d: int, *, dtype, n_outputs=1, batch=None, options=None
    ) -> int:
        """Bytes the engine would hold beyond X, y and W for these sizes (before building)."""
        return 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the engine's own structures (beyond X, y and W)."""
        return 0

    # --- the protocol ---------------------------------------------------------------------
    def detect(self, rows: np.ndarray | None) -> Firing:
        raise NotImplementedError

    def forward(self, firing: Firing) -> np.ndarray:
        raise NotImplementedError

    def backward(self, firing: Firing, E: np.ndarray, lr: float) -> np.ndarray:
        """The step w -= lr * g over the rows with a gradient; returns the moved neurons."""
        ids, G = self.gradient(firing, E)
        G *= self.net.dtype.type(lr)
        return self.apply(firing, ids, G)

    def gradient(self, firing: Firing, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, G): the neurons with at least one firing pair in the batch (sorted, int64)
        and their rows of dLoss/dW for the residuals E. May reuse the firing record's
        buffers: call ``output_gradient`` first."""
        raise NotImplementedError(f"engine {self.name!r} does not split its backward pass")

    def output_gradient(self, firing: Firing, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, GA): the neurons with a firing pair and their rows of dLoss/dA,
        scale * sum over firing pairs of (z - b) * E[row]."""
        raise NotImplementedError(f"engine {self.name!r} cannot train the output layer")

    def apply(self, firing: Firing, ids: np.ndarray, D: np.ndarray) -> np.ndarray:
        """W[ids] -= D (an optimizer's step); returns the moved neurons for ``maintain``."""
        self.net.W[ids] -= D
        self.counters["steps"] += 1
        return ids

    def maintain(self, moved: np.ndarray) -> None:
        """Bring the engine's index up to date after the neurons ``moved`` were written."""

    def neuron_pairs(self, firing: Firing) -> S.Pairs:
        """Every firing pair of the batch, neuron-major: (ptr over the m neurons, batch
        positions, pre-activations z = <w_r, x>), rows sorted within each neuron."""
        raise NotImplementedError(
            f"engine {self.name!r} does not list its firing pairs neuron-major "
            "(Engine.neuron_pairs), which a deep network's first layer needs"
        )

    def descend(self, firing: Firing, pairs: S.Pairs, coef: np.ndarray, lr: float) -> np.ndarray:
        """w_r -= lr * sum over r's pairs (``pairs``, from ``neuron_pairs``) of coef * x, the
        coefficients given in the pairs' order; returns the moved neurons for ``maintain``.
        Engines whose own state follows W (drift, copies) override it."""
        col_ptr, prow, _ = pairs
        Xb = self.X if firing.rows.size == self.n else self.X[firing.rows]
        K.rows_gradient_step(col_ptr, prow, coef, Xb, self.net.W, self.net.dtype.type(lr))
        self.counters["steps"] += 1
        self.counters["gradient_madds"] += prow.size * self.net.d
        return np.flatnonzero(np.diff(col_ptr))

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def _rows(self, rows) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64) if rows is None else rows


def _convert(text: str, hint, key: str):
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if type(None) in kinds and text.lower() in ("none", "null", ""):
        return None
    for kind in kinds:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
        elif kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                continue
        elif kind is str:
            return text
    names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ValueError(f"engine option {key}={text!r}: expected {names}")


@dataclass
class PairFiring(Firing):
    """Point-major CSR firing pairs: ``ptr`` over batch rows, neuron ids ``idx`` (sorted
    within each row), their correlations ``val``."""

    ptr: np.ndarray = field(repr=False, default=None)
    idx: np.ndarray = field(repr=False, default=None)
    val: np.ndarray = field(repr=False, default=None)
    _by_neuron: S.Pairs | None = field(repr=False, default=None)

    def by_neuron(self, m: int) -> S.Pairs:
        """The pairs neuron-major: (ptr over the m neurons, batch rows, correlations)."""
        if self._by_neuron is None:
            self._by_neuron = S.Pairs(*S.transpose(self.ptr, self.idx, self.val, m))
        return self._by_neuron


class SparseEngine(Engine):
    """A step over firing pairs: subclasses provide ``find(rows)`` (point-major CSR pairs of
    the batch with their current correlations) and ``maintain(neurons)``."""

    def find(self, rows: np.ndarray):
        raise NotImplementedError

    def detect(self, rows):
        rows = self._rows(rows)
        ptr, idx, val = self.find(rows)
        return PairFiring(rows, int(idx.size), ptr, idx, val)

    def forward(self, firing):
        net = self.net
        F = np.empty((firing.rows.size, net.n_outputs), dtype=net.dtype)
        S.forward(firing.ptr, firing.idx, firing.val, net.A, self.b, self.scale, F)
        return F

    def gradient(self, firing, E):
        net = self.net
        col_ptr, prow, _ = firing.by_neuron(self.m)
        coef = np.empty(prow.size, dtype=net.dtype)
        S.neuron_coefficients(col_ptr, prow, net.A, E, self.scale, coef)
        neurons = np.flatnonzero(np.diff(col_ptr))
        G = np.empty((neurons.size, net.d), dtype=net.dtype)
        S.neuron_gradient(col_ptr, prow, coef, neurons, self.X, firing.rows, G)
        self.counters["gradient_madds"] += prow.size * net.d
        return neurons, G

    def neuron_pairs(self, firing):
        return firing.by_neuron(self.m)

    def output_gradient(self, firing, E):
        col_ptr, prow, pval = firing.by_neuron(self.m)
        neurons = np.flatnonzero(np.diff(col_ptr))
        GA = np.empty((neurons.size, self.net.n_outputs), dtype=self.net.dtype)
        S.neuron_output_gradient(col_ptr, prow, pval, self.b, E, self.scale, neurons, GA)
        return neurons, GA
