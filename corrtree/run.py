"""A training run on disk: config, checkpoints, metrics, model and figures in one folder.

Every file is written atomically. A run interrupted after a checkpoint resumes with
``run_training(out, resume=True)`` and follows exactly the trajectory it would have followed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import _io
from ._validation import check_memory
from .datasets import load_dataset
from .engines import ENGINES, engine_class
from .model import ShiftedReLUNet
from .train import auto_lr, train

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
        for name in ("width", "steps", "epochs", "batch_size", "checkpoint_every", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

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


def accuracy(outputs: np.ndarray, labels: np.ndarray, targets: str) -> float:
    if targets == "binary" or outputs.shape[1] == 1:
        C = int(labels.max()) + 1 if labels.size else 2
        truth = labels < (C + 1) // 2
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


def load_model(out: str) -> ShiftedReLUNet:
    """The network saved in a run folder (``model.npz``, else the last checkpoint)."""
    for name in ("model.npz", "checkpoint.npz"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as f:
                return ShiftedReLUNet.from_state({k: f[k] for k in f.files if k != "step"})
    raise FileNotFoundError(f"no model.npz or checkpoint.npz in {out}")


def run_training(
    out: str,
    cfg: RunConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> dict:
    """Train as ``cfg`` says and write the run folder ``out``; returns the summary."""
    if resume:
        cfg_path = os.path.join(out, "config.json")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"cannot resume: {cfg_path} does not exist")
        cfg = RunConfig.from_dict(_io.read_json(cfg_path))
    cfg.validate()
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
    check_memory(
        _estimate_bytes(cfg, data.n, data.d, Y.shape[1]),
        f"training with engine {cfg.engine!r} on n={data.n}, width={cfg.width}",
    )
    total = cfg.total_steps(data.n)
    net = ShiftedReLUNet(
        data.d, cfg.width, cfg.threshold, seed=cfg.seed, dtype=cfg.dtype, n_outputs=Y.shape[1]
    )
    X = data.X.astype(net.dtype)
    metrics = {"steps": [], "preprocess_seconds": []}
    start = 0
    ckpt = os.path.join(out, "checkpoint.npz")
    if resume and os.path.exists(ckpt):
        with np.load(ckpt, allow_pickle=False) as f:
            net.W = np.array(f["W"])
            start = int(f["step"])
        metrics = _io.read_json(os.path.join(out, "metrics.json"))
        metrics["steps"] = metrics["steps"][:start]
        log(f"resuming {out} at step {start} of {total}")
    if not resume:
        _io.write_json(os.path.join(out, "config.json"), asdict(cfg))
    if start == 0:
        metrics["fired_per_point_start"] = firing_counts(net, X)
    log(
        f"{data.name}: n={data.n}, d={data.d}, outputs={net.n_outputs}; width={net.width}, "
        f"b={net.threshold:.4f}, engine={cfg.engine}, {cfg.dtype}, {total} steps"
    )
    metrics["lr"] = cfg.lr if cfg.lr is not None else auto_lr(data.n, cfg.batch_size)

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
            row["accuracy"] = accuracy(info.outputs, labels, cfg.targets)
        metrics["steps"].append(row)
        done = t + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            _io.write_json(os.path.join(out, "metrics.json"), metrics)
            _io.write_npz(ckpt, **net.state_dict(), step=np.array(done))

    t0 = time.perf_counter()
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
    metrics["preprocess_seconds"].append(hist.preprocess_seconds)
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["stats"] = hist.stats
    metrics["engine"] = hist.engine
    metrics["fired_per_point_end"] = firing_counts(net, X)
    metrics["final_loss"] = net.loss(X, Y)
    if data.labels is not None:
        metrics["final_accuracy"] = accuracy(net.outputs(X), data.labels, cfg.targets)
    summary = summarize(metrics, net, data.n)
    metrics["summary"] = summary
    _io.write_npz(os.path.join(out, "model.npz"), **net.state_dict())
    _io.write_json(os.path.join(out, "metrics.json"), metrics)
    if os.path.exists(ckpt):
        os.remove(ckpt)
    try:
        from .plots import plot_run

        summary["figures"] = plot_run(out, metrics)
    except ImportError:  # matplotlib is an optional extra
        summary["figures"] = []
        log("matplotlib is not installed: no figures (pip install 'corrtree[plot]')")
    return summary


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
