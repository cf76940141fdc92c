"""A training run on disk: config, checkpoints, metrics, model and figures in one folder.

Every file is written atomically. A run interrupted after a checkpoint resumes with
``run_training(out, resume=True)`` and follows exactly the trajectory it would have followed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .. import _io, _progress
from .._validation import check_memory
from ..datasets import Dataset, binary_classes, load_dataset
from ..distributed import Cluster, ShardedNet, WorkerLostError
from ..engines import engine_class
from ..nets import Model, Preprocess, make_network, store
from ..nets.store import load_folder as load_model
from ..training import Adam, DivergenceError, auto_lr, get_loss, get_optimizer, train
from .config import RunConfig, RunFinished, adam_lr, config_hash
from .report import accuracy, describe, summarize

__all__ = [
    "RunConfig",
    "RunFinished",
    "RunOptions",
    "accuracy",
    "adam_lr",
    "describe",
    "load_model",
    "run_training",
    "summarize",
]


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


def _check_run_config(path: str) -> None:
    """Refuse to replace a config.json that is not a corrtree run's."""
    try:
        raw = _io.read_json(path, "run configuration")
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or not {"dataset", "width", "engine"} <= set(raw):
        raise FileExistsError(
            f"{path} is not a corrtree run configuration; it is left as it is (choose "
            "another --out)"
        )


def read_metrics(out: str) -> dict | None:
    """A run folder's metrics.json (None when there is none), checked to be one."""
    path = os.path.join(out, "metrics.json")
    if not os.path.exists(path):
        return None
    metrics = _io.read_json(path, "metrics file")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("steps"), list):
        raise ValueError(f"{path} is not a corrtree metrics file (damaged?): no list of steps")
    return metrics


def describe_folder(out: str, metrics: dict | None = None) -> str:
    """One line on a run folder that has no finished summary: what state it is in, the same
    words for ``info`` and ``train`` (``metrics``: its metrics.json when already read)."""
    metrics = metrics or read_metrics(out) or {"steps": []}
    if "diverged" in metrics:
        d = metrics["diverged"]
        return (
            f"diverged at step {d['step']} (last finite loss {d['last_finite_loss']}); lower "
            "--lr and train again with --overwrite"
        )
    done = len(metrics["steps"])
    state = store.state_in(out)
    saved = ""
    if state is not None:
        saved = f", {os.path.basename(state)} at step {store.read_state(state)['step']}"
    return f"unfinished: {done} steps recorded{saved} (continue it with --resume {out})"


def read_config(out: str) -> RunConfig:
    """A run folder's configuration, checked to be one."""
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{out} holds no run: {path} does not exist")
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
    opts = RunOptions(threads, workers, address, max_restarts, callback, progress, log)
    if resume and not os.path.isdir(out):
        raise FileNotFoundError(f"cannot resume: {out} does not exist")
    if os.path.islink(out) and not os.path.exists(out):
        raise _io.PathError(
            f"cannot use {out}: it is a symbolic link to {os.readlink(out)}, which does not exist"
        )
    created = not os.path.exists(out)
    try:
        with _io.FolderLock(out):
            for p in _io.clean_stale_tmp(out):
                log(f"removed {p}, a temporary file left by a killed run")
            with _progress.shown(progress):
                return _run_locked(out, cfg, resume, overwrite, steps, epochs, opts)
    except BaseException:
        if created and os.path.isdir(out) and os.listdir(out) == [_io.FolderLock.NAME]:
            # a run that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out, _io.FolderLock.NAME))
                os.rmdir(out)
        raise


@dataclass
class RunOptions:
    """How a run is carried out, apart from what it computes (``RunConfig``): threads and
    Ray workers, the cluster's address, restarts after a lost worker, a per-step callback,
    the progress bar and the log."""

    threads: int | None = None
    workers: int | None = None
    address: str | None = None
    max_restarts: int = 3
    callback: Callable | None = None
    progress: bool = True
    log: Callable = print


@dataclass
class _Start:
    """Where a run starts: its step, the metrics so far, the optimizer's saved state and the
    held-out points (which points, Dataset)."""

    step: int
    total: int
    metrics: dict
    optimizer_state: dict | None
    held_out: tuple | None
    preprocess: Preprocess


