"""Training engines: one interface, one arithmetic (dense GD on the shifted-ReLU network).

Every engine owns the preprocessing for a network and a dataset and performs one gradient
step at a time, on all points or on a mini-batch of rows. All of them compute exactly what
the dense reference computes; they differ in how they find the firing pairs and how much work
they spend on pairs that do not fire.
"""

from __future__ import annotations

from .base import Engine, Firing, Options, StepInfo
from .certified import CertifiedEngine
from .dense import DenseEngine
from .faiss import FaissEngine
from .halfspace import HalfSpaceEngine
from .lsh import LSHEngine
from .trees import DTreeEngine, WTreeEngine

ENGINES: dict[str, type[Engine]] = {
    "certified": CertifiedEngine,
    "dense": DenseEngine,
    "dtree": DTreeEngine,
    "faiss": FaissEngine,
    "halfspace": HalfSpaceEngine,
    "wtree": WTreeEngine,
}

# Approximate engines: built by name like the others, never picked by auto, not exact.
APPROXIMATE: dict[str, type[Engine]] = {"lsh": LSHEngine}

__all__ = [
    "APPROXIMATE",
    "ENGINES",
    "DTreeEngine",
    "DenseEngine",
    "HalfSpaceEngine",
    "Engine",
    "FaissEngine",
    "Firing",
    "LSHEngine",
    "Options",
    "StepInfo",
    "WTreeEngine",
    "engine_class",
    "make_engine",
]


AUTO_DENSE_PAIRS = 1 << 20  # below n * m = 2^20 pairs, BLAS overheads are lower


def choose_engine(n: int, m: int) -> str:
    """The engine ``auto`` picks: dense for small problems, where one BLAS call beats any
    bookkeeping; otherwise ``certified``, the fastest exact engine here, whose memory is
    O(candidates) rather than the trees' O(nm)."""
    return "dense" if n * m < AUTO_DENSE_PAIRS else "certified"


def engine_class(engine, n: int, m: int) -> type[Engine]:
    """The engine class for a name (``"auto"`` resolved for n points and m neurons) or an
    ``Engine`` subclass, which is returned as it is (engines written by users)."""
    if isinstance(engine, type) and issubclass(engine, Engine):
        return engine
    if not isinstance(engine, str):
        raise TypeError(f"engine must be a name or an Engine subclass, got {engine!r}")
    name = choose_engine(n, m) if engine == "auto" else engine
    cls = ENGINES.get(name) or APPROXIMATE.get(name)
    if cls is None:
        raise ValueError(
            f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}, 'auto', or the "
            f"approximate {sorted(APPROXIMATE)}"
        )
    return cls


def make_engine(engine, net, X, options=None, *, max_memory: int | None = None) -> Engine:
    """Build ``engine`` (a name, ``"auto"`` or an ``Engine`` subclass) for ``net`` on the
    points X. ``options``: a mapping of the engine's declared options (see
    ``engine_class(...).Options``); an unknown name is a TypeError."""
    cls = engine_class(engine, X.shape[0], net.width)
    return cls(net, X, options, max_memory=max_memory)
