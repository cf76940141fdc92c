"""A trained model as a ``torch.nn.Module`` (PyTorch is an optional extra)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["to_torch"]


class ShiftedReLUModule(torch.nn.Module):
    """f(x) = scale * A^T h_L, h_l = max(W_l h_(l-1) - b_l, 0), h_0 the preprocessed input:
    standardised (when the model was) and scaled to unit norm (when it was)."""

    def __init__(self, layers, A, thresholds, scale, preprocess, dtype):
        super().__init__()
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.tensor(np.ascontiguousarray(W), dtype=dtype)) for W in layers
        )
        self.A = torch.nn.Parameter(torch.tensor(A, dtype=dtype))
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=dtype))
        self.scale = float(scale)
        self.normalize = bool(preprocess.normalize)
        mean = preprocess.mean if preprocess.standardize else np.zeros(layers[0].shape[1])
        std = preprocess.scale if preprocess.standardize else np.ones(layers[0].shape[1])
        self.register_buffer("mean", torch.tensor(mean, dtype=dtype))
        self.register_buffer("std", torch.tensor(std, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.to(self.A.dtype) - self.mean) / self.std
        if self.normalize:  # as corrtree.normalize_rows: by the largest entry, then the norm
            peak = h.abs().amax(dim=1, keepdim=True)
            h = h / torch.where(peak > 0, peak, torch.ones_like(peak))
            norm = torch.linalg.vector_norm(h, dim=1, keepdim=True)
            h = h / torch.where(norm > 0, norm, torch.ones_like(norm))
        for W, b in zip(self.weights, self.thresholds, strict=True):
            h = torch.relu(h @ W.T - b)
        return self.scale * (h @ self.A)


def to_torch(model) -> ShiftedReLUModule:
    net = model.net.gather() if model.net.sharded else model.net
    dtype = torch.float32 if net.dtype == np.float32 else torch.float64
    return ShiftedReLUModule(
        net.layers(), net.A, list(net.thresholds), net.scale, model.preprocess, dtype
    )
