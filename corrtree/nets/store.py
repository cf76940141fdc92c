"""The model store: every model and checkpoint, of every kind of network, written and read
here.

A network held in this process (``ShiftedReLUNet``, ``ShiftedReLUMLP``) is one ``.npz`` file:
its ``state_dict()`` arrays, ``format_version`` (``VERSION``), ``network`` (the kind's
class name) and, in a run folder, ``step``, ``config_hash`` and the optimizer's state
(``optim.*``). Files written before the version field (no ``format_version``) still load: a
``widths`` array marks a deep network.

A network stored as shards of neurons has one ``.npz`` file per block of rows plus an index.
A sharded model is written by the workers that hold it (each writes its own rows, so the
whole weight matrix never has to exist in one process) and committed by the index, a small
JSON file written last and atomically: a reader that goes through the index sees either the
old set of shards or the new one, never a mix. Reading needs no cluster: ``ShardedModel``
evaluates the network one shard at a time, and gathers it into one ``ShiftedReLUNet`` only
when asked and when it fits in memory.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from .. import _io
from .._validation import check_memory
from .base import Network
from .deep import ShiftedReLUMLP
from .model import Model, Preprocess
from .twolayer import ShiftedReLUNet

__all__ = [
    "FORMAT",
    "STATE_FILES",
    "VERSION",
    "ShardedModel",
    "commit_index",
    "load",
    "load_folder",
    "load_model",
    "model_state",
    "read_meta",
    "read_optimizer",
    "read_rows",
    "read_state",
    "save",
    "shard_path",
    "state_in",
    "write_optimizer",
    "write_shard",
]

FORMAT = "corrtree-shards"
VERSION = 2  # of the single-file format; files without the field are version 1
KINDS = {cls.__name__: cls for cls in (ShiftedReLUNet, ShiftedReLUMLP)}
# Where a run's weights may be, newest first: checkpoints, then the final model; a sharded
# model is its index (.json) over a folder of shards.
STATE_FILES = ("checkpoint.json", "checkpoint.npz", "model.json", "model.npz")


# --- one file ---------------------------------------------------------------------------
def save(
    net: Network,
    folder: str,
    kind: str = "model",
    *,
    step: int = 0,
    config_hash: str = "",
    optimizer: dict | None = None,
    path: str | None = None,
    model: dict | None = None,
) -> str:
    """Write ``net`` as ``kind`` ("model" or "checkpoint") in ``folder``: one .npz (at
    ``path`` when given), or shards and their index for a sharded network; the other form of
    the same kind is removed. ``optimizer``: an optimizer's ``state_dict()``, saved with it;
    ``model``: what makes it a ``Model`` (``model_state``: task, classes, loss,
    preprocessing). Returns the path written."""
    model = model or {}
    if net.sharded:
        meta = {k: np.asarray(v).tolist() for k, v in model.items()}
        out = net.save(folder, kind, step=step, config_hash=config_hash, **meta)
        _remove(os.path.join(folder, f"{kind}.npz"))
        return out
    out = path or os.path.join(folder, f"{kind}.npz")
    _io.write_npz(
        out,
        **net.state_dict(),
        **{f"optim.{k}": v for k, v in (optimizer or {}).items()},
        **model,
        format_version=np.array(VERSION),
        network=np.array(type(net).__name__),
        step=np.array(step),
        config_hash=np.array(config_hash),
    )
    if path is None:
        for f in (f"{kind}.json", f"{kind}.shards"):
            _remove(os.path.join(folder, f))
    return out


def load(path: str) -> Network:
    """The network saved at ``path``: a ``.npz`` model or checkpoint of any kind, or a shard
    index (``.json``), returned as a ``ShardedModel``."""
    if path.endswith(".json"):
        return ShardedModel(path)
    return _network(path, _io.read_npz(path, "corrtree model file"))


def _network(path: str, state: dict) -> Network:
    """The network of a model file's arrays (read from ``path``)."""
    missing = {"W", "a", "threshold"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a corrtree model: it lacks {sorted(missing)}")
    version = int(state["format_version"]) if "format_version" in state else 1
    if version > VERSION:
        raise ValueError(
            f"{path} is a version {version} model; this corrtree reads versions up to "
            f"{VERSION} (upgrade corrtree)"
        )
    name = str(state["network"]) if "network" in state else None
    if name is None:
        name = "ShiftedReLUMLP" if "widths" in state else "ShiftedReLUNet"
    if name not in KINDS:
        raise ValueError(f"{path} holds an unknown kind of network {name!r}")
    try:
        return KINDS[name].from_state(state)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path} holds an unusable model: {e}") from None


