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
from .losses import LOSSES, get_loss
from .model import Network, ShiftedReLUNet
from .optim import OPTIMIZERS, SCHEDULES, Adam, get_optimizer
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
    workers: int | None = None  # Ray workers, each training a block of neurons
    widths: list[int] | None = None  # hidden layers of a deep network (width then unused)
    # The recipe (corrtree.train's loss, optimizer, train_output, schedule): "paper" is the
    # paper's (squared loss, SGD, fixed output layer); "adam" is cross-entropy for classes
    # (logistic for --targets binary, squared for regression), lazy Adam and a trained output
    # layer. loss, optimizer and train_output override a part of it.
    recipe: str = "paper"
    loss: str | None = None
    optimizer: str | None = None
    train_output: bool | None = None
    schedule: str | None = None
    # Held-out evaluation while training: "test" (the dataset's test split) or a seeded,
    # stratified fraction of the training points; scored every eval_every steps (default:
    # each epoch); stop at target_accuracy or after patience evaluations without progress.
    eval: str | None = None
    val_fraction: float | None = None
    eval_every: int | None = None
    target_accuracy: float | None = None
    patience: int | None = None

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
        for name in (
            "width",
            "steps",
            "epochs",
            "batch_size",
            "checkpoint_every",
            "threads",
            "n",
            "workers",
        ):
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
        if self.widths is not None:
            if (
                not isinstance(self.widths, list | tuple)
                or not self.widths
                or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths)
            ):
                raise ValueError(f"widths must be positive integers, got {self.widths!r}")
            self.widths = list(self.widths)
            if self.workers:
                raise ValueError(
                    "--workers shards a two-layer network; deep (--widths) runs "
                    "train in one process"
                )
            self.width = sum(self.widths)
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
            )
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of {sorted(SCHEDULES)}"
            )
        if self.eval not in (None, "test"):
            raise ValueError(f"eval must be 'test' or None, got {self.eval!r}")
        if self.val_fraction is not None:
            if self.eval is not None:
                raise ValueError("give --eval test or --val-fraction, not both")
            if not 0 < self.val_fraction < 1:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        held_out = self.eval is not None or self.val_fraction is not None
        for name in ("eval_every", "target_accuracy", "patience"):
            if getattr(self, name) is not None and not held_out:
                raise ValueError(f"{name} needs a held-out set: --eval test or --val-fraction F")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.threshold is not None and not (
            self.threshold >= 0 and math.isfinite(self.threshold)
        ):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold}")

    def parts(self, classes: bool) -> tuple[str, str, bool]:
        """(loss, optimizer, train_output) of the run: the recipe's, with the overrides."""
        if self.recipe == "paper":
            loss, optimizer, train_output = "squared", "sgd", False
        else:
            loss = (
                "squared"
                if not classes
                else {"onehot": "cross_entropy"}.get(self.targets, "logistic")
            )
            optimizer, train_output = "adam", True
        return (
            self.loss or loss,
            self.optimizer or optimizer,
            train_output if self.train_output is None else self.train_output,
        )

    def total_steps(self, n: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = 1 if self.batch_size is None else math.ceil(n / self.batch_size)
        return self.epochs * per_epoch

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def firing_counts(net: Network, X: np.ndarray) -> np.ndarray:
    """Hidden units firing on each point (``net.firing_counts``)."""
    return net.firing_counts(X)


def accuracy(outputs: np.ndarray, labels: np.ndarray, targets: str, n_classes: int) -> float:
    """Fraction of points classified right. ``n_classes`` is the dataset's (not the batch's):
    with binary targets the positive class is the lower half of all classes."""
    if targets == "binary" or outputs.shape[1] == 1:
        truth = labels < (n_classes + 1) // 2
        return float(np.mean((outputs[:, 0] > 0) == truth))
    return float(np.mean(outputs.argmax(axis=1) == labels))


def _estimate_bytes(cfg: RunConfig, n: int, d: int, C: int) -> int:
    """The chosen engine's own estimate, plus X, y and the network (of the widest shard
    with workers: what each worker holds)."""
    item = np.dtype(cfg.dtype).itemsize
    if cfg.widths:  # deep: the layers, layer 1's dense buffer and a batch's activations
        sizes = [d, *cfg.widths]
        weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        batch = min(n, cfg.batch_size or n)
        return (weights + 3 * batch * sum(cfg.widths) + n * (d + C)) * item
    width = -(-cfg.width // (cfg.workers or 1))
    cls = engine_class(cfg.engine, n, width)
    own = cls.estimate_bytes(
        n,
        width,
        d,
        dtype=cfg.dtype,
        n_outputs=C,
        batch=cfg.batch_size,
        options=cfg.engine_options,
    )
    return own + (width + n) * (d + C) * item


RUN_FILES = (
    "config.json",
    "metrics.json",
    "model.npz",
    "optimizer.npz",
    "checkpoint.npz",
    "model.json",
    "checkpoint.json",
    "model.shards",
    "checkpoint.shards",
)
FIGURES = ("loss.png", "fired_hist.png", "phases.png")
# Where a run's weights may be, newest first: checkpoints, then the final model; a sharded
# model is its index (.json) over a folder of shards (corrtree.sharded).
STATE_FILES = ("checkpoint.json", "checkpoint.npz", "model.json", "model.npz")


class RunFinished(ValueError):
    """``--resume`` of a run that has done all its steps."""


RECIPES = ("adam", "paper")


def adam_lr(steps: int) -> float:
    """The adam recipe's default learning rate for a run of ``steps`` steps: 1 / steps,
    within [1e-3, 1e-2]. Adam moves each weight by about lr per step, so over the run a
    weight can move by about its initial scale (w ~ N(0, 1)): 1e-3 (torch's default) for
    runs of 1000 steps and more, up to 1e-2 for runs of 100 steps or fewer. On digits
    (width 4096, 20 full-batch steps) 1e-3 reached 0.34 training accuracy and 1e-2 0.92."""
    return min(1e-2, max(1e-3, 1.0 / max(1, steps)))


# Options added after the first run folders were written: left out of the hash at these
# values, so that those runs keep their hash (and resume).
_LATER = {
    "recipe": "paper",
    "loss": None,
    "optimizer": None,
    "train_output": None,
    "schedule": None,
    "eval": None,
    "val_fraction": None,
    "eval_every": None,
    "target_accuracy": None,
    "patience": None,
}


def config_hash(cfg: RunConfig) -> str:
    """What identifies a run's trajectory: everything but its length, threads and
    checkpointing. A checkpoint carries it; resume refuses one that does not match."""
    keep = {
        k: v
        for k, v in asdict(cfg).items()
        if k not in ("steps", "epochs", "threads", "checkpoint_every", "workers")
        and not (k in _LATER and v == _LATER[k])
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def load_model(out: str):
    """The network saved in a run folder: the model, else the last checkpoint. A sharded
    model is returned as a ``corrtree.sharded.ShardedModel`` (evaluated shard by shard;
    ``gather()`` makes it one ``ShiftedReLUNet``)."""
    for name in ("model.json", "model.npz", "checkpoint.json", "checkpoint.npz"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            return _net_from(path)
    raise FileNotFoundError(f"no model (model.npz, model.json) or checkpoint in {out}")


def _read_state(path: str) -> dict:
    """A saved state's ``step`` and ``config_hash`` (None when absent)."""
    if path.endswith(".json"):
        from .sharded import read_index

        ix = read_index(path)
        return {"step": ix.get("step"), "config_hash": ix.get("config_hash")}
    st = _io.read_npz(path, "corrtree checkpoint")
    return {
        "step": int(st["step"]) if "step" in st else None,
        "config_hash": str(st["config_hash"]) if st.get("config_hash") is not None else None,
    }


def _net_from(path: str):
    if path.endswith(".json"):
        from .sharded import ShardedModel

        return ShardedModel(path)
    state = _io.read_npz(path, "corrtree model file")
    missing = {"W", "a", "threshold"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a corrtree model: it lacks {sorted(missing)}")
    try:
        if "widths" in state:
            from .deep import ShiftedReLUMLP

            return ShiftedReLUMLP.from_state(state)
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
    workers: int | None = None,
    address: str | None = None,
    max_restarts: int = 3,
    callback=None,
    progress: bool = True,
    log=print,
) -> dict:
    """Train as ``cfg`` says and write the run folder ``out``; returns the summary.

    A folder belongs to one run: it is locked while the run trains, a new run into a folder
    holding another run's files is refused unless ``overwrite``, and ``resume`` continues the
    folder's own run (from its checkpoint, which must match its config) or, given ``steps`` or
    ``epochs`` beyond what it did, extends a finished run on the same batch schedule.

    With ``cfg.workers`` (or ``workers`` on resume) the neurons are sharded over Ray workers
    (``address``: an existing cluster; default a local one); the model and checkpoints are
    written as shards, and a lost worker is replaced, up to ``max_restarts`` times, by
    restarting every shard from the last checkpoint (the initialisation before the first).
    ``callback(t, net, info)`` runs after each step is recorded.
    """
    opts = {
        "threads": threads,
        "workers": workers,
        "address": address,
        "max_restarts": max_restarts,
        "callback": callback,
        "progress": progress,
    }
    with _io.FolderLock(out):
        for p in _io.clean_stale_tmp(out):
            log(f"removed {p}, a temporary file left by a killed run")
        return _run_locked(out, cfg, resume, overwrite, steps, epochs, opts, log)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        import shutil

        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _run_locked(out, cfg, resume, overwrite, steps, epochs, opts, log) -> dict:
    state_path, state, metrics = None, None, {"steps": [], "preprocess_seconds": []}
    if resume:
        cfg = _read_config(out)
        if steps is not None or epochs is not None:  # a longer run on the same schedule
            cfg.steps, cfg.epochs = steps, epochs
        for key in ("threads", "workers"):
            if opts[key] is not None:
                setattr(cfg, key, opts[key])
        cfg.validate()
        for name in STATE_FILES:
            if os.path.exists(os.path.join(out, name)):
                state_path = os.path.join(out, name)
                state = _read_state(state_path)
                break
        if state is not None and state["config_hash"] is not None:
            if state["config_hash"] != config_hash(cfg):
                raise ValueError(
                    f"{state_path} does not belong to the run configured in {out}/config.json "
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
            _remove(os.path.join(out, f))
    data = load_dataset(
        cfg.dataset,
        n=cfg.n,
        d=cfg.d,
        seed=cfg.seed,
        data_dir=cfg.data_dir,
        normalize=cfg.normalize,
        targets=cfg.targets,
    )
    data, held = held_out(cfg, data)
    Y = data.y if data.y.ndim == 2 else data.y[:, None]
    total = cfg.total_steps(data.n)
    start = 0
    if state is not None:
        start = state["step"] if state["step"] is not None else _done_steps(out)
        if start >= total:
            raise RunFinished(
                f"the run in {out} is finished ({start} steps); give --steps or --epochs "
                f"beyond {start} to extend it"
            )
        metrics = _io.read_json(os.path.join(out, "metrics.json"), "metrics file")
        metrics["steps"] = metrics["steps"][:start]
        for key in ("summary", "final_loss", "final_accuracy", "fired_per_point_end"):
            metrics.pop(key, None)
    what = f"training with engine {cfg.engine!r} on n={data.n}, width={cfg.width}"
    if cfg.workers:
        what += f" (each of {cfg.workers} workers)"
    check_memory(_estimate_bytes(cfg, data.n, data.d, Y.shape[1]), what)
    cluster = None
    if cfg.workers:
        from .distributed import Cluster

        cluster = Cluster(opts["address"])
    net = None
    try:
        net = _make_net(cfg, data, Y, state_path, cluster)
        if state_path is not None:
            log(f"resuming {out} at step {start} of {total}")
        opts["optimizer_state"] = _read_optimizer(out, state_path)
        opts["held_out"] = held
        return _train_run(out, cfg, data, Y, net, start, total, metrics, opts, cluster, log)
    finally:
        if cluster is not None:
            if net is not None:
                net.close()
            cluster.shutdown()


def held_out(cfg: RunConfig, data):
    """(training data, (which points, held-out Dataset) or None) as the config says: the
    dataset's test split (``eval="test"``) or a seeded, stratified fraction of its points
    (``val_fraction``; the same points every time for the same config and data)."""
    from .datasets import Dataset

    if cfg.eval == "test":
        if cfg.dataset != "fashion-mnist":
            raise ValueError(
                f"--eval test: the dataset {cfg.dataset!r} has no test split; hold out part "
                "of it with --val-fraction F"
            )
        test = load_dataset(
            cfg.dataset,
            data_dir=cfg.data_dir,
            normalize=cfg.normalize,
            targets=cfg.targets,
            split="test",
        )
        return data, (f"the test split ({test.n} points)", test)
    if cfg.val_fraction is None:
        return data, None
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(
            np.arange(data.n),
            test_size=cfg.val_fraction,
            random_state=cfg.seed,
            stratify=data.labels,
        )
    except ValueError as e:
        raise ValueError(f"--val-fraction {cfg.val_fraction}: {e}") from None
    keep, held = np.sort(keep), np.sort(held)

    def part(rows):
        labels = None if data.labels is None else data.labels[rows]
        return Dataset(data.name, data.X[rows], data.y[rows], labels)

    what = f"{cfg.val_fraction:g} of the points held out ({held.size})"
    return part(keep), (what, part(held))


def _read_optimizer(out: str, state_path: str | None) -> dict | None:
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


def _make_net(cfg, data, Y, state_path, cluster):
    """The network to train: a fresh one (sharded over workers with ``cfg.workers``) or the
    one saved at ``state_path``, checked against the data."""
    if cfg.workers:
        from .distributed import ShardedNet

        if state_path is None:
            return ShardedNet(
                data.d,
                cfg.width,
                cfg.threshold,
                seed=cfg.seed,
                dtype=cfg.dtype,
                n_outputs=Y.shape[1],
                workers=cfg.workers,
                cluster=cluster,
            )
        net = ShardedNet.load(state_path, cfg.workers, cluster)
        net.seed = cfg.seed
    elif state_path is None and cfg.widths:
        from .deep import ShiftedReLUMLP

        return ShiftedReLUMLP(
            data.d,
            cfg.widths,
            n_outputs=Y.shape[1],
            thresholds=cfg.threshold,
            seed=cfg.seed,
            dtype=cfg.dtype,
        )
    elif state_path is None:
        return ShiftedReLUNet(
            data.d, cfg.width, cfg.threshold, seed=cfg.seed, dtype=cfg.dtype, n_outputs=Y.shape[1]
        )
    else:
        net = _net_from(state_path)
        if state_path.endswith(".json"):
            net = net.gather()
    if (net.d, net.n_outputs, net.dtype.name) != (data.d, Y.shape[1], cfg.dtype):
        raise ValueError(
            f"{state_path} holds a network for d={net.d}, {net.n_outputs} outputs, {net.dtype} "
            f"but the data has d={data.d}, {Y.shape[1]} outputs ({cfg.dtype})"
        )
    return net


def _save(net, out: str, kind: str, step: int, chash: str, optim: dict | None = None) -> None:
    """The network's weights as ``kind`` ("model" or "checkpoint"): one .npz, or shards and
    their index for a sharded network; the other form of the same kind is removed. ``optim``:
    the optimizer's state, saved with a checkpoint."""
    if net.sharded:
        net.save(out, kind, step=step, config_hash=chash)
        _remove(os.path.join(out, f"{kind}.npz"))
    else:
        _io.write_npz(
            os.path.join(out, f"{kind}.npz"),
            **net.state_dict(),
            **{f"optim.{k}": v for k, v in (optim or {}).items()},
            step=np.array(step),
            config_hash=np.array(chash),
        )
        for f in (f"{kind}.json", f"{kind}.shards"):
            _remove(os.path.join(out, f))


def _train_run(out, cfg, data, Y, net, start, total, metrics, opts, cluster, log) -> dict:
    from .distributed import WorkerLostError

    X = data.X.astype(net.dtype)
    _io.write_json(os.path.join(out, "config.json"), asdict(cfg))
    if start == 0:
        metrics["fired_per_point_start"] = net.firing_counts(X)
    log(
        f"{data.name}: n={data.n}, d={data.d}, outputs={net.n_outputs}; "
        + (
            f"widths={list(cfg.widths)}"
            if cfg.widths
            else f"width={cfg.width}, b={net.thresholds[0]:.4f}"
        )
        + f", engine={cfg.engine}, {cfg.dtype}, {total} steps"
        + (f", {cfg.workers} workers" if cfg.workers else "")
    )
    loss_name, opt_name, train_output = cfg.parts(data.labels is not None)
    loss = get_loss(loss_name)
    optimizer = get_optimizer(opt_name)
    if opts["optimizer_state"] is not None:
        optimizer.load_state_dict(opts["optimizer_state"])
    if cfg.lr is not None:
        metrics["lr"] = cfg.lr
    elif "lr" in metrics:  # resumed or extended: the run's own default, fixed at its start
        pass
    elif isinstance(optimizer, Adam):
        metrics["lr"] = adam_lr(total)
    else:
        metrics["lr"] = auto_lr(data.n, cfg.batch_size, net.thresholds[0], net.depth)
    metrics["recipe"] = {
        "loss": loss_name,
        "optimizer": opt_name,
        "train_output": train_output,
        "schedule": cfg.schedule or "constant",
    }
    evaluation = None
    if opts["held_out"] is not None:
        what, test = opts["held_out"]
        evaluation = (test.X.astype(net.dtype), test.y)
        metrics.setdefault("eval", {"points": what, "step": [], "loss": [], "accuracy": []})
        metrics["eval"].setdefault("train_seconds", [])
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
            if not net.finite():
                raise DivergenceError(t, "the weights hold NaN or inf", info.loss)
            _io.write_json(os.path.join(out, "metrics.json"), metrics)
            _save(net, out, "checkpoint", done, chash, optimizer.state_dict())
        if opts["callback"] is not None:
            opts["callback"](t, net, info)

    t0 = time.perf_counter()
    restarts = 0
    while True:
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
                progress=opts["progress"],
                start_step=start,
                loss=loss,
                optimizer=optimizer,
                train_output=train_output,
                schedule=cfg.schedule,
                eval=evaluation,
                eval_every=cfg.eval_every,
                target_accuracy=cfg.target_accuracy,
                patience=cfg.patience,
            )
            break
        except WorkerLostError as e:
            restarts += 1
            if restarts > opts["max_restarts"]:
                raise WorkerLostError(
                    e.step, RuntimeError(f"{e}; gave up after {opts['max_restarts']} restarts")
                ) from None
            # The newest state of this run: a checkpoint, else the model a resumed run
            # started from, else the seeded initialisation (step 0).
            found = [f for f in STATE_FILES if os.path.exists(os.path.join(out, f))]
            source = os.path.join(out, found[0]) if found else None
            start = _read_state(source)["step"] if source is not None else 0
            log(
                f"{e}; restarting every worker from step {start} ({restarts} of "
                f"{opts['max_restarts']} restarts)"
            )
            net.restore(source)
            metrics["steps"] = metrics["steps"][:start]
        except DivergenceError as e:
            metrics["diverged"] = {"step": e.step, "last_finite_loss": e.last_loss}
            _io.write_json(os.path.join(out, "metrics.json"), metrics)
            if any(
                os.path.exists(os.path.join(out, f)) for f in ("checkpoint.npz", "checkpoint.json")
            ):
                e.args = (f"{e}; the last good checkpoint is kept in {out}",)
            raise
    if evaluation is not None:
        ev = metrics["eval"]
        for key, values in (
            ("step", hist.eval_step),
            ("loss", hist.eval_loss),
            ("accuracy", hist.eval_accuracy),
            ("train_seconds", hist.train_seconds),
        ):
            ev[key] = ev[key][: len(ev["step"])] + list(values)
        if hist.stopped:
            ev["stopped"] = hist.stopped
            total = hist.steps + start
        ev["best_step"] = hist.best_step
    metrics["preprocess_seconds"].append(hist.preprocess_seconds)
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["stats"] = hist.stats
    metrics["engine"] = hist.engine
    if restarts:
        metrics["restarts"] = restarts
    # The trained model first, before anything optional: a folder that cannot take it sends
    # it to a fallback file that the error names.
    try:
        _save(net, out, "model", total, chash)
    except OSError as e:
        if net.sharded:
            raise
        fallback = os.path.join(
            tempfile.gettempdir(), f"corrtree-model-{os.getpid()}-{int(time.time())}.npz"
        )
        _io.write_npz(
            fallback, **net.state_dict(), step=np.array(total), config_hash=np.array(chash)
        )
        raise _io.PathError(f"{e}; the trained model was saved to {fallback}") from None
    if optimizer.state:  # for extending the run exactly
        _io.write_npz(
            os.path.join(out, "optimizer.npz"),
            **{f"optim.{k}": v for k, v in optimizer.state_dict().items()},
            step=np.array(total),
            config_hash=np.array(chash),
        )
    metrics["fired_per_point_end"] = net.firing_counts(X)
    outputs = net.outputs(X)
    metrics["final_loss"] = loss(outputs, loss.targets(Y, X.shape[0], Y.shape[1], net.dtype))[0]
    if data.labels is not None:
        metrics["final_accuracy"] = accuracy(outputs, data.labels, cfg.targets, data.n_classes)
    summary = summarize(metrics, net, data.n)
    if cfg.workers:
        summary["sharded"] = True
    metrics["summary"] = summary
    _io.write_json(os.path.join(out, "metrics.json"), metrics)
    for f in ("checkpoint.npz", "checkpoint.json", "checkpoint.shards"):
        _remove(os.path.join(out, f))
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
    if "recipe" in metrics:
        out["recipe"] = metrics["recipe"]
    ev = metrics.get("eval")
    if ev and ev["step"]:
        out["eval"] = {
            "points": ev["points"],
            "final_accuracy": ev["accuracy"][-1],
            "best_accuracy": max((a for a in ev["accuracy"] if a is not None), default=None),
            "final_loss": ev["loss"][-1],
            "stopped": ev.get("stopped"),
        }
    return out


def describe(summary: dict) -> str:
    lines = [
        f"engine             {summary.get('engine')}",
        f"steps              {summary['steps']}",
        f"loss               {summary['first_loss']:.6g} -> {summary['final_loss']:.6g}",
    ]
    if "recipe" in summary:
        r = summary["recipe"]
        output = "trained" if r["train_output"] else "fixed"
        lines.insert(
            1, f"recipe             {r['loss']} loss, {r['optimizer']}, {output} output layer"
        )
    if "final_accuracy" in summary:
        lines.append(f"train accuracy     {summary['final_accuracy']:.4f}")
    ev = summary.get("eval")
    if ev:
        acc = ev["final_accuracy"]
        line = f"held-out loss      {ev['final_loss']:.6g}"
        if acc is not None:
            line = f"held-out accuracy  {acc:.4f} (best {ev['best_accuracy']:.4f})"
        line += f" on {ev['points']}"
        if ev.get("stopped"):
            line += f"; stopped early ({ev['stopped']})"
        lines.append(line)
    lines += [
        f"fired fraction     {summary['fired_fraction']:.4%} of neurons per point",
        f"neurons changed    {summary['mean_changed_neurons']:.0f} per step (mean)",
        f"preprocessing      {summary['preprocess_seconds']:.3f} s",
        f"time per step      {summary['median_step_seconds']:.4f} s (median)",
    ]
    return "\n".join(lines)
