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
from .twolayer import ShiftedReLUNet

__all__ = [
    "INIT_BLOCK",
    "Network",
    "ShiftedReLUMLP",
    "ShiftedReLUNet",
    "as_dtype",
    "default_threshold",
    "firing_probability",
    "init_weights",
    "layer_scale",
    "normalize_rows",
    "reference_step",
]
