"""The network protocol every kind implements, and what the kinds share: the paper's
threshold, the seeded initialisation, row normalisation."""

from __future__ import annotations

import math

import numpy as np

from .._validation import FLOAT_DTYPES, as_float_array, as_positive_int

__all__ = [
    "INIT_BLOCK",
    "Network",
    "as_dtype",
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
    """Scale each row of X to unit Euclidean norm (all-zero rows stay zero), in X's float
    dtype. Each row is first divided by its largest absolute entry, so that neither huge rows
    (whose squares would overflow) nor tiny ones (whose squares would underflow) lose their
    norm."""
    X = as_float_array(X, "X", 2)
    peak = np.max(np.abs(X), axis=1, keepdims=True) if X.shape[1] else np.zeros((len(X), 1))
    Xs = X / np.where(peak > 0, peak, 1).astype(X.dtype)
    norms = np.linalg.norm(Xs, axis=1, keepdims=True)
    return Xs / np.where(norms > 0, norms, 1).astype(X.dtype)


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
    """The network protocol: what training, run folders, the model store and the estimators
    use of a network, whatever its kind (``ShiftedReLUNet``, ``ShiftedReLUMLP``,
    ``corrtree.distributed.ShardedNet`` whose neurons live on Ray workers,
    ``corrtree.nets.store.ShardedModel`` stored as shards).

    A kind sets ``d``, ``n_outputs``, ``dtype``, ``thresholds`` (one shift per hidden layer)
    and ``seed``, and implements ``outputs`` (of checked inputs), ``firing_counts``,
    ``finite``, ``validate`` and its state: ``state_dict()`` / ``from_state(state)`` (named
    arrays, written and read by ``corrtree.nets.store``), or, for a kind whose weights are
    not in this process (``sharded = True``), ``save(folder, kind, **meta)`` writing shards
    through the store. Inputs are checked, and outputs predicted and scored, here for every
    kind. Training finds a kind's stepper by the kind's type
    (``corrtree.training.make_stepper``)."""

    d: int
    n_outputs: int
    dtype: np.dtype
    thresholds: tuple[float, ...]
    sharded = False
    seed: int | None = None

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

    def validate(self) -> None:
        """Raise a clear error when the weights cannot be trained as they are."""

    def layers(self) -> list[np.ndarray]:
        """The hidden layers' weights as the math writes them, W_l (m_l, m_(l-1)); with
        ``A`` (m_L, C), ``thresholds`` and ``scale`` they are the whole network:
        f(x) = scale * A^T h_L, h_l = max(W_l h_(l-1) - b_l, 0), h_0 = x."""
        raise NotImplementedError(f"{type(self).__name__} is gathered first (gather())")

    def state_dict(self) -> dict[str, np.ndarray]:
        """The named arrays the model store writes (live arrays, not copies)."""
        raise NotImplementedError(f"{type(self).__name__} is saved with save(), as shards")

    @classmethod
    def from_state(cls, state: dict, seed: int | None = None) -> Network:
        """The network of ``state_dict()`` (copies the arrays)."""
        raise NotImplementedError

    def evaluate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, firing counts) of already-checked inputs; kinds may do both in one
        pass over the products."""
        return self.outputs(X), self.firing_counts(X)

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


def as_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
