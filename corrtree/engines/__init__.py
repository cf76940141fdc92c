"""Training engines: one interface, one arithmetic (dense GD on the shifted-ReLU network).

Every engine owns the preprocessing for a network and a dataset and performs one gradient
step at a time, on all points or on a mini-batch of rows. All of them compute exactly what
the dense reference computes; they differ in how they find the firing pairs and how much work
they spend on pairs that do not fire.
"""

from __future__ import annotations

from .base import Engine, StepInfo
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
    "LSHEngine",
    "StepInfo",
    "WTreeEngine",
    "make_engine",
]


AUTO_DENSE_PAIRS = 1 << 20  # below n * m = 2^20 pairs, BLAS overheads are lower


def choose_engine(n: int, m: int) -> str:
    """The engine ``auto`` picks: dense for small problems, where one BLAS call beats any
    bookkeeping; otherwise ``certified``, the fastest exact engine here, whose memory is
    O(candidates) rather than the trees' O(nm)."""
    return "dense" if n * m < AUTO_DENSE_PAIRS else "certified"


def make_engine(name: str, net, X, Y, **kwargs) -> Engine:
    """Build the engine called ``name`` (or ``"auto"``) for ``net`` on data (X, Y)."""
    if name == "auto":
        name = choose_engine(X.shape[0], net.width)
    cls = ENGINES.get(name) or APPROXIMATE.get(name)
    if cls is None:
        raise ValueError(
            f"unknown engine {name!r}; choose one of {sorted(ENGINES)}, 'auto', or the "
            f"approximate {sorted(APPROXIMATE)}"
        )
    return cls(net, X, Y, **kwargs)
