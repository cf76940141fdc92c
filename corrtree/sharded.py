"""Networks stored as shards of neurons: one ``.npz`` file per block of rows plus an index.

A sharded model is written by the workers that hold it (each writes its own rows, so the
whole weight matrix never has to exist in one process) and committed by the index, a small
JSON file written last and atomically: a reader that goes through the index sees either the
old set of shards or the new one, never a mix. Reading needs no cluster: ``ShardedModel``
evaluates the network one shard at a time, and gathers it into one ``ShiftedReLUNet`` only
when asked and when it fits in memory.
"""

from __future__ import annotations

import os

import numpy as np

from . import _io
from ._validation import check_memory
from .model import Network, ShiftedReLUNet

__all__ = ["FORMAT", "ShardedModel", "commit_index", "read_rows", "shard_path"]

FORMAT = "corrtree-shards"


def shard_path(out: str, kind: str, step: int, k: int, token: str) -> str:
    """Where shard ``k`` of ``kind`` ("model" or "checkpoint") at ``step`` is written. The
    token keeps a new set of files from ever overwriting the set the index names."""
    return os.path.join(out, f"{kind}.shards", f"step{step:09d}-{token}-{k:04d}.npz")


def commit_index(out: str, kind: str, meta: dict, shards: list[dict]) -> str:
    """Write ``out/kind.json`` naming the shard files (paths relative to ``out``), then
    remove the files of earlier sets. Returns the index path."""
    index = {"format": FORMAT, "version": 1, **meta, "shards": shards}
    path = os.path.join(out, f"{kind}.json")
    _io.write_json(path, index)
    keep = {os.path.normpath(os.path.join(out, s["file"])) for s in shards}
    folder = os.path.join(out, f"{kind}.shards")
    for name in os.listdir(folder):
        p = os.path.normpath(os.path.join(folder, name))
        if p not in keep:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
    return path


def read_index(path: str) -> dict:
    """A shard index, checked: format, sizes, and shards that tile [0, width) in order."""
    index = _io.read_json(path, "sharded model index")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path} is not a corrtree sharded model index")
    try:
        width, shards = int(index["width"]), index["shards"]
        at = 0
        for s in shards:
            if int(s["lo"]) != at or int(s["hi"]) <= at:
                raise ValueError(f"shard {s['file']} covers [{s['lo']}, {s['hi']}), not from {at}")
            at = int(s["hi"])
        if at != width:
            raise ValueError(f"the shards cover {at} of {width} neurons")
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a usable sharded model index: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path} is not a usable sharded model index: {e}") from None
    return index


def _load_shard(out: str, s: dict, dtype) -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(out, s["file"])
    state = _io.read_npz(path, "model shard")
    if "W" not in state or "a" not in state:
        raise ValueError(f"{path} is not a corrtree model shard: it lacks W or a")
    W, A = state["W"], state["a"]
    if W.shape[0] != s["hi"] - s["lo"] or A.shape[0] != W.shape[0]:
        raise ValueError(
            f"{path} holds {W.shape[0]} rows but its index says [{s['lo']}, {s['hi']})"
        )
    return W.astype(dtype, copy=False), A.astype(dtype, copy=False).reshape(W.shape[0], -1)


def read_rows(source: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows lo..hi of W and A from a model: a sharded index (only the shards that overlap
    the range are read) or a ``.npz`` model file."""
    if source.endswith(".json"):
        index = read_index(source)
        out = os.path.dirname(source)
        dtype = np.dtype(index["dtype"])
        W = np.empty((hi - lo, int(index["d"])), dtype=dtype)
        A = np.empty((hi - lo, int(index["n_outputs"])), dtype=dtype)
        for s in index["shards"]:
            a, b = max(lo, s["lo"]), min(hi, s["hi"])
            if a < b:
                Ws, As = _load_shard(out, s, dtype)
                W[a - lo : b - lo] = Ws[a - s["lo"] : b - s["lo"]]
                A[a - lo : b - lo] = As[a - s["lo"] : b - s["lo"]]
        return W, A
    state = _io.read_npz(source, "corrtree model file")
    W, A = state["W"], state["a"]
    A = A.reshape(W.shape[0], -1)
    return np.ascontiguousarray(W[lo:hi]), np.ascontiguousarray(A[lo:hi])


class ShardedModel(Network):
    """A trained network stored as shards (see the module docstring), read from its index.

    ``outputs``, ``predict`` and ``loss`` stream over the shards, holding one in memory at a
    time; ``gather()`` returns the whole network as one ``ShiftedReLUNet``.
    """

    def __init__(self, path: str):
        self.path = path
        self.folder = os.path.dirname(path)
        self.index = read_index(path)
        ix = self.index
        self.d, self.width, self.n_outputs = int(ix["d"]), int(ix["width"]), int(ix["n_outputs"])
        self.threshold, self.scale = float(ix["threshold"]), float(ix["scale"])
        self.dtype = np.dtype(ix["dtype"])
        self.step = ix.get("step")
        self.config_hash = ix.get("config_hash")
        self.seed = None

    @property
    def shards(self) -> list[tuple[int, int]]:
        return [(int(s["lo"]), int(s["hi"])) for s in self.index["shards"]]

    def _nets(self):
        for s in self.index["shards"]:
            W, A = _load_shard(self.folder, s, self.dtype)
            yield ShiftedReLUNet.from_weights(W, A, self.threshold, scale=self.scale)

    sharded = True

    @property
    def thresholds(self) -> tuple[float]:
        return (self.threshold,)

    def finite(self) -> bool:
        return all(net.finite() for net in self._nets())

    def outputs(self, X: np.ndarray) -> np.ndarray:
        X = self.check_X(X)
        out = np.zeros((X.shape[0], self.n_outputs), dtype=self.dtype)
        for net in self._nets():  # fixed order: the shards' order
            out += net.outputs(X)
        return out

    def firing_counts(self, X: np.ndarray) -> np.ndarray:
        X = self.check_X(X)
        return sum(net.firing_counts(X) for net in self._nets())

    def gather(self, max_memory: int | None = None) -> ShiftedReLUNet:
        """The whole network in this process (refused if W would not fit)."""
        need = self.width * (self.d + self.n_outputs) * self.dtype.itemsize
        check_memory(need, f"gathering the {self.width}-neuron model of {self.path}", max_memory)
        W, A = read_rows(self.path, 0, self.width)
        return ShiftedReLUNet.from_weights(W, A, self.threshold, scale=self.scale)

    def __repr__(self) -> str:
        return (
            f"ShardedModel({self.path!r}: d={self.d}, width={self.width}, "
            f"{len(self.index['shards'])} shards, n_outputs={self.n_outputs}, {self.dtype})"
        )
