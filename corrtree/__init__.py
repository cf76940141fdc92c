"""corrtree: exact sparse training of wide shifted-ReLU layers with weight-data correlation
trees (Alman, Liang, Song, Zhang, Zhuo, NeurIPS 2023)."""

import os

# OpenBLAS and numba's OpenMP pool take turns on the same cores. By default OpenBLAS's
# threads spin for about 2^28 cycles after each call, holding cores numba's threads are
# waiting for: a floor of about 8 ms per step on small problems (BENCHMARKS.md). Let them
# sleep at once. This takes effect only if set before OpenBLAS (numpy) is loaded; a value
# already in the environment wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import distributed as _distributed  # noqa: F401  (registers the sharded kinds)
from ._version import __version__
from .engines import ENGINES
from .nets import (
    ShiftedReLUMLP,
    ShiftedReLUNet,
    default_threshold,
    firing_probability,
    normalize_rows,
)
from .nets.store import load_model as load
from .structures import CorrelationDTree, CorrelationWTree
from .training import History, train

__all__ = [
    "ENGINES",
    "CorrelationDTree",
    "CorrelationWTree",
    "History",
    "ShiftedReLUMLP",
    "ShiftedReLUNet",
    "SparseReLUClassifier",
    "SparseReLURegressor",
    "__version__",
    "default_threshold",
    "firing_probability",
    "load",
    "normalize_rows",
    "train",
]


def __getattr__(name: str):
    # The scikit-learn estimators import scikit-learn; load them on first use.
    if name in ("SparseReLUClassifier", "SparseReLURegressor"):
        from . import sklearn as _sk

        return getattr(_sk, name)
    raise AttributeError(f"module 'corrtree' has no attribute {name!r}")
