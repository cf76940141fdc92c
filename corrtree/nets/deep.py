"""Deep shifted-ReLU networks, trained exactly at the cost of the units that fire.

The network: h^0 = x (unit norm), z^l = W_l h^(l-1), h^l = max(z^l - b_l, 0) for l = 1..L,
f(x) = (1 / sqrt(m_L)) A^T h^L with A in {+1, -1}^(m_L x C) fixed at initialisation. Every W_l
is trained. With L = 1 it is ``ShiftedReLUNet``, weight for weight.

Initialisation. W_1 has N(0, 1) entries (so z^1 ~ N(0, 1) for unit-norm x), as the paper's
network. For l >= 2 the entries are N(0, s_l^2) with

    s_l^2 = 1 / (m_(l-1) g(b_(l-1))),   g(b) = E[(z - b)_+^2] = (1 + b^2) Q(b) - b phi(b),

z ~ N(0, 1), Q the normal tail and phi its density: E||h^(l-1)||^2 = m_(l-1) g(b_(l-1)), so
z^l has unit variance at initialisation on any unit-norm input (tested on the training data),
and b_l = sqrt(0.4 ln m_l) gives every layer the paper's firing rate m_l^(-1/5).

Training (exact, over firing units only): ``corrtree.training.deep``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _progress
from .._validation import as_float_array, as_positive_int, as_scalar
from .base import Network, as_dtype, default_threshold, init_weights

__all__ = ["ShiftedReLUMLP", "layer_scale", "reference_step"]


def relu_second_moment(b: float) -> float:
    """g(b) = E[max(z - b, 0)^2] for z ~ N(0, 1)."""
    Q = 0.5 * math.erfc(b / math.sqrt(2.0))
    phi = math.exp(-0.5 * b * b) / math.sqrt(2.0 * math.pi)
    return (1.0 + b * b) * Q - b * phi


def layer_scale(m_prev: int, b_prev: float) -> float:
    """Standard deviation of layer l's weights (l >= 2): 1 / sqrt(m_(l-1) g(b_(l-1))).
    g is floored at 1e-8 (b >= 5.3, where the layer below almost never fires), which keeps
    the weights finite; the paper's thresholds are far below (b < 2.7 for m <= 2^26)."""
    return 1.0 / math.sqrt(m_prev * max(relu_second_moment(b_prev), 1e-8))


