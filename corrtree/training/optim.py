"""Optimizers and learning-rate schedules, with torch.optim's semantics on the exact gradient.

An optimizer is an object with hyperparameters in its constructor, state per parameter, and
one method the training step calls per parameter and step::

    ids, D = opt.update(name, P, ids, G, lr, lazy=...)   # then P[ids] -= D

``ids`` are the parameter's rows with a gradient (the hidden neurons with at least one firing
pair in the batch, sorted) and ``G`` their gradient rows; every other row's gradient is zero.
``lazy=True`` (the hidden weights W) lets state-carrying optimizers touch only those rows, as
``torch.optim.SparseAdam`` does; ``lazy=False`` (the small output layer A) asks for the dense
optimizer's semantics over all rows. The step subtracts D from rows ``ids`` of P; the engine
that owns W applies it (keeping its index in step), so no step touches rows without a
gradient unless the optimizer says so (weight decay does).

To add an optimizer, subclass ``Optimizer`` and implement ``update`` (and ``state_dict``
for whatever state it keeps).
"""

from __future__ import annotations

import math

import numpy as np

from .._kernels import optim as K

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "Constant",
    "Cosine",
    "Momentum",
    "Optimizer",
    "StepDecay",
    "get_optimizer",
    "get_schedule",
]


class Optimizer:
    """Base of the optimizers. ``steps`` counts the steps taken (``begin_step`` is called
    once per training step, before the updates), as torch's per-parameter ``step``."""

    name = "optimizer"
    #: the step is lr * G on the rows with a gradient: engines may fuse it into their pass
    fused = False

    def __init__(self):
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def begin_step(self) -> None:
        self.steps += 1

    def update(self, name: str, P: np.ndarray, ids: np.ndarray, G: np.ndarray, lr: float, *,
               lazy: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as flat arrays (for checkpoints): ``steps`` and ``<param>.<slot>``."""
        out = {"steps": np.array(self.steps)}
        for p, slots in self.state.items():
            for s, a in slots.items():
                out[f"{p}.{s}"] = a
        return out

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.state = {}
        for key, a in state.items():
            if key != "steps":
                p, _, s = key.partition(".")
                self.state.setdefault(p, {})[s] = np.array(a)

    def _decay(self, P, ids, D, lr, weight_decay):
        """Decoupled weight decay P <- (1 - lr wd) P before the step: every row moves, so the
        step becomes dense over the rows of P (one pass over the parameter per step)."""
        if not weight_decay:
            return ids, D
        full = P * P.dtype.type(lr * weight_decay)
        full[ids] += D
        return np.arange(P.shape[0], dtype=np.int64), full

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({hyper})"

    def hyper(self) -> dict:
        return {}


class SGD(Optimizer):
    """Plain gradient descent, w <- w - lr g, with decoupled weight decay
    (w <- (1 - lr wd) w first; it moves every row, so it costs a pass over W per step)."""

    name = "sgd"

    def __init__(self, weight_decay: float = 0.0):
        super().__init__()
        self.weight_decay = _nonneg(weight_decay, "weight_decay")
        self.fused = self.weight_decay == 0

    def update(self, name, P, ids, G, lr, *, lazy):
        G *= P.dtype.type(lr)
        return self._decay(P, ids, G, lr, self.weight_decay)

    def hyper(self):
        return {"weight_decay": self.weight_decay}


class Momentum(Optimizer):
    """SGD with momentum, as ``torch.optim.SGD(momentum=, nesterov=)`` (no dampening) on the
    dense gradient: v <- mu v + g, then w <- w - lr v (Nesterov: w <- w - lr (g + mu v)).
    Rows without a gradient keep moving while their velocity is not zero, so every row that
    ever had a gradient moves at every step: a pass over W and v per step (the engine keeps
    each moved row's drift, so the step stays exact). ``weight_decay``: decoupled, as SGD's."""

    name = "momentum"

    def __init__(self, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__()
        self.momentum = _nonneg(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = _nonneg(weight_decay, "weight_decay")

    def update(self, name, P, ids, G, lr, *, lazy):
        s = self.state.get(name)
        if s is None:
            s = self.state[name] = {"v": np.zeros_like(P), "moving": np.zeros(P.shape[0], bool)}
        V, moving = s["v"], s["moving"]
        V *= P.dtype.type(self.momentum)
        V[ids] += G
        moving[ids] = True
        rows = np.flatnonzero(moving)
        D = V[rows]
        if self.nesterov:
            D *= P.dtype.type(self.momentum)
            D[np.searchsorted(rows, ids)] += G
        D *= P.dtype.type(lr)
        return self._decay(P, rows, D, lr, self.weight_decay)

    def hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}  # fmt: skip


class Adam(Optimizer):
    """Adam. On the hidden weights (``lazy=True``) with the semantics of
    ``torch.optim.SparseAdam``: only the rows with a gradient update their moments and move,
    by lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), t the global step count.
    On the output layer (``lazy=False``) it is ``torch.optim.Adam``'s dense update (every row's
    moments decay). ``weight_decay``: AdamW's decoupled decay on every row of both (a pass over
    W per step)."""

    name = "adam"

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__()
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {tuple(betas)}")
        self.betas = (b1, b2)
        self.eps = float(eps)
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.weight_decay = _nonneg(weight_decay, "weight_decay")

    def _slots(self, name, P):
        s = self.state.get(name)
        if s is None:
            s = self.state[name] = {"m": np.zeros_like(P), "v": np.zeros_like(P)}
        return s["m"], s["v"]

    def update(self, name, P, ids, G, lr, *, lazy):
        if self.steps < 1:
            raise RuntimeError("begin_step() must be called before the first update")
        M, V = self._slots(name, P)
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
        if lazy:
            K.sparse_adam_rows(ids, G, M, V, b1, b2, self.eps, lr * math.sqrt(c2) / c1)
            return self._decay(P, ids, G, lr, self.weight_decay)
        g = np.zeros_like(P)
        g[ids] = G
        M *= P.dtype.type(b1)
        M += P.dtype.type(1 - b1) * g
        V *= P.dtype.type(b2)
        V += P.dtype.type(1 - b2) * g * g
        denom = np.sqrt(V)
        denom /= P.dtype.type(math.sqrt(c2))
        denom += P.dtype.type(self.eps)
        D = M / denom
        D *= P.dtype.type(lr / c1)
        return self._decay(P, np.arange(P.shape[0], dtype=np.int64), D, lr, self.weight_decay)

    def hyper(self):
        return {"betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}


OPTIMIZERS: dict[str, type[Optimizer]] = {"adam": Adam, "momentum": Momentum, "sgd": SGD}


def get_optimizer(optimizer) -> Optimizer:
    """An optimizer from a name in ``OPTIMIZERS`` (torch.optim's defaults) or an instance
    (returned as it is)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer in OPTIMIZERS:
        return OPTIMIZERS[optimizer]()
    raise ValueError(
        f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)} or an "
        "Optimizer from corrtree.training.optim"
    )


