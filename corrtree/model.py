"""The paper's two-layer network with a shifted ReLU, its weights and their initialisation."""

from __future__ import annotations

import math

import numpy as np

from ._blas import matmul
from ._validation import FLOAT_DTYPES, as_float_array, as_positive_int, as_scalar

__all__ = [
    "INIT_BLOCK",
    "Network",
    "ShiftedReLUNet",
    "default_threshold",
    "firing_probability",
    "init_weights",
    "normalize_rows",
]

INIT_BLOCK = 4096  # neurons per seed-sequence child of the initialisation


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


def init_weights(
    d: int, rows: tuple[int, int], *, n_outputs: int = 1, seed: int = 0, dtype=np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Initial weights of neurons ``rows = (lo, hi)``: w_r ~ N(0, I_d) and a_r uniform on
    {-1, +1}^n_outputs.

    Neuron r belongs to block k = r // INIT_BLOCK, whose rows are drawn (in float64, then cast)
    from the seed-sequence child ``SeedSequence(seed, spawn_key=(k, 0))`` and its second-layer
    signs from ``(k, 1)``. Any range of neurons is therefore reproducible on its own, without
    drawing the others, and a full initialisation is the concatenation of its blocks: what a
    shard of neurons needs.
    """
    lo, hi = (int(v) for v in rows)
    if not 0 <= lo <= hi:
        raise ValueError(f"rows must be a range (lo, hi) with 0 <= lo <= hi, got {rows}")
    d = as_positive_int(d, "d")
    n_outputs = as_positive_int(n_outputs, "n_outputs")
    W = np.empty((hi - lo, d), dtype=dtype)
    A = np.empty((hi - lo, n_outputs), dtype=dtype)
    for k in range(lo // INIT_BLOCK, -(-hi // INIT_BLOCK)):
        start = k * INIT_BLOCK
        a, b = max(lo, start), min(hi, start + INIT_BLOCK)
        # Draw rows start .. b of the block (a prefix of the block's stream), keep a .. b.
        w = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k, 0)))
        s = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k, 1)))
        W[a - lo : b - lo] = w.standard_normal((b - start, d))[a - start :]
        A[a - lo : b - lo] = np.where(s.random((b - start, n_outputs))[a - start :] < 0.5, -1, 1)
    return W, A


class Network:
    """What training, run folders and the estimators use of a network, whatever its kind
    (``ShiftedReLUNet``; ``corrtree.deep.ShiftedReLUMLP``; ``corrtree.distributed.ShardedNet``,
    whose neurons live on Ray workers; ``corrtree.sharded.ShardedModel``, stored as shards).

    A kind sets ``d``, ``n_outputs``, ``dtype`` and ``thresholds`` (one shift per hidden
    layer) and implements ``outputs`` (of checked inputs), ``firing_counts`` and ``finite``;
    ``sharded`` says that its weights are written by its own ``save`` (shards), not as one
    state. Inputs are checked, and outputs predicted and scored, here for every kind."""

    d: int
    n_outputs: int
    dtype: np.dtype
    thresholds: tuple[float, ...]
    sharded = False

    @property
    def depth(self) -> int:
        """Hidden layers (1 for the paper's network)."""
        return len(self.thresholds)

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

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """(n, n_outputs) outputs of already-checked inputs."""
        raise NotImplementedError

    def firing_counts(self, X: np.ndarray) -> np.ndarray:
        """Hidden units firing on each point of already-checked inputs (all layers)."""
        raise NotImplementedError

    def finite(self) -> bool:
        """Whether every weight is finite."""
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        """Network outputs: (n,) for one output, (n, n_outputs) otherwise."""
        out = self.outputs(self.check_X(X))
        return out[:, 0] if self.n_outputs == 1 else out

    def loss(self, X, y) -> float:
        """1/2 * sum of squared errors over all points and outputs."""
        X = self.check_X(X)
        y = self.check_y(y, X.shape[0])
        e = self.outputs(X) - y
        return 0.5 * float(np.sum(e.astype(np.float64) ** 2))


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
        dtype = _as_dtype(dtype)
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

    # --- outputs ----------------------------------------------------------------------------
    def hidden(self, X) -> np.ndarray:
        """Activations sigma_b(<w_r, x_i>), shape (n, width)."""
        X = self.check_X(X)
        return np.maximum(X @ self._W.T - self.dtype.type(self.threshold), 0)

    def outputs(self, X: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(n, n_outputs) outputs of already-checked inputs, in blocks of ``chunk`` points."""
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        scale = self.dtype.type(self.scale)
        b = self.dtype.type(self.threshold)
        for lo in range(0, X.shape[0], chunk):
            Z = matmul(X[lo : lo + chunk], self._W.T)
            Z -= b
            np.maximum(Z, 0, out=Z)
            np.matmul(Z, self._A, out=out[lo : lo + chunk])
        out *= scale
        return out

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


def _as_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