class ShiftedReLUMLP(Network):
    """A deep shifted-ReLU network (see the module docstring).

    Parameters
    ----------
    d : input dimension.
    widths : (m_1, ..., m_L), the hidden layers' widths.
    thresholds : (b_1, ..., b_L); None: b_l = sqrt(0.4 ln m_l) for every layer.
    seed : layer 1 and, for L = 1, A exactly as ``ShiftedReLUNet(d, m_1, seed=seed)``; layer
        l >= 2 from ``init_weights`` seeded (seed, l).
    dtype : float32 or float64.
    n_outputs : C outputs.

    ``W1`` is (m_1, d) as in ``ShiftedReLUNet``; layer l >= 2 is stored input-major as
    ``Wt[l]`` = W_l^T, (m_(l-1), m_l); ``weights(l)`` returns W_l as the math writes it.
    """

    def __init__(
        self,
        d: int,
        widths,
        n_outputs: int = 1,
        thresholds=None,
        seed: int = 0,
        dtype=np.float64,
    ):
        d = as_positive_int(d, "d")
        widths = _as_widths(widths)
        n_outputs = as_positive_int(n_outputs, "n_outputs")
        dtype = as_dtype(dtype)
        L = len(widths)
        W1, A = init_weights(d, (0, widths[0]), n_outputs=n_outputs, seed=seed, dtype=dtype)
        Wt = {}
        b = _as_thresholds(thresholds, widths)
        for l in range(2, L + 1):
            # W_l^T's rows are drawn as rows (input-major): iid entries, no transpose needed;
            # drawn in float64 blocks, cast, then scaled in the network's dtype (no float64
            # copy of the whole layer).
            T, _ = init_weights(widths[l - 1], (0, widths[l - 2]), seed=(seed, l), dtype=dtype)
            T *= dtype.type(layer_scale(widths[l - 2], b[l - 2]))
            Wt[l] = T
        if L > 1:  # the output signs of the last layer (they do not depend on d)
            _, A = init_weights(
                1, (0, widths[-1]), n_outputs=n_outputs, seed=(seed, L, 1), dtype=dtype
            )
        self._set(W1, Wt, A, b)
        self.seed = seed

    def _set(self, W1, Wt, A, thresholds) -> None:
        self.W1, self.Wt, self.A = W1, dict(Wt), A
        self.d = W1.shape[1]
        self.widths = (W1.shape[0],) + tuple(Wt[l].shape[1] for l in sorted(Wt))
        self.thresholds = tuple(float(t) for t in thresholds)
        self.n_outputs = A.shape[1]
        self.dtype = W1.dtype
        self.scale = 1.0 / math.sqrt(self.widths[-1])
        for l in sorted(Wt):
            want = (self.widths[l - 2], self.widths[l - 1])
            if Wt[l].shape != want or Wt[l].dtype != self.dtype:
                raise ValueError(f"layer {l} has shape {Wt[l].shape}, expected {want}")
        if A.shape[0] != self.widths[-1]:
            raise ValueError(f"A has {A.shape[0]} rows but the last layer {self.widths[-1]}")

    @classmethod
    def from_weights(cls, weights, A, thresholds=None) -> ShiftedReLUMLP:
        """A network over existing weights: ``weights`` = [W_1 (m_1, d), W_2 (m_2, m_1), ...]
        as the math writes them; A (m_L, C) or (m_L,)."""
        W = [as_float_array(w, f"W_{l + 1}", 2) for l, w in enumerate(weights)]
        if not W:
            raise ValueError("weights must hold at least one layer")
        dtype = W[0].dtype
        for l in range(1, len(W)):
            if W[l].shape[1] != W[l - 1].shape[0]:
                raise ValueError(
                    f"W_{l + 1} has {W[l].shape[1]} columns but layer {l} has "
                    f"{W[l - 1].shape[0]} units"
                )
        A = as_float_array(A, "A", np.ndim(A) if np.ndim(A) in (1, 2) else 2, dtype=dtype)
        A = np.array(A[:, None] if A.ndim == 1 else A, order="C")
        widths = tuple(w.shape[0] for w in W)
        net = cls.__new__(cls)
        Wt = {l + 1: np.ascontiguousarray(W[l].T, dtype=dtype) for l in range(1, len(W))}
        net._set(np.array(W[0], dtype=dtype, order="C"), Wt, A, _as_thresholds(thresholds, widths))
        net.seed = None
        return net

    # --- the weights ------------------------------------------------------------------------
    def weights(self, l: int) -> np.ndarray:
        """W_l (m_l, m_(l-1)) as the math writes it (a view of the stored layer)."""
        if not 1 <= l <= self.depth:
            raise IndexError(f"layer {l} out of range 1..{self.depth}")
        return self.W1 if l == 1 else self.Wt[l].T

    def layers(self) -> list[np.ndarray]:
        """[W_1, ..., W_L] as the math writes them (views of the stored layers)."""
        return [self.weights(l) for l in range(1, self.depth + 1)]

    @property
    def width(self) -> int:
        """Units over all hidden layers."""
        return int(sum(self.widths))

    def validate(self) -> None:
        for name, arr in (
            ("W1", self.W1),
            ("A", self.A),
            *((f"Wt[{l}]", self.Wt[l]) for l in self.Wt),
        ):
            if arr.dtype != self.dtype or not (arr.flags.c_contiguous and arr.flags.writeable):
                raise ValueError(f"{name} must be a C-contiguous, writable {self.dtype} array")
            as_float_array(arr, name, 2)

    def finite(self) -> bool:
        return all(
            np.isfinite(np.sum(w, dtype=np.float64)) for w in (self.W1, *self.Wt.values(), self.A)
        )

    # --- outputs ----------------------------------------------------------------------------
    def activations(self, X: np.ndarray) -> list[np.ndarray]:
        """[h^1, ..., h^L] of already-checked inputs, dense."""
        hs, h = [], X
        for l in range(1, self.depth + 1):
            z = h @ self.weights(l).T
            h = np.maximum(z - self.dtype.type(self.thresholds[l - 1]), 0)
            hs.append(h)
        return hs

    def outputs(self, X: np.ndarray, chunk: int = 512) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        with _progress.bar(X.shape[0], "scoring") as bar:
            for lo in range(0, X.shape[0], chunk):
                h = self.activations(X[lo : lo + chunk])[-1]
                out[lo : lo + chunk] = (h @ self.A) * self.dtype.type(self.scale)
                bar.update(h.shape[0])
        return out

    def firing_counts(self, X: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Units firing on each point, over all layers."""
        out = np.zeros(X.shape[0], dtype=np.int64)
        with _progress.bar(X.shape[0], "counting firing units") as bar:
            for lo in range(0, X.shape[0], chunk):
                for h in self.activations(X[lo : lo + chunk]):
                    out[lo : lo + chunk] += (h > 0).sum(axis=1)
                bar.update(min(chunk, X.shape[0] - lo))
        return out

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"W": self.W1, "a": self.A, "thresholds": np.array(self.thresholds)}
        state["threshold"] = np.array(self.thresholds[0])
        state["widths"] = np.array(self.widths)
        for l, T in self.Wt.items():
            state[f"W{l}t"] = T
        return state

    @classmethod
    def from_state(cls, state: dict, seed=None) -> ShiftedReLUMLP:
        widths = [int(w) for w in np.atleast_1d(state["widths"])]
        W1 = np.array(state["W"], order="C")
        Wt = {}
        for l in range(2, len(widths) + 1):
            if f"W{l}t" not in state:
                raise ValueError(f"the state lacks layer {l} (W{l}t)")
            Wt[l] = np.array(state[f"W{l}t"], dtype=W1.dtype, order="C")
        A = np.array(state["a"], dtype=W1.dtype, order="C").reshape(widths[-1], -1)
        net = cls.__new__(cls)
        net._set(W1, Wt, A, np.atleast_1d(state["thresholds"]))
        net.seed = seed
        return net

    def __repr__(self) -> str:
        return (
            f"ShiftedReLUMLP(d={self.d}, widths={self.widths}, n_outputs={self.n_outputs}, "
            f"thresholds=({', '.join(f'{b:.4g}' for b in self.thresholds)}), dtype={self.dtype})"
        )


def _as_widths(widths) -> tuple[int, ...]:
    if isinstance(widths, int | np.integer):
        widths = (widths,)
    widths = tuple(as_positive_int(w, "width") for w in widths)
    if not widths:
        raise ValueError("widths must name at least one hidden layer")
    return widths


def _as_thresholds(thresholds, widths) -> tuple[float, ...]:
    if thresholds is None:
        return tuple(default_threshold(m) for m in widths)
    if isinstance(thresholds, int | float | np.floating | np.integer):
        thresholds = (thresholds,) * len(widths)
    out = tuple(as_scalar(t, "threshold") for t in np.atleast_1d(thresholds))
    if len(out) != len(widths):
        raise ValueError(f"{len(out)} thresholds for {len(widths)} layers")
    if any(t < 0 for t in out):
        raise ValueError(f"thresholds must be >= 0, got {out}")
    return out


def reference_step(net: ShiftedReLUMLP, X, Y, lr: float, rows=None) -> float:
    """One dense gradient step in float64 arithmetic (the oracle): every unit of every
    layer, no sparsity. Returns the loss before the step."""
    Xb = np.asarray(X if rows is None else X[rows], dtype=np.float64)
    Yb = np.asarray(Y if rows is None else Y[rows], dtype=np.float64).reshape(Xb.shape[0], -1)
    Ws = [net.weights(l).astype(np.float64) for l in range(1, net.depth + 1)]
    hs, zs = [Xb], []
    for l, W in enumerate(Ws):
        z = hs[-1] @ W.T
        zs.append(z)
        hs.append(np.maximum(z - net.thresholds[l], 0))
    A = net.A.astype(np.float64)
    E = net.scale * hs[-1] @ A - Yb
    loss = 0.5 * float(np.sum(E * E))
    delta = (E @ A.T) * net.scale * (zs[-1] > net.thresholds[-1])
    grads = [None] * net.depth
    for l in range(net.depth - 1, -1, -1):
        grads[l] = delta.T @ hs[l]
        if l:
            delta = (delta @ Ws[l]) * (zs[l - 1] > net.thresholds[l - 1])
    for l in range(net.depth):
        Ws[l] -= lr * grads[l]
    net.W1[...] = Ws[0]
    for l in range(2, net.depth + 1):
        net.Wt[l][...] = Ws[l - 1].T
    return loss
