"""scikit-learn estimators around the shifted-ReLU network and any corrtree engine."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .nets import Preprocess, make_network
from .training import auto_lr, train

__all__ = ["SparseReLUClassifier", "SparseReLURegressor"]

ESTIMATOR_ADAM_LR = 1e-2  # the estimators' Adam learning rate (their runs are short)


class _SparseReLUBase(BaseEstimator):
    """``width``: the hidden layer's width; ``widths`` = (m_1, ..., m_L) instead trains a deep
    shifted-ReLU network (``corrtree.nets.ShiftedReLUMLP``, ``threshold`` then applies to
    every layer, None: each layer's default).

    Inputs go through ``preprocess_`` (a ``corrtree.nets.Preprocess`` fitted in ``fit``):
    with ``standardize``, each feature centred and scaled as ``StandardScaler`` does on the
    training points; with ``normalize`` (the default), each row then scaled to unit norm.

    ``recipe``: ``"adam"`` (cross-entropy for the classifier, squared loss for the regressor,
    a trained output layer, lazy Adam) or ``"paper"`` (squared loss, output layer fixed at
    +-1, SGD). Deep networks train the paper's recipe. ``learning_rate``: the step size
    (default: 1e-2 for Adam, tuned for the default 100 steps; for SGD
    ``corrtree.training.auto_lr``, 2 / (B p L)). Training runs ``steps`` steps, or
    ``epochs`` passes over the data when given (batches of ``batch_size``; None: full
    batch). ``early_stopping`` holds out a stratified ``validation_fraction`` of the
    training points, scores it every epoch, stops after ``n_iter_no_change`` evaluations
    without a lower held-out loss and keeps the best weights. ``verbose`` shows a progress
    bar. After ``fit``: ``net_`` (the network), ``history_`` (``corrtree.History``),
    ``n_iter_`` (steps run), ``loss_curve_`` (the loss of each step's batch), and with early
    stopping ``validation_scores_`` (held-out accuracy, or minus the held-out loss for the
    regressor) and ``best_validation_score_``. docs/recipes.md."""

    def __init__(
        self,
        width: int = 4096,
        widths: tuple[int, ...] | None = None,
        threshold: float | None = None,
        steps: int = 100,
        epochs: int | None = None,
        learning_rate: float | None = None,
        engine: str = "auto",
        engine_options: dict | None = None,
        batch_size: int | None = None,
        dtype: str = "float64",
        normalize: bool = True,
        standardize: bool = False,
        threads: int | None = None,
        random_state: int = 0,
        recipe: str = "adam",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        verbose: bool = False,
    ):
        self.width = width
        self.widths = widths
        self.threshold = threshold
        self.steps = steps
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.engine = engine
        self.engine_options = engine_options
        self.batch_size = batch_size
        self.dtype = dtype
        self.normalize = normalize
        self.standardize = standardize
        self.threads = threads
        self.random_state = random_state
        self.recipe = recipe
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.verbose = verbose

    def _inputs(self, X) -> np.ndarray:
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.preprocess_(X)

    def _preprocessed(self, X) -> np.ndarray:
        """The training points through the preprocessing fitted on them (``preprocess_``)."""
        self.preprocess_ = Preprocess.fit(X, normalize=self.normalize, standardize=self.standardize)
        return self.preprocess_(X)

    def _fit(self, X: np.ndarray, Y: np.ndarray, loss: str, stratify=None):
        if self.recipe not in ("adam", "paper"):
            raise ValueError(f"recipe must be 'adam' or 'paper', got {self.recipe!r}")
        held = None
        if self.early_stopping:
            if not 0 < self.validation_fraction < 1:
                raise ValueError(
                    f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
                )
            keep, out = train_test_split(
                np.arange(X.shape[0]),
                test_size=self.validation_fraction,
                random_state=self.random_state,
                stratify=stratify,
            )
            keep, out = np.sort(keep), np.sort(out)
            X, Y, held = X[keep], Y[keep], (X[out], Y[out])
        n = X.shape[0]
        self.net_ = make_network(
            X.shape[1],
            self.width,
            self.widths,
            threshold=self.threshold,
            seed=self.random_state,
            dtype=self.dtype,
            n_outputs=Y.shape[1],
        )
        b, depth = self.net_.thresholds[0], self.net_.depth
        adam = self.recipe == "adam" and depth == 1  # deep networks train the paper's step
        if self.learning_rate is not None:
            lr = self.learning_rate
        else:
            lr = ESTIMATOR_ADAM_LR if adam else auto_lr(n, self.batch_size, b, depth)
        recipe = {}
        if adam:
            recipe = {"loss": loss, "optimizer": "adam", "train_output": True}
        length = {"epochs": self.epochs} if self.epochs is not None else {"steps": self.steps}
        evaluation = {}
        if held is not None:
            evaluation = {"eval": held, "patience": self.n_iter_no_change}
        self.history_ = train(
            self.net_,
            X,
            Y,
            **length,
            lr=lr,
            **recipe,
            **evaluation,
            engine=self.engine,
            engine_options=self.engine_options,
            batch_size=self.batch_size,
            seed=self.random_state,
            threads=self.threads,
            progress=bool(self.verbose),
        )
        h = self.history_
        self.n_iter_ = h.steps
        self.loss_curve_ = list(h.loss)
        if held is not None:
            self.validation_scores_ = [
                a if a is not None else -v
                for a, v in zip(h.eval_accuracy, h.eval_loss, strict=True)
            ]
            self.best_validation_score_ = max(self.validation_scores_)
        return self

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "net_")
        X = self._inputs(X)
        return self.net_.outputs(X.astype(self.net_.dtype))


class SparseReLURegressor(RegressorMixin, _SparseReLUBase):
    """Regression with the shifted-ReLU network trained by a corrtree engine.

    ``y`` may be (n,) or (n, k).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True
        )
        X = self._preprocessed(X)
        Y = np.asarray(y, dtype=np.float64)
        self._single = Y.ndim == 1
        return self._fit(X, Y.reshape(Y.shape[0], -1), "squared")

    def predict(self, X) -> np.ndarray:
        out = self._outputs(X)
        return out[:, 0] if self._single else out


class SparseReLUClassifier(ClassifierMixin, _SparseReLUBase):
    """Classification with one output per class, trained on one-hot targets (softmax
    cross-entropy with ``recipe="adam"``, the squared loss with ``recipe="paper"``)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        X = self._preprocessed(X)
        check_classification_targets(y)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        codes = self._encoder.transform(y)
        Y = np.zeros((codes.size, max(1, self.classes_.size)))
        Y[np.arange(codes.size), codes] = 1.0
        # one class: nothing to tell apart, a single output fitted to it
        loss = "cross_entropy" if Y.shape[1] > 1 else "squared"
        return self._fit(X, Y, loss, stratify=codes if self.early_stopping else None)

    def decision_function(self, X) -> np.ndarray:
        out = self._outputs(X)
        return out[:, 1] - out[:, 0] if self.classes_.size == 2 else out

    def predict(self, X) -> np.ndarray:
        out = self._outputs(X)
        return self.classes_[np.argmax(out, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities: the softmax of the outputs (the model of the cross-entropy
        recipe; with ``recipe="paper"`` the outputs were fitted to one-hot targets by squared
        loss, and their softmax only ranks the classes)."""
        return softmax(self._outputs(X).astype(np.float64), axis=1)
