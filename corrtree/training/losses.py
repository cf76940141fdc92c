"""Losses: a batch's outputs F and targets Y to (loss, dLoss/dF).

Every loss is a sum over the batch's points, as the paper's squared loss. The training step
calls it once per step and hands dLoss/dF to the engines in place of the residuals F - Y, so
the engines never see which loss is trained. A loss also owns what its targets look like
(``targets``: class labels become one-hot rows) and how its outputs are scored
(``accuracy``).

To add a loss, subclass ``Loss`` (``__call__``, and ``targets`` and ``accuracy`` where the
defaults do not fit) and register it in ``LOSSES``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .._validation import as_float_array

__all__ = ["LOSSES", "CrossEntropy", "Logistic", "Loss", "Squared", "get_loss"]


class Loss:
    """Base of the losses. ``__call__(F, Y)`` returns the loss (a float64 sum over the batch)
    and dLoss/dF in F's dtype (the engines' residuals)."""

    name = "loss"

    def __call__(self, F: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def targets(self, y, n: int, n_outputs: int, dtype) -> np.ndarray:
        """The targets as an (n, n_outputs) array of ``dtype``."""
        ndim = np.ndim(y)
        y = as_float_array(y, "y", ndim if ndim in (1, 2) else 1, dtype=dtype)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape != (n, n_outputs):
            raise ValueError(
                f"y has shape {y.shape} but expected ({n},) or ({n}, {n_outputs}) for {n} "
                f"points and {n_outputs} outputs"
            )
        return y

    def accuracy(self, F: np.ndarray, Y: np.ndarray) -> float | None:
        """The fraction of points classified right, or None where the targets are not
        classes (one output of the squared loss: regression)."""
        if F.shape[1] < 2:
            return None
        return float(np.mean(F.argmax(axis=1) == Y.argmax(axis=1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Squared(Loss):
    """1/2 sum ||F - Y||^2 (the paper's loss); dLoss/dF = F - Y."""

    name = "squared"

    def __call__(self, F, Y):
        E = F - Y
        e64 = E.ravel().astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is divergence
            return 0.5 * float(np.dot(e64, e64)), E


class CrossEntropy(Loss):
    """Softmax cross-entropy, - sum_i sum_c Y_ic log softmax(F_i)_c, over C >= 2 outputs;
    dLoss/dF = softmax(F) * sum_c Y_c - Y. Targets: class labels 0 .. C-1 or rows of class
    probabilities (one-hot)."""

    name = "cross_entropy"

    def targets(self, y, n, n_outputs, dtype):
        if n_outputs < 2:
            raise ValueError(
                f"cross-entropy needs a network with at least 2 outputs, got {n_outputs}; "
                "use loss='logistic' for two classes on one output"
            )
        if np.ndim(y) == 1:
            return _one_hot(y, n, n_outputs, dtype)
        Y = super().targets(y, n, n_outputs, dtype)
        if np.any(Y < 0):
            raise ValueError("cross-entropy targets must be class labels or probabilities >= 0")
        return Y

    def __call__(self, F, Y):
        with np.errstate(over="ignore", invalid="ignore"):
            Z = F - F.max(axis=1, keepdims=True)
            P = np.exp(Z)
            s = P.sum(axis=1, keepdims=True)
            P /= s
            logp = Z - np.log(s)
            loss = -float(np.sum(Y.astype(np.float64) * logp))
            mass = Y.sum(axis=1, keepdims=True)
            P *= mass
            P -= Y
        return loss, P


class Logistic(Loss):
    """Two classes on one output: sum_i log(1 + exp(F_i)) - Y_i F_i with Y in {0, 1}
    (the positive class is 1); dLoss/dF = sigmoid(F) - Y. Labels -1/+1 are taken as 0/1."""

    name = "logistic"

    def targets(self, y, n, n_outputs, dtype):
        if n_outputs != 1:
            raise ValueError(f"the logistic loss needs a network with 1 output, got {n_outputs}")
        Y = super().targets(y, n, 1, dtype)
        values = np.unique(Y)
        if np.array_equal(values, [-1, 1]) or np.array_equal(values, [-1]):
            Y = (Y > 0).astype(dtype)
        elif not np.all((Y == 0) | (Y == 1)):
            raise ValueError(
                f"logistic targets must be 0/1 (or -1/+1) labels, got values {values[:5]}"
            )
        return Y

    def __call__(self, F, Y):
        with np.errstate(over="ignore", invalid="ignore"):
            f64 = F.astype(np.float64)
            loss = float(np.sum(np.logaddexp(0.0, f64) - Y * f64))
            return loss, (expit(F) - Y).astype(F.dtype, copy=False)

    def accuracy(self, F, Y):
        return float(np.mean((F[:, 0] > 0) == (Y[:, 0] > 0.5)))


LOSSES: dict[str, type[Loss]] = {
    "cross_entropy": CrossEntropy,
    "logistic": Logistic,
    "squared": Squared,
}


def get_loss(loss) -> Loss:
    """A ``Loss`` from a name in ``LOSSES`` or an instance (returned as it is)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or a Loss instance")


def _one_hot(labels, n: int, C: int, dtype) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"y has shape {labels.shape} but expected ({n},) labels for {n} points")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("class labels must be integers 0 .. C-1")
    elif labels.dtype.kind not in "iub":
        raise TypeError(f"class labels must be integers, got dtype {labels.dtype}")
    lab = labels.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= C):
        bad = lab[(lab < 0) | (lab >= C)][0]
        raise IndexError(f"class label {bad} is out of range for a network with {C} outputs")
    Y = np.zeros((n, C), dtype=dtype)
    Y[np.arange(n), lab] = 1
    return Y
