"""A training run on disk: config, checkpoints, metrics, model and figures in one folder.

Every file is written atomically. A run interrupted after a checkpoint resumes with
``run_training(out, resume=True)`` and follows exactly the trajectory it would have followed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import _io
from ._validation import check_memory
from .datasets import load_dataset
from .engines import ENGINES, engine_class
from .model import ShiftedReLUNet
from .train import DivergenceError, auto_lr, train

__all__ = ["RunConfig", "describe", "firing_counts", "load_model", "run_training", "summarize"]


@dataclass
class RunConfig:
    dataset: str = "digits"
    n: int | None = None
    d: int = 32
    data_dir: str | None = None
    normalize: bool = True
    targets: str = "onehot"
    width: int = 4096
    threshold: float | None = None
    steps: int | None = None
    epochs: int | None = None
    lr: float | None = None  # None: auto_lr
    batch_size: int | None = None
    engine: str = "auto"
    engine_options: dict | None = None
    dtype: str = "float64"
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int | None = None

    def validate(self) -> None:
        if self.engine not in ENGINES and self.engine != "auto":
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {sorted(ENGINES)}")
        if self.engine_options is not None and not isinstance(self.engine_options, dict):
            raise TypeError(f"engine_options must be a dict, got {self.engine_options!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.steps is None and self.epochs is None:
            self.steps = 20
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        for name in ("width", "steps", "epochs", "batch_size", "checkpoint_every", "threads", "n"):
            v = getattr(self, name)
            if v is None and name != "width":
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an integer, got {v!r}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name in ("lr", "threshold"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise TypeError(f"{name} must be a number, got {v!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.threshold is not None and not (
            self.threshold >= 0 and math.isfinite(self.threshold)
        ):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold}")

    def total_steps(self, n: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = 1 if self.batch_size is None else math.ceil(n / self.batch_size)
        return self.epochs * per_epoch

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def firing_counts(net: ShiftedReLUNet, X: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Neurons firing on each point, computed densely in blocks."""
    out = np.empty(X.shape[0], dtype=np.int64)
    b = net.dtype.type(net.threshold)
    for lo in range(0, X.shape[0], chunk):
        out[lo : lo + chunk] = (X[lo : lo + chunk] @ net.W.T > b).sum(axis=1)
    return out


def accuracy(outputs: np.ndarray, labels: np.ndarray, targets: str, n_classes: int) -> float:
    """Fraction of points classified right. ``n_classes`` is the dataset's (not the batch's):
    with binary targets the positive class is the lower half of all classes."""
    if targets == "binary" or outputs.shape[1] == 1:
        truth = labels < (n_classes + 1) // 2
        return float(np.mean((outputs[:, 0] > 0) == truth))
    return float(np.mean(outputs.argmax(axis=1) == labels))


def _estimate_bytes(cfg: RunConfig, n: int, d: int, C: int) -> int:
    """The chosen engine's own estimate, plus X, y and the network."""
    item = np.dtype(cfg.dtype).itemsize
    cls = engine_class(cfg.engine, n, cfg.width)
    own = cls.estimate_bytes(
        n,
        cfg.width,
        d,
        dtype=cfg.dtype,
        n_outputs=C,
        batch=cfg.batch_size,
        options=cfg.engine_options,
    )
    return own + (cfg.width + n) * (d + C) * item


RUN_FILES = ("config.json", "metrics.json", "model.npz", "checkpoint.npz")
FIGURES = ("loss.png", "fired_hist.png", "phases.png")


class RunFinished(ValueError):
    """``--resume`` of a run that has done all its steps."""


def config_hash(cfg: RunConfig) -> str:
    """What identifies a run's trajectory: everything but its length, threads and
    checkpointing. A checkpoint carries it; resume refuses one that does not match."""
    keep = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("steps", "epochs", "threads", "checkpoint_every")
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def load_model(out: str) -> ShiftedReLUNet:
    """The network saved in a run folder (``model.npz``, else the last checkpoint)."""
    for name in ("model.npz", "checkpoint.npz"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            return _net_from(path)
    raise FileNotFoundError(f"no model.npz or checkpoint.npz in {out}")


def _net_from(path: str) -> ShiftedReLUNet:
    state = _io.read_npz(path, "corrtree model file")
    missing = {"W", "a", "threshold"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a corrtree model: it lacks {sorted(missing)}")
    try:
        return ShiftedReLUNet.from_state(state)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} holds an unusable model: {e}") from None


def _read_config(out: str) -> RunConfig:
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    raw = _io.read_json(path, "run configuration")
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} is not a run configuration: expected an object, got {type(raw).__name__}"
        )
    return RunConfig.from_dict(raw)