def model_state(model: Model) -> dict[str, np.ndarray]:
    """The arrays that make a network a ``Model``, saved beside its weights."""
    out = {"task": np.array(model.task), "loss": np.array(model.loss)}
    if model.classes_ is not None:
        out["classes"] = np.asarray(model.classes_)
    return {**out, **model.preprocess.state()}


def load_model(path: str, *, default_normalize: bool = True) -> Model:
    """The ``Model`` saved at ``path``: a run folder (its model, else its last checkpoint),
    a model file or a shard index. Files written before models carried their task and
    preprocessing load as regression models with ``default_normalize``."""
    if os.path.isdir(path):
        path = _model_in(path)
    if path.endswith(".json"):
        net = ShardedModel(path)
        state = net.index
    else:  # the file read once, for the weights and what makes them a Model
        state = _io.read_npz(path, "corrtree model file")
        net = _network(path, state)
    task = str(np.asarray(state["task"])) if "task" in state else "regression"
    classes = np.asarray(state["classes"]) if "classes" in state else None
    loss = str(np.asarray(state["loss"])) if "loss" in state else "squared"
    prep = Preprocess.from_state(state, default_normalize)
    try:
        return Model(net, prep, task, classes, loss)
    except ValueError as e:
        raise ValueError(f"{path} holds an unusable model: {e}") from None


def _model_in(out: str) -> str:
    """The file of a run folder's network: the model, else the last checkpoint."""
    for name in ("model.json", "model.npz", "checkpoint.json", "checkpoint.npz"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no model (model.npz, model.json) or checkpoint in {out}")


def state_in(out: str) -> str | None:
    """The newest saved state of a run folder (its checkpoint, else its model), or None."""
    for name in STATE_FILES:
        path = os.path.join(out, name)
        if os.path.exists(path):
            return path
    return None


def load_folder(out: str) -> Network:
    """The network saved in a run folder: the model, else the last checkpoint."""
    return load(_model_in(out))


def read_state(path: str) -> dict:
    """A saved state's ``step`` and ``config_hash`` (None when absent)."""
    if path.endswith(".json"):
        ix = read_index(path)
        return {"step": ix.get("step"), "config_hash": ix.get("config_hash")}
    st = _io.read_npz(path, "corrtree checkpoint")
    return {
        "step": int(st["step"]) if "step" in st else None,
        "config_hash": str(st["config_hash"]) if st.get("config_hash") is not None else None,
    }


def read_meta(path: str) -> dict:
    """The sizes of the two-layer network saved at ``path`` (a shard index or a .npz):
    d, width, n_outputs, threshold, scale and dtype, without building the network."""
    if path.endswith(".json"):
        ix = read_index(path)
        keys = ("d", "width", "n_outputs", "threshold", "scale")
        return {**{k: ix[k] for k in keys}, "dtype": np.dtype(ix["dtype"])}
    st = _io.read_npz(path, "corrtree model file")
    if "widths" in st and np.size(st["widths"]) > 1:
        raise ValueError(f"{path} holds a deep network; only two-layer networks are sharded")
    W = st["W"]
    width = W.shape[0]
    return {
        "d": W.shape[1],
        "width": width,
        "n_outputs": st["a"].reshape(width, -1).shape[1],
        "threshold": float(st["threshold"]),
        "scale": float(st["scale"]) if "scale" in st else 1 / np.sqrt(width),
        "dtype": W.dtype,
    }


def write_optimizer(out: str, state: dict, step: int, config_hash: str) -> None:
    """A finished run's optimizer state, beside its model (for extending the run exactly)."""
    _io.write_npz(
        os.path.join(out, "optimizer.npz"),
        **{f"optim.{k}": v for k, v in state.items()},
        step=np.array(step),
        config_hash=np.array(config_hash),
    )


def read_optimizer(out: str, state_path: str | None) -> dict | None:
    """The optimizer state saved with the state a run resumes from: in a checkpoint, its
    ``optim.*`` arrays; with a finished model, optimizer.npz beside it."""
    if state_path is None or state_path.endswith(".json"):
        return None
    if os.path.basename(state_path).startswith("checkpoint"):
        st = _io.read_npz(state_path, "corrtree checkpoint")
    else:
        path = os.path.join(out, "optimizer.npz")
        if not os.path.exists(path):
            return None
        st = _io.read_npz(path, "optimizer state")
    state = {k[len("optim.") :]: v for k, v in st.items() if k.startswith("optim.")}
    return state or None


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


# --- shards -------------------------------------------------------------------------------
def write_shard(path: str, W: np.ndarray, A: np.ndarray, lo: int, hi: int) -> str:
    """One shard file: rows lo..hi of W and A (written by the process that holds them)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _io.write_npz(path, W=W, a=A, lo=np.array(lo), hi=np.array(hi))
    return path


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
