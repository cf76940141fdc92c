"""The paper's two-layer network with a shifted ReLU."""

from __future__ import annotations

import math

import numpy as np

from .. import _progress
from .._blas import matmul
from .._validation import as_float_array, as_positive_int, as_scalar
from .base import Network, as_dtype, default_threshold, init_weights

__all__ = ["ShiftedReLUNet"]


class ShiftedReLUNet(Network):
    """f(W, x) = scale * sum_r a_r max(<w_r, x> - b, 0), scale = 1/sqrt(m); only W is trained.

    Parameters
    ----------
    d : input dimension.
    width : number of hidden neurons m.
    threshold : the shift b >= 0; None means ``default_threshold(width)``, which assumes
        unit-norm inputs (see ``normalize_rows``).
    seed : seeds w_r ~ N(0, I_d) and a_r uniform on {-1, +1} (see ``init_weights``).
    dtype : float32 or float64, for W and every computation of the engines.
    n_outputs : C outputs sharing the hidden layer; the second layer ``A`` is then (width, C).

    ``ShiftedReLUNet.from_weights(W, A, threshold)`` wraps existing weights instead.
    """

    def __init__(
        self,
        d: int,
        width: int,
        threshold: float | None = None,
        seed: int = 0,
        dtype=np.float64,
        n_outputs: int = 1,
    ):
        width = as_positive_int(width, "width")
        dtype = as_dtype(dtype)
        W, A = init_weights(d, (0, width), n_outputs=n_outputs, seed=seed, dtype=dtype)
        self._set(W, A, threshold, None)
        self.seed = seed

    @classmethod
    def from_weights(
        cls, W, A, threshold: float | None = None, *, scale: float | None = None
    ) -> ShiftedReLUNet:
        """A network over existing weights: W (m, d), A (m,) or (m, C) in W's dtype.

        ``scale`` is the output scale (default 1/sqrt(m)); a block of neurons of a wider network
        (a shard) keeps the whole network's scale. The arrays are used as they are when they are
        C-contiguous, writable and of a float dtype (float32 or float64), else copied.
        """
        W = as_float_array(W, "W", 2)
        dtype = W.dtype
        if not W.flags.writeable:
            W = W.copy()
        A = as_float_array(A, "A", np.ndim(A) if np.ndim(A) in (1, 2) else 2, dtype=dtype)
        A = A[:, None] if A.ndim == 1 else A
        if not A.flags.writeable:
            A = A.copy()
        net = cls.__new__(cls)
        net._set(W, A, threshold, scale)
        net.seed = None
        return net

    def _set(self, W, A, threshold, scale) -> None:
        self.width, self.d = W.shape
        if self.width < 1 or self.d < 1:
            raise ValueError(f"W must have at least one row and one column, got shape {W.shape}")
        if A.shape[0] != self.width:
            raise ValueError(f"A has {A.shape[0]} rows but W has {self.width}: one row per neuron")
        self.n_outputs = A.shape[1]
        if self.n_outputs < 1:
            raise ValueError(f"A must have at least one column, got shape {A.shape}")
        if threshold is None:
            threshold = default_threshold(self.width)
        threshold = as_scalar(threshold, "threshold")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.dtype = W.dtype
        self.scale = 1 / math.sqrt(self.width) if scale is None else as_scalar(scale, "scale")
        self._W, self._A = W, A

    # --- the weights ------------------------------------------------------------------------
    @property
    def W(self) -> np.ndarray:
        """First layer, (width, d): the trained weights, updated in place by training."""
        return self._W

    @W.setter
    def W(self, value) -> None:
        self._W = self._layer(value, "W", (self.width, self.d), f"d={self.d}")

    @property
    def A(self) -> np.ndarray:
        """Second layer, (width, n_outputs): +-1 at initialisation, fixed in the paper's
        recipe, trained with ``train(..., train_output=True)``."""
        return self._A

    @A.setter
    def A(self, value) -> None:
        self._A = self._layer(
            value, "A", (self.width, self.n_outputs), f"n_outputs={self.n_outputs}"
        )

    def _layer(self, value, name: str, shape: tuple[int, int], other: str) -> np.ndarray:
        """An assigned layer in the network's dtype, of the network's shape, writable."""
        arr = as_float_array(value, name, 2, dtype=self.dtype)
        if arr.shape != shape:
            raise ValueError(
                f"{name} has shape {arr.shape} but the network has width={self.width}, {other}"
            )
        return arr if arr.flags.writeable else arr.copy()

    @property
    def a(self) -> np.ndarray:
        """Second layer as the paper writes it: (width,) for one output, else ``A``."""
        return self._A[:, 0] if self.n_outputs == 1 else self._A

    @property
    def m(self) -> int:
        return self.width

    def validate(self) -> None:
        """Check the weights as training needs them: shapes, dtype, finite, writable,
        C-contiguous. Raises the same errors as bad X or y (training calls this first)."""
        for name, arr, shape in (
            ("W", self._W, (self.width, self.d)),
            ("A", self._A, (self.width, self.n_outputs)),
        ):
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"net.{name} must be a NumPy array, got {type(arr).__name__}")
            if arr.dtype != self.dtype:
                raise TypeError(
                    f"net.{name} has dtype {arr.dtype} but the network is {self.dtype}; "
                    f"assign it through net.{name} = ... to convert"
                )
            if arr.shape != shape:
                raise ValueError(f"net.{name} has shape {arr.shape}, expected {shape}")
            if not (arr.flags.c_contiguous and arr.flags.writeable):
                raise ValueError(f"net.{name} must be a C-contiguous, writable array")
            as_float_array(arr, f"net.{name}", 2)  # finiteness, with the first bad index

    @property
    def thresholds(self) -> tuple[float]:
        return (self.threshold,)

    def layers(self) -> list[np.ndarray]:
        """The hidden layers' weights as the math writes them: [W (width, d)]."""
        return [self._W]

    # --- outputs ----------------------------------------------------------------------------
    def hidden(self, X) -> np.ndarray:
        """Activations sigma_b(<w_r, x_i>), shape (n, width)."""
        X = self.check_X(X)
        return np.maximum(X @ self._W.T - self.dtype.type(self.threshold), 0)

    def outputs(self, X: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(n, n_outputs) outputs of already-checked inputs, in blocks of ``chunk`` points."""
        return self.evaluate(X, chunk)[0]

    def evaluate(self, X: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, firing counts) from one product X W^T per block of points."""
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        counts = np.empty(X.shape[0], dtype=np.int64)
        b = self.dtype.type(self.threshold)
        with _progress.bar(X.shape[0], "scoring") as bar:
            for lo in range(0, X.shape[0], chunk):
                Z = matmul(X[lo : lo + chunk], self._W.T)
                Z -= b
                counts[lo : lo + chunk] = (Z > 0).sum(axis=1)
                np.maximum(Z, 0, out=Z)
                np.matmul(Z, self._A, out=out[lo : lo + chunk])
                bar.update(Z.shape[0])
        out *= self.dtype.type(self.scale)
        return out, counts

    def firing_counts(self, X: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Neurons firing on each point, computed densely in blocks."""
        out = np.empty(X.shape[0], dtype=np.int64)
        b = self.dtype.type(self.threshold)
        for lo in range(0, X.shape[0], chunk):
            out[lo : lo + chunk] = (matmul(X[lo : lo + chunk], self._W.T) > b).sum(axis=1)
        return out

    def finite(self) -> bool:
        return bool(np.isfinite(np.sum(self._W, dtype=np.float64) + np.sum(self._A)))

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "W": self._W,
            "a": self._A,
            "threshold": np.array(self.threshold),
            "scale": np.array(self.scale),
        }

    @classmethod
    def from_state(cls, state: dict, seed: int | None = None) -> ShiftedReLUNet:
        """The network of ``state_dict()`` (copies the arrays)."""
        W = np.array(state["W"], order="C")
        A = np.array(state["a"], dtype=W.dtype, order="C")
        scale = float(state["scale"]) if "scale" in state else None
        net = cls.from_weights(W, A, float(state["threshold"]), scale=scale)
        net.seed = seed
        return net

    def __repr__(self) -> str:
        return (
            f"ShiftedReLUNet(d={self.d}, width={self.width}, threshold={self.threshold:.4g}, "
            f"n_outputs={self.n_outputs}, dtype={self.dtype})"
        )