def run_training(
    out: str,
    cfg: RunConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    steps: int | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Train as ``cfg`` says and write the run folder ``out``; returns the summary.

    A folder belongs to one run: it is locked while the run trains, a new run into a folder
    holding another run's files is refused unless ``overwrite``, and ``resume`` continues the
    folder's own run (from its checkpoint, which must match its config) or, given ``steps`` or
    ``epochs`` beyond what it did, extends a finished run on the same batch schedule.
    """
    with _io.FolderLock(out):
        for p in _io.clean_stale_tmp(out):
            log(f"removed {p}, a temporary file left by a killed run")
        return _run_locked(out, cfg, resume, overwrite, steps, epochs, threads, progress, log)


def _run_locked(out, cfg, resume, overwrite, steps, epochs, threads, progress, log) -> dict:
    ckpt = os.path.join(out, "checkpoint.npz")
    model_path = os.path.join(out, "model.npz")
    state, metrics = None, {"steps": [], "preprocess_seconds": []}
    if resume:
        cfg = _read_config(out)
        if steps is not None or epochs is not None:  # a longer run on the same schedule
            cfg.steps, cfg.epochs = steps, epochs
        if threads is not None:
            cfg.threads = threads
        cfg.validate()
        for path in (ckpt, model_path):
            if os.path.exists(path):
                state = _io.read_npz(path, "corrtree checkpoint")
                break
        if state is not None and state.get("config_hash") is not None:
            if str(state["config_hash"]) != config_hash(cfg):
                raise ValueError(
                    f"{path} does not belong to the run configured in {out}/config.json "
                    "(its configuration hash differs); start a new run with --overwrite"
                )
    else:
        cfg.validate()
        existing = [f for f in RUN_FILES + FIGURES if os.path.exists(os.path.join(out, f))]
        if existing and not overwrite:
            raise FileExistsError(
                f"{out} holds another run's results ({', '.join(existing)}); use --overwrite "
                "to replace them, --resume to continue that run, or another --out"
            )
        for f in existing:
            os.remove(os.path.join(out, f))
    data = load_dataset(
        cfg.dataset,
        n=cfg.n,
        d=cfg.d,
        seed=cfg.seed,
        data_dir=cfg.data_dir,
        normalize=cfg.normalize,
        targets=cfg.targets,
    )
    Y = data.y if data.y.ndim == 2 else data.y[:, None]
    total = cfg.total_steps(data.n)
    start = 0
    if state is not None:
        start = int(state["step"]) if "step" in state else _done_steps(out)
        if start >= total:
            raise RunFinished(
                f"the run in {out} is finished ({start} steps); give --steps or --epochs "
                f"beyond {start} to extend it"
            )
        metrics = _io.read_json(os.path.join(out, "metrics.json"), "metrics file")
        metrics["steps"] = metrics["steps"][:start]
        for key in ("summary", "final_loss", "final_accuracy", "fired_per_point_end"):
            metrics.pop(key, None)
    check_memory(
        _estimate_bytes(cfg, data.n, data.d, Y.shape[1]),
        f"training with engine {cfg.engine!r} on n={data.n}, width={cfg.width}",
    )
    if state is not None:
        net = _net_from(path)
        if (net.d, net.n_outputs, net.dtype.name) != (data.d, Y.shape[1], cfg.dtype):
            raise ValueError(
                f"{path} holds a network for d={net.d}, {net.n_outputs} outputs, {net.dtype} "
                f"but the data has d={data.d}, {Y.shape[1]} outputs ({cfg.dtype})"
            )
        log(f"resuming {out} at step {start} of {total}")
    else:
        net = ShiftedReLUNet(
            data.d,
            cfg.width,
            cfg.threshold,
            seed=cfg.seed,
            dtype=cfg.dtype,
            n_outputs=Y.shape[1],
        )
    X = data.X.astype(net.dtype)
    _io.write_json(os.path.join(out, "config.json"), asdict(cfg))
    if start == 0:
        metrics["fired_per_point_start"] = firing_counts(net, X)
    log(
        f"{data.name}: n={data.n}, d={data.d}, outputs={net.n_outputs}; width={net.width}, "
        f"b={net.threshold:.4f}, engine={cfg.engine}, {cfg.dtype}, {total} steps"
    )
    metrics["lr"] = cfg.lr if cfg.lr is not None else auto_lr(data.n, cfg.batch_size, net.threshold)
    chash = config_hash(cfg)

    def record(t, net, info):
        row = {
            "step": t,
            "loss": info.loss,
            "fired_pairs": info.fired_pairs,
            "changed_neurons": info.changed_neurons,
            "seconds": info.seconds,
        }
        if data.labels is not None:
            labels = data.labels if info.rows is None else data.labels[info.rows]
            row["accuracy"] = accuracy(info.outputs, labels, cfg.targets, data.n_classes)
        metrics["steps"].append(row)
        done = t + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            if not np.isfinite(np.sum(net.W, dtype=np.float64)):
                raise DivergenceError(t, "the weights hold NaN or inf", info.loss)
            _io.write_json(os.path.join(out, "metrics.json"), metrics)
            _io.write_npz(
                ckpt, **net.state_dict(), step=np.array(done), config_hash=np.array(chash)
            )

    t0 = time.perf_counter()
    try:
        hist = train(
            net,
            X,
            Y,
            steps=total,
            lr=metrics["lr"],
            engine=cfg.engine,
            engine_options=cfg.engine_options,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            threads=cfg.threads,
            callback=record,
            progress=progress,
            start_step=start,
        )
    except DivergenceError as e:
        metrics["diverged"] = {"step": e.step, "last_finite_loss": e.last_loss}
        _io.write_json(os.path.join(out, "metrics.json"), metrics)
        if os.path.exists(ckpt):
            e.args = (f"{e}; the last good checkpoint is kept in {ckpt}",)
        raise
    metrics["preprocess_seconds"].append(hist.preprocess_seconds)
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["stats"] = hist.stats
    metrics["engine"] = hist.engine
    # The trained model first, before anything optional: a folder that cannot take it sends
    # it to a fallback file that the error names.
    state_out = {**net.state_dict(), "step": np.array(total), "config_hash": np.array(chash)}
    try:
        _io.write_npz(model_path, **state_out)
    except OSError as e:
        fallback = os.path.join(
            tempfile.gettempdir(), f"corrtree-model-{os.getpid()}-{int(time.time())}.npz"
        )
        _io.write_npz(fallback, **state_out)
        raise _io.PathError(f"{e}; the trained model was saved to {fallback}") from None
    metrics["fired_per_point_end"] = firing_counts(net, X)
    metrics["final_loss"] = net.loss(X, Y)
    if data.labels is not None:
        metrics["final_accuracy"] = accuracy(
            net.outputs(X), data.labels, cfg.targets, data.n_classes
        )
    summary = summarize(metrics, net, data.n)
    metrics["summary"] = summary
    _io.write_json(os.path.join(out, "metrics.json"), metrics)
    if os.path.exists(ckpt):
        os.remove(ckpt)
    if summary["fired_fraction"] == 0:
        log(
            "warning: no neuron fires on any point at the end of training: the network "
            "outputs 0 everywhere (lower --lr, keep inputs normalised, or lower --threshold)"
        )
        summary["dead"] = True
    try:
        from .plots import plot_run

        summary["figures"] = plot_run(out, metrics)
    except ImportError:  # matplotlib is an optional extra
        summary["figures"] = []
        log("matplotlib is not installed: no figures (pip install 'corrtree[plot]')")
    except OSError as e:
        summary["figures"] = []
        log(f"warning: figures not written: {_io.describe_oserror(e)}")
    return summary


def _done_steps(out: str) -> int:
    path = os.path.join(out, "metrics.json")
    return len(_io.read_json(path, "metrics file")["steps"]) if os.path.exists(path) else 0


def summarize(metrics: dict, net: ShiftedReLUNet, n: int) -> dict:
    steps = metrics["steps"]
    per_step = [sum(s["seconds"].values()) for s in steps]
    fired = np.asarray(metrics["fired_per_point_end"])
    out = {
        "engine": metrics.get("engine"),
        "steps": len(steps),
        "first_loss": steps[0]["loss"] if steps else None,
        "final_loss": metrics["final_loss"],
        "median_step_seconds": float(np.median(per_step)) if per_step else None,
        "preprocess_seconds": float(sum(metrics["preprocess_seconds"])),
        "fired_fraction": float(fired.mean() / net.width),
        "mean_changed_neurons": float(np.mean([s["changed_neurons"] for s in steps]))
        if steps
        else 0.0,
    }
    if "final_accuracy" in metrics:
        out["final_accuracy"] = metrics["final_accuracy"]
    return out


def describe(summary: dict) -> str:
    lines = [
        f"engine             {summary.get('engine')}",
        f"steps              {summary['steps']}",
        f"loss               {summary['first_loss']:.6g} -> {summary['final_loss']:.6g}",
    ]
    if "final_accuracy" in summary:
        lines.append(f"train accuracy     {summary['final_accuracy']:.4f}")
    lines += [
        f"fired fraction     {summary['fired_fraction']:.4%} of neurons per point",
        f"neurons changed    {summary['mean_changed_neurons']:.0f} per step (mean)",
        f"preprocessing      {summary['preprocess_seconds']:.3f} s",
        f"time per step      {summary['median_step_seconds']:.4f} s (median)",
    ]
    return "\n".join(lines)
