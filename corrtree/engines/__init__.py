"""Training engines: one interface, one arithmetic (dense GD on the shifted-ReLU network).

Every engine owns the preprocessing for a network and a dataset and performs one gradient
step at a time, on all points or on a mini-batch of rows. All of them compute exactly what
the dense reference computes; they differ in how they find the firing pairs and how much work
they spend on pairs that do not fire.
"""

from __future__ import annotations

from .base import Engine, StepInfo
from .dense import DenseEngine
from .trees import DTreeEngine, WTreeEngine

ENGINES: dict[str, type[Engine]] = {
    "dense": DenseEngine,
    "dtree": DTreeEngine,
    "wtree": WTreeEngine,
}

__all__ = [
    "ENGINES",
    "DTreeEngine",
    "DenseEngine",
    "Engine",
    "StepInfo",
    "WTreeEngine",
    "make_engine",
]


def make_engine(name: str, net, X, Y, **kwargs) -> Engine:
    """Build the engine called ``name`` for ``net`` on data (X, Y)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[name](net, X, Y, **kwargs)