# --- learning-rate schedules -----------------------------------------------------------------
class Constant:
    """The learning rate as given, at every step."""

    def __call__(self, t: int, total: int) -> float:
        return 1.0

    def __repr__(self) -> str:
        return "Constant()"


class StepDecay:
    """Multiply the learning rate by ``gamma`` every ``every`` steps (torch's StepLR)."""

    def __init__(self, every: int, gamma: float = 0.1):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.gamma = int(every), _nonneg(gamma, "gamma")

    def __call__(self, t, total):
        return self.gamma ** (t // self.every)

    def __repr__(self) -> str:
        return f"StepDecay(every={self.every}, gamma={self.gamma})"


class Cosine:
    """Linear warm-up over ``warmup`` steps (a fraction of the run when < 1), then cosine
    decay to ``floor`` times the learning rate at the last step."""

    def __init__(self, warmup: float = 0.0, floor: float = 0.0):
        self.warmup, self.floor = _nonneg(warmup, "warmup"), _nonneg(floor, "floor")

    def __call__(self, t, total):
        w = self.warmup * total if self.warmup < 1 else self.warmup
        if t < w:
            return (t + 1) / (w + 1)
        span = max(total - w - 1, 1)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * (t - w) / span))

    def __repr__(self) -> str:
        return f"Cosine(warmup={self.warmup}, floor={self.floor})"


SCHEDULES = {"constant": Constant, "cosine": Cosine}


def get_schedule(schedule):
    """A schedule from None (constant), a name in ``SCHEDULES`` or a callable
    ``(step, total_steps) -> factor of lr``."""
    if schedule is None:
        return Constant()
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
        return SCHEDULES[schedule]()
    if not callable(schedule):
        raise TypeError(f"schedule must be a name or a callable, got {schedule!r}")
    return schedule


def _nonneg(v, name: str) -> float:
    v = float(v)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be finite and >= 0, got {v}")
    return v