def _run_locked(out, cfg, resume, overwrite, steps, epochs, opts: RunOptions) -> dict:
    log = opts.log
    state_path, state, metrics = None, None, {"steps": [], "preprocess_seconds": []}
    existing: list[str] = []
    if resume:
        cfg = read_config(out)
        if steps is not None or epochs is not None:  # a longer run on the same schedule
            cfg = replace(cfg, steps=steps, epochs=epochs)
        for key in ("threads", "workers"):
            if getattr(opts, key) is not None:
                cfg = replace(cfg, **{key: getattr(opts, key)})
        cfg = cfg.validated()
        state_path = store.state_in(out)
        if state_path is not None:
            state = store.read_state(state_path)
        if state is not None and state["config_hash"] is None and "checkpoint" in state_path:
            raise ValueError(
                f"{state_path} carries no configuration hash: it cannot be shown to belong to "
                f"the run configured in {out}/config.json; start a new run with --overwrite"
            )
        if state is not None and state["config_hash"] is not None:
            if state["config_hash"] != config_hash(cfg):
                raise ValueError(
                    f"{state_path} does not belong to the run configured in {out}/config.json "
                    "(its configuration hash differs); start a new run with --overwrite"
                )
    else:
        cfg = cfg.validated()
        existing = [f for f in RUN_FILES + FIGURES if os.path.exists(os.path.join(out, f))]
        if existing and not overwrite:
            metrics = read_metrics(out) if "config.json" in existing else None
            if metrics is None or "summary" in metrics:
                what = f"another run's results ({', '.join(existing)})"
            else:
                what = f"a run that did not finish: {describe_folder(out, metrics)}"
            raise FileExistsError(
                f"{out} holds {what}; use --overwrite to replace it, --resume to continue "
                "that run, or another --out"
            )
        if "config.json" in existing:
            _check_run_config(os.path.join(out, "config.json"))
    parts = prepare(cfg)
    data, held = parts.train, parts.held
    Y = data.y if data.y.ndim == 2 else data.y[:, None]
    total = cfg.total_steps(data.n)
    start = 0
    if state is not None:
        start = state["step"] if state["step"] is not None else _done_steps(out)
        metrics = read_metrics(out) or {"steps": [], "preprocess_seconds": []}
        if start >= total and ("summary" in metrics or "checkpoint" in state_path):
            raise RunFinished(
                f"the run in {out} is finished ({start} steps); give --steps or --epochs "
                f"beyond {start} to extend it"
            )
        if start >= total:  # stopped after saving its model, before its summary: finish it
            log(f"{out}: the model of step {start} is saved but not its summary; writing it")
            start = total
        metrics["steps"] = metrics["steps"][:start]
        for key in ("summary", "final_loss", "final_accuracy", "fired_per_point_end"):
            metrics.pop(key, None)
    what = f"training with engine {cfg.engine!r} on n={data.n}, width={cfg.width}"
    if cfg.workers:
        what += f" (each of {cfg.workers} workers)"
    check_memory(_estimate_bytes(cfg, data.n, data.d, Y.shape[1]), what)
    cluster = Cluster(opts.address, notices=opts.progress) if cfg.workers else None
    net = None
    try:
        net = _make_net(cfg, data, Y, state_path, cluster)
        if state_path is not None:
            log(f"resuming {out} at step {start} of {total}")
        begin = _Start(
            start, total, metrics, store.read_optimizer(out, state_path), held, parts.preprocess
        )
        # Only now, with the data loaded, the memory checked and the network built, is the
        # old run's folder emptied: a run refused before this point leaves it as it was.
        for f in existing:
            store._remove(os.path.join(out, f))
        return _train_run(out, cfg, data, Y, net, begin, opts)
    finally:
        if cluster is not None:
            if net is not None:
                net.close()
            cluster.shutdown()


@dataclass
class Prepared:
    """A run's data as the configuration says: the training points; the points scored while
    training (which points, Dataset) or None; the points held out for testing (never seen
    while training) or None; and the preprocessing, fitted on the training points and
    applied to all three."""

    train: Dataset
    held: tuple | None
    test: tuple | None
    preprocess: Preprocess


