"""The paper's two-layer network with a shifted ReLU."""

from __future__ import annotations

import math

import numpy as np

from ._validation import as_float_array, as_positive_int, as_scalar

__all__ = ["ShiftedReLUNet", "default_threshold", "firing_probability", "normalize_rows"]


def default_threshold(width: int) -> float:
    """The paper's b = sqrt(0.4 ln m), for which exp(-b^2 / 2) = m^(-1/5).

    It assumes unit-norm inputs: then <w_r, x> ~ N(0, 1) at initialisation.
    """
    width = as_positive_int(width, "width")
    return math.sqrt(0.4 * math.log(width))


def firing_probability(threshold: float) -> float:
    """P(z > b) for z ~ N(0, 1): the expected firing fraction at initialisation."""
    return 0.5 * math.erfc(threshold / math.sqrt(2.0))


def normalize_rows(X) -> np.ndarray:
    """Scale each row of X to unit Euclidean norm (all-zero rows stay zero)."""
    X = as_float_array(X, "X", 2)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)


class ShiftedReLUNet:
    """f(W, x) = (1/sqrt m) sum_r a_r max(<w_r, x> - b, 0); only W is trained.

    Parameters
    ----------
    d : input dimension.
    width : number of hidden neurons m.
    threshold : the shift b >= 0; None means ``default_threshold(width)``, which assumes
        unit-norm inputs (see ``normalize_rows``).
    seed : seeds w_r ~ N(0, I_d) and a_r uniform on {-1, +1}.
    dtype : float32 or float64, for W and every computation of the engines.
    n_outputs : C outputs sharing the hidden layer; the second layer is then (width, C).
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
        self.d = as_positive_int(d, "d")
        self.width = as_positive_int(width, "width")
        self.n_outputs = as_positive_int(n_outputs, "n_outputs")
        if threshold is None:
            threshold = default_threshold(self.width)
        threshold = as_scalar(threshold, "threshold")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.W = rng.standard_normal((self.width, self.d)).astype(dtype)
        a = rng.choice(np.array([-1.0, 1.0]), size=(self.width, self.n_outputs)).astype(dtype)
        self._A = a

    @property
    def a(self) -> np.ndarray:
        """Second layer: (width,) for one output, (width, n_outputs) otherwise."""
        return self._A[:, 0] if self.n_outputs == 1 else self._A

    @property
    def m(self) -> int:
        return self.width

    def check_X(self, X) -> np.ndarray:
        X = as_float_array(X, "X", 2, dtype=self.dtype)
        if X.shape[1] != self.d:
            raise ValueError(
                f"X has {X.shape[1]} features but the network was built for d={self.d}"
            )
        return X

    def check_y(self, y, n: int) -> np.ndarray:
        """Targets as an (n, n_outputs) array."""
        ndim = np.ndim(y)
        y = as_float_array(y, "y", ndim if ndim in (1, 2) else 1, dtype=self.dtype)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape != (n, self.n_outputs):
            raise ValueError(
                f"y has shape {y.shape} but expected ({n},) or ({n}, "
                f"{self.n_outputs}) for {n} points and {self.n_outputs} outputs"
            )
        return y

    def hidden(self, X) -> np.ndarray:
        """Activations sigma_b(<w_r, x_i>), shape (n, width)."""
        X = self.check_X(X)
        return np.maximum(X @ self.W.T - self.dtype.type(self.threshold), 0)

    def _outputs(self, X: np.ndarray, chunk: int = 1024) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        scale = self.dtype.type(1 / math.sqrt(self.width))
        b = self.dtype.type(self.threshold)
        for lo in range(0, X.shape[0], chunk):
            Z = X[lo : lo + chunk] @ self.W.T
            out[lo : lo + chunk] = (np.maximum(Z - b, 0) @ self._A) * scale
        return out

    def predict(self, X) -> np.ndarray:
        """Network outputs: (n,) for one output, (n, n_outputs) otherwise."""
        out = self._outputs(self.check_X(X))
        return out[:, 0] if self.n_outputs == 1 else out

    def loss(self, X, y) -> float:
        """1/2 * sum of squared errors over all points and outputs."""
        X = self.check_X(X)
        y = self.check_y(y, X.shape[0])
        e = self._outputs(X) - y
        return 0.5 * float(np.sum(e.astype(np.float64) ** 2))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "a": self._A, "threshold": np.array(self.threshold)}

    @classmethod
    def from_state(cls, state: dict, seed: int = 0) -> ShiftedReLUNet:
        W = np.asarray(state["W"])
        A = np.asarray(state["a"])
        A = A[:, None] if A.ndim == 1 else A
        net = cls(
            W.shape[1],
            W.shape[0],
            float(state["threshold"]),
            seed=seed,
            dtype=W.dtype,
            n_outputs=A.shape[1],
        )
        net.W = np.array(W, order="C")
        net._A = np.array(A, dtype=W.dtype, order="C")
        return net

    def __repr__(self) -> str:
        return (
            f"ShiftedReLUNet(d={self.d}, width={self.width}, threshold={self.threshold:.4g}, "
            f"n_outputs={self.n_outputs}, dtype={self.dtype})"
        )
