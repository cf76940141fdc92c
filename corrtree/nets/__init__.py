"""Networks: the protocol every kind implements (``Network``), the paper's two-layer network
(``ShiftedReLUNet``), deep networks (``ShiftedReLUMLP``), and the model store that writes and
reads every kind (``corrtree.nets.store``)."""

from .base import (
    INIT_BLOCK,
    Network,
    as_dtype,
    default_threshold,
    firing_probability,
    init_weights,
    normalize_rows,
)
from .deep import ShiftedReLUMLP, layer_scale, reference_step
from .model import Model, Preprocess
from .twolayer import ShiftedReLUNet

__all__ = [
    "INIT_BLOCK",
    "Model",
    "Network",
    "Preprocess",
    "ShiftedReLUMLP",
    "ShiftedReLUNet",
    "as_dtype",
    "default_threshold",
    "firing_probability",
    "init_weights",
    "layer_scale",
    "make_network",
    "normalize_rows",
    "reference_step",
]


def make_network(
    d: int,
    width: int | None = None,
    widths=None,
    *,
    threshold=None,
    seed: int = 0,
    dtype="float64",
    n_outputs: int = 1,
) -> Network:
    """A fresh network: ``ShiftedReLUMLP(d, widths, ...)`` when hidden layers ``widths`` are
    given (``threshold``: one for all layers or one per layer), else the paper's
    ``ShiftedReLUNet(d, width, ...)``."""
    if widths is not None:
        return ShiftedReLUMLP(
            d, widths, n_outputs=n_outputs, thresholds=threshold, seed=seed, dtype=dtype
        )
    return ShiftedReLUNet(d, width, threshold, seed=seed, dtype=dtype, n_outputs=n_outputs)