def prepare(cfg: RunConfig) -> Prepared:
    """Load the run's data and split it, the same way every time for the same configuration:
    ``test_size`` first (a seeded, stratified fraction held out for testing), then the
    evaluation set (``eval="test"``: the dataset's test split; ``val_fraction``: a seeded,
    stratified fraction of the rest). The preprocessing (``standardize``, ``normalize``) is
    fitted on what remains, the training points."""
    data = load_dataset(
        cfg.dataset,
        n=cfg.n,
        d=cfg.d,
        seed=cfg.seed,
        data_dir=cfg.data_dir,
        normalize=False,
        targets=cfg.targets,
        task=cfg.task,
    )
    data, test = _split(data, cfg.test_size, cfg.seed, "--test-size", "held out for testing")
    held = None
    if cfg.eval == "test":
        if cfg.dataset != "fashion-mnist":
            raise ValueError(
                f"--eval test: the dataset {cfg.dataset!r} has no test split; hold out part "
                "of it with --val-fraction F"
            )
        split = load_dataset(
            cfg.dataset, data_dir=cfg.data_dir, normalize=False, targets=cfg.targets,
            split="test",
        )  # fmt: skip
        held = (f"the test split ({split.n} points)", split)
    else:
        data, held = _split(data, cfg.val_fraction, cfg.seed, "--val-fraction", "held out")
    prep = Preprocess.fit(data.X, normalize=cfg.normalize, standardize=cfg.standardize)

    def apply(part):
        if part is None:
            return None
        what, ds = part
        return what, replace(ds, X=prep(ds.X))

    train = replace(data, X=prep(data.X))
    return Prepared(train, apply(held), apply(test), prep)


def _split(data: Dataset, fraction, seed, option: str, what: str):
    """(the rest, (which points, the held-out part)): a seeded, stratified fraction."""
    if fraction is None:
        return data, None
    from sklearn.model_selection import train_test_split  # a second to import: when used

    try:
        keep, held = train_test_split(
            np.arange(data.n), test_size=fraction, random_state=seed, stratify=data.labels
        )
    except ValueError as e:
        raise ValueError(f"{option} {fraction}: {e}") from None
    keep, held = np.sort(keep), np.sort(held)

    def part(rows):
        labels = None if data.labels is None else data.labels[rows]
        return Dataset(data.name, data.X[rows], data.y[rows], labels, data.classes)

    return part(keep), (f"{fraction:g} of the points {what} ({held.size})", part(held))


def _make_net(cfg, data, Y, state_path, cluster):
    """The network to train: a fresh one (sharded over workers with ``cfg.workers``) or the
    one saved at ``state_path``, checked against the data."""
    if cfg.workers:
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
    elif state_path is None:
        return make_network(
            data.d,
            cfg.width,
            cfg.widths,
            threshold=cfg.threshold,
            seed=cfg.seed,
            dtype=cfg.dtype,
            n_outputs=Y.shape[1],
        )
    else:
        net = store.load(state_path)
        if state_path.endswith(".json"):
            net = net.gather()
    if (net.d, net.n_outputs, net.dtype.name) != (data.d, Y.shape[1], cfg.dtype):
        raise ValueError(
            f"{state_path} holds a network for d={net.d}, {net.n_outputs} outputs, {net.dtype} "
            f"but the data has d={data.d}, {Y.shape[1]} outputs ({cfg.dtype})"
        )
    return net


