"""A trained model as users use it: the network with the preprocessing its inputs went
through and the task it was trained for (class labels, or regression), saved together by the
model store and loaded by ``corrtree.load``.

    model = corrtree.load("runs/latest")        # a run folder, or its model.npz
    labels = model.predict(X_new)               # raw inputs: preprocessing is applied here
    P = model.predict_proba(X_new)              # classification: one column per class
    module = model.to_torch()                   # torch.nn.Module, the same outputs
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

from .._validation import as_float_array
from .base import Network, normalize_rows

__all__ = ["TASKS", "Model", "Preprocess"]

TASKS = ("classification", "regression")


@dataclass
class Preprocess:
    """What the inputs go through before the network, fitted on the training points:
    ``mean``/``scale`` (StandardScaler semantics: x -> (x - mean) / scale, features of zero
    variance kept as they are) when standardising, then, with ``normalize``, each row scaled
    to unit norm (the default threshold assumes it)."""

    normalize: bool = True
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def fit(cls, X, *, normalize: bool = True, standardize: bool = False) -> Preprocess:
        X = as_float_array(X, "X", 2)
        if not standardize:
            return cls(normalize)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(normalize, mean, scale)

    @property
    def standardize(self) -> bool:
        return self.mean is not None

    def __call__(self, X) -> np.ndarray:
        X = as_float_array(X, "X", 2)
        if self.mean is not None:
            if X.shape[1] != self.mean.size:
                raise ValueError(
                    f"X has {X.shape[1]} features but the model was fitted on {self.mean.size}"
                )
            X = (X - self.mean) / self.scale
        return normalize_rows(X) if self.normalize else X

    def state(self) -> dict[str, np.ndarray]:
        out = {"prep.normalize": np.array(self.normalize)}
        if self.mean is not None:
            out["prep.mean"], out["prep.scale"] = self.mean, self.scale
        return out

    @classmethod
    def from_state(cls, state: dict, default_normalize: bool = True) -> Preprocess:
        if "prep.normalize" not in state:
            return cls(default_normalize)
        mean = state.get("prep.mean")
        return cls(
            bool(state["prep.normalize"]),
            None if mean is None else np.asarray(mean, dtype=np.float64),
            None if mean is None else np.asarray(state["prep.scale"], dtype=np.float64),
        )


class Model:
    """A network with its preprocessing and task (see the module docstring).

    ``task``: "classification" (``classes_`` the class labels as given in the training
    data, in the order of the network's outputs; one output means two classes, the positive
    one ``classes_[1]``) or "regression". ``loss``: the loss it was trained with, which says
    how outputs become probabilities (softmax for cross-entropy, the logistic function for
    the logistic loss; for the squared loss, the outputs are scores and ``predict_proba`` is
    their softmax).
    """

    def __init__(
        self,
        net: Network,
        preprocess: Preprocess | None = None,
        task: str = "regression",
        classes=None,
        loss: str = "squared",
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.net = net
        self.preprocess = preprocess or Preprocess()
        self.task = task
        self.classes_ = None if classes is None else np.asarray(classes)
        self.loss = loss
        if task == "classification":
            if self.classes_ is None:
                raise ValueError("a classification model needs its class labels")
            want = 2 if net.n_outputs == 1 else net.n_outputs
            if self.classes_.size != want:
                raise ValueError(
                    f"{self.classes_.size} class labels for a network with {net.n_outputs} outputs"
                )

    @property
    def n_features_in_(self) -> int:
        return self.preprocess.mean.size if self.preprocess.standardize else self.net.d

    def outputs(self, X) -> np.ndarray:
        """(n, n_outputs) network outputs of raw inputs."""
        X = self.preprocess(X)
        return self.net.outputs(self.net.check_X(X))

    def predict(self, X) -> np.ndarray:
        """Class labels (classification) or the outputs, (n,) for one output (regression)."""
        return self.predictions(self.outputs(X))

    def predictions(self, F: np.ndarray) -> np.ndarray:
        """``predict`` from already computed outputs F (n, n_outputs)."""
        if self.task == "regression":
            return F[:, 0] if F.shape[1] == 1 else F
        if F.shape[1] == 1:
            return self.classes_[(F[:, 0] > 0).astype(np.int64)]
        return self.classes_[F.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """(n, classes) probabilities, columns in the order of ``classes_``."""
        if self.task != "classification":
            raise ValueError("predict_proba is for classification models; this one regresses")
        F = self.outputs(X).astype(np.float64)
        if F.shape[1] == 1:
            p = expit(F[:, 0] if self.loss == "logistic" else 2 * F[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(F, axis=1)

    def to_torch(self):
        """A ``torch.nn.Module`` computing ``outputs`` (preprocessing included) in the
        network's dtype (PyTorch is an optional extra: ``pip install 'corrtree[torch]'``)."""
        from ._torch import to_torch  # PyTorch: an optional extra

        return to_torch(self)

    def __repr__(self) -> str:
        what = (
            f"classification of {self.classes_.size} classes"
            if self.task == "classification"
            else "regression"
        )
        prep = ("standardised, " if self.preprocess.standardize else "") + (
            "rows normalised" if self.preprocess.normalize else "raw rows"
        )
        return f"Model({self.net!r}; {what}; inputs {prep})"