def _train_run(out, cfg: RunConfig, data, Y, net, begin: _Start, opts: RunOptions) -> dict:
    start, total, metrics, log = begin.step, begin.total, begin.metrics, opts.log
    X = data.X.astype(net.dtype)
    _io.write_json(os.path.join(out, "config.json"), cfg.as_dict())
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
    targets = loss.targets(Y, X.shape[0], Y.shape[1], net.dtype)
    if start == 0:  # the same points as the end's figures: every training point
        log(f"scoring the {data.n} training points at initialisation")
        outputs, metrics["fired_per_point_start"] = net.evaluate(X)
        metrics["initial_loss"] = loss(outputs, targets)[0]
    if _compiling():
        log("first run after installing or changing corrtree: numba compiles its kernels at "
            "their first call (about half a minute, cached afterwards)")  # fmt: skip
    classes = data.classes
    if classes is not None and cfg.targets == "binary":
        classes = binary_classes(classes)
    saved = store.model_state(Model(net, begin.preprocess, data.task, classes, loss_name))
    optimizer = get_optimizer(opt_name)
    if begin.optimizer_state is not None:
        optimizer.load_state_dict(begin.optimizer_state)
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
    if begin.held_out is not None:
        what, test = begin.held_out
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
            store.save(
                net,
                out,
                "checkpoint",
                step=done,
                config_hash=chash,
                optimizer=optimizer.state_dict(),
                model=saved,
            )
        if opts.callback is not None:
            opts.callback(t, net, info)

    engine = engine_class(cfg.engine, data.n, cfg.width).name
    if not cfg.widths and engine != "dense":
        log(
            f"building the {engine} engine's index over {data.n} points and {cfg.width} "
            "neurons (the preprocessing pass)"
        )
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
                progress=opts.progress,
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
            # The newest state of this run: a checkpoint, else the model a resumed run
            # started from, else the seeded initialisation (step 0).
            source = store.state_in(out)
            start = store.read_state(source)["step"] if source is not None else 0
            kept = f"step {start} is kept in {out}: continue with --resume {out}"
            if restarts > opts.max_restarts:
                why = f"{e}; gave up after {opts.max_restarts} restarts; {kept}"
                raise WorkerLostError(e.step, RuntimeError(why)) from None
            log(
                f"{e}; restarting every worker from step {start} ({restarts} of "
                f"{opts.max_restarts} restarts)"
            )
            try:
                net.restore(source)
            except WorkerLostError as again:  # the cluster itself is gone (its raylet died)
                why = f"{e}; the cluster could not restart it either ({again}); {kept}"
                raise WorkerLostError(e.step, RuntimeError(why)) from None
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
        store.save(net, out, "model", step=total, config_hash=chash, model=saved)
    except OSError as e:
        if net.sharded:
            raise
        fallback = os.path.join(
            tempfile.gettempdir(), f"corrtree-model-{os.getpid()}-{int(time.time())}.npz"
        )
        try:
            store.save(net, out, "model", step=total, config_hash=chash, path=fallback, model=saved)
        except OSError as e2:
            raise _io.PathError(
                f"the trained model could not be written to {out} ({_say(e)}) nor to "
                f"{fallback} ({_say(e2)}): "
                "the trained weights are lost; free space and train again"
            ) from None
        raise _io.PathError(f"{_say(e)}; the trained model was saved to {fallback}") from None
    if optimizer.state:  # for extending the run exactly
        store.write_optimizer(out, optimizer.state_dict(), total, chash)
    log(f"scoring the {data.n} training points")
    outputs, metrics["fired_per_point_end"] = net.evaluate(X)
    metrics["final_loss"] = loss(outputs, targets)[0]
    if data.labels is not None:
        metrics["final_accuracy"] = accuracy(outputs, data.labels, cfg.targets, data.n_classes)
    summary = summarize(metrics, net, data.n)
    if cfg.workers:
        summary["sharded"] = True
    metrics["summary"] = summary
    _io.write_json(os.path.join(out, "metrics.json"), metrics)
    for f in ("checkpoint.npz", "checkpoint.json", "checkpoint.shards"):
        store._remove(os.path.join(out, f))
    if summary["fired_fraction"] == 0:
        print(
            "warning: no neuron fires on any point at the end of training: the network "
            "outputs 0 everywhere (lower --lr, keep inputs normalised, or lower --threshold)",
            file=sys.stderr,
        )
        summary["dead"] = True
    try:
        from .plots import plot_run  # matplotlib: an optional extra

        summary["figures"] = plot_run(out, metrics)
    except ImportError:  # matplotlib is an optional extra
        summary["figures"] = []
        log("matplotlib is not installed: no figures (pip install 'corrtree[plot]')")
    except OSError as e:
        summary["figures"] = []
        log(f"warning: figures not written: {_io.describe_oserror(e)}")
    return summary


def _compiling() -> bool:
    """Whether numba's cache holds no compiled kernel of corrtree's yet (the first call of
    each kernel then compiles it)."""
    cache = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_kernels", "__pycache__")
    return not (os.path.isdir(cache) and any(f.endswith(".nbi") for f in os.listdir(cache)))


def _say(e: OSError) -> str:
    return str(e) if isinstance(e, _io.PathError) else _io.describe_oserror(e)


def _done_steps(out: str) -> int:
    return len((read_metrics(out) or {"steps": []})["steps"])
