"""The ``corrtree`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import replace

import numpy as np

from .. import _io, _progress
from .. import hardness as H
from .._io import PathError, describe_oserror
from .._version import __version__
from ..bench import BENCHMARKS
from ..bench import run as run_benchmark
from ..datasets import load_dataset
from ..engines import ENGINES, engine_class
from ..nets.store import load_model as load_saved_model
from ..training import get_loss
from .demo import demo
from .run import (
    RUN_FILES,
    RunConfig,
    accuracy,
    describe,
    describe_folder,
    prepare,
    read_config,
    read_metrics,
    run_training,
)

_ERRORS = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    MemoryError,
    ImportError,
    OSError,
    RuntimeError,
    FloatingPointError,
)
# Options that --resume takes from the run's own config; giving one is a conflict.
_RUN_OPTIONS = (
    "dataset",
    "n",
    "d",
    "data_dir",
    "normalize",
    "standardize",
    "task",
    "test_size",
    "targets",
    "width",
    "widths",
    "threshold",
    "lr",
    "batch_size",
    "engine",
    "engine_opt",
    "dtype",
    "seed",
    "checkpoint_every",
    "out",
    "overwrite",
    "recipe",
    "loss",
    "optimizer",
    "train_output",
    "schedule",
    "eval",
    "val_fraction",
    "eval_every",
    "target_accuracy",
    "patience",
)


def _positive(v: str) -> int:
    try:
        k = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {k}")
    return k


def _widths(v: str) -> list[int]:
    try:
        widths = [int(w) for w in v.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {v!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths, got {v!r}")
    return widths


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="digits",
        help="synthetic, digits, fashion-mnist, svmlight:PATH or npz:PATH "
        "(arrays X, y) (default: digits)",
    )
    g.add_argument("--n", type=_positive, help="use the first N points (synthetic: N points)")
    g.add_argument("--d", type=_positive, default=32, help="synthetic input dimension")
    g.add_argument(
        "--data-dir",
        help="folder with Fashion-MNIST's idx.gz files "
        "(default: /usr/share/datasets/fashion-mnist)",
    )
    g.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="keep inputs as they are (default: scale rows to unit norm, which the "
        "default threshold assumes)",
    )
    g.add_argument(
        "--standardize",
        action="store_true",
        help="scale each feature to zero mean and unit variance on the training points "
        "before normalising rows (saved with the model, applied by predict)",
    )
    g.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="what y is (default: the data set's own; required for a file whose targets "
        "are whole numbers, which could be classes or counts)",
    )
    g.add_argument(
        "--test-size",
        type=float,
        metavar="F",
        help="hold out this fraction of the points for testing (stratified, seeded; never "
        "trained on or scored while training; predict --split test scores them)",
    )
    g.add_argument(
        "--targets",
        choices=("onehot", "binary"),
        default="onehot",
        help="classification targets: one output per class, or +1 for the lower "
        "half of the classes and -1 otherwise (default: onehot)",
    )
    g = p.add_argument_group("network and training")
    g.add_argument("--width", type=_positive, default=4096, help="hidden neurons m")
    g.add_argument(
        "--widths",
        type=_widths,
        metavar="M1,M2,...",
        help="a deep network with hidden layers of these widths, e.g. 16384,16384 (--engine "
        "then finds layer 1's firing pairs: auto or any exact engine)",
    )
    g.add_argument("--threshold", type=float, help="ReLU shift b (default: sqrt(0.4 ln m))")
    g.add_argument("--steps", type=_positive, help="gradient steps (default: 20)")
    g.add_argument("--epochs", type=_positive, help="passes over the data instead of --steps")
    g.add_argument(
        "--lr",
        type=float,
        help="learning rate (default: for Adam 1 / steps within [1e-3, 1e-2]; for SGD "
        "2 / (B p L), B the batch size "
        "or n, p the firing fraction at initialisation, L the trained layers; the loss is "
        "a sum over the batch)",
    )
    g.add_argument(
        "--batch-size",
        type=_positive,
        help="mini-batch SGD with this batch size (default: full-batch GD)",
    )
    g.add_argument(
        "--engine",
        choices=[*sorted(ENGINES), "auto"],
        default="auto",
        help="how firing pairs are found and maintained; auto picks the fastest exact "
        "engine for the sizes: dense for small problems, else certified (default: auto)",
    )
    g.add_argument(
        "--engine-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the engine, e.g. slack=0.3 for certified (repeatable; the "
        "engines' options are listed in docs/engines.md)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="precision of the weights and every computation (default: float64)",
    )
    g.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    g.add_argument(
        "--threads", type=_positive, help="numba and BLAS threads (per worker with --workers)"
    )
    g = p.add_argument_group("recipe")
    g.add_argument(
        "--recipe",
        choices=("adam", "paper"),
        help="adam: cross-entropy for classes (logistic with --targets binary, squared for "
        "regression), a trained output layer and lazy Adam, the fastest to a test accuracy; "
        "paper: squared loss, output layer fixed at +-1, plain SGD (default: adam; paper for "
        "deep and --workers runs, which train only that)",
    )
    g.add_argument("--loss", choices=("squared", "cross_entropy", "logistic"),
                   help="override the recipe's loss")  # fmt: skip
    g.add_argument("--optimizer", choices=("sgd", "adam"), help="override the recipe's optimizer")
    g.add_argument(
        "--train-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the output layer (default: the recipe's)",
    )
    g.add_argument("--schedule", choices=("constant", "cosine"),
                   help="learning-rate schedule (default: constant)")  # fmt: skip
    g = p.add_argument_group("held-out evaluation")
    g.add_argument(
        "--eval",
        choices=("test",),
        help="score the dataset's test split while training (fashion-mnist)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="hold out this fraction of the points (stratified, seeded) and score it",
    )
    g.add_argument("--eval-every", type=_positive, metavar="K",
                   help="evaluate every K steps (default: each epoch, and at the end)")  # fmt: skip
    g.add_argument("--target-accuracy", type=float, metavar="A",
                   help="stop once the held-out accuracy reaches A")  # fmt: skip
    g.add_argument(
        "--patience",
        type=_positive,
        metavar="K",
        help="stop after K evaluations without a lower held-out loss, keeping the best weights",
    )
    g = p.add_argument_group("distributed (Ray: pip install 'corrtree[ray]')")
    g.add_argument(
        "--workers",
        type=_positive,
        help="split the neurons over N Ray workers, each training its block exactly; the "
        "model and checkpoints are written as shards (default: one process)",
    )
    g.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join the Ray cluster at HOST:PORT (or auto) instead of starting a local one",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--checkpoint-every",
        type=_positive,
        metavar="K",
        help="write a checkpoint every K steps (resume with --resume)",
    )


def _config(args):
    fields = {k: getattr(args, k) for k in RunConfig.__dataclass_fields__ if hasattr(args, k)}
    if fields.get("recipe") is None:
        fields["recipe"] = "paper" if args.widths or args.workers else "adam"
    if args.engine_opt:
        fields["engine_options"] = _engine_options(args.engine, args.engine_opt)
    return RunConfig(**fields)


def _engine_options(engine: str, items: list[str]) -> dict:
    """``--engine-opt KEY=VALUE`` items, converted by the declared types of the engine given;
    for ``auto``, by those of whichever engine declares each key (the options are checked
    against the engine auto picks once the data's size is known)."""
    if engine != "auto":
        return engine_class(engine, 1, 1).parse_options(items)
    out = {}
    for item in items:
        key = item.partition("=")[0].strip().replace("-", "_")
        owner = next((c for c in ENGINES.values() if key in c.Options.__dataclass_fields__), None)
        if owner is None:
            names = sorted({f for c in ENGINES.values() for f in c.Options.__dataclass_fields__})
            raise ValueError(
                f"--engine-opt {item!r}: no engine has an option {key!r}; the engines' options "
                f"are: {', '.join(names)}"
            )
        out.update(owner.parse_options([item]))
    return out


_UNSET = object()


def _given(argv: list[str]) -> list[str]:
    """The run options given on the command line ``argv``, whatever their values (an option
    given with its default value is given)."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action.choices["train"].set_defaults(**dict.fromkeys(_RUN_OPTIONS, _UNSET))
    args = parser.parse_args(argv)
    return [k for k in _RUN_OPTIONS if getattr(args, k) is not _UNSET]


def _new_run_folder(root: str = "runs") -> str:
    """A fresh folder name under ``root``, from the time (with a suffix when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, k = os.path.join(root, stamp), 1
    while os.path.lexists(out):
        k += 1
        out = os.path.join(root, f"{stamp}-{k}")
    return out


def _point_latest(out: str) -> None:
    """``runs/latest`` -> the newest run folder made by default (a symlink, replaced
    atomically)."""
    root = os.path.dirname(out)
    link = os.path.join(root, "latest")
    if os.path.lexists(link) and not os.path.islink(link):
        return  # a folder of an older layout named latest: left alone
    tmp = os.path.join(root, f".latest-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.symlink(os.path.basename(out), tmp)
        os.replace(tmp, link)


def cmd_train(args) -> int:
    fresh = not args.resume and args.out is None
    out = args.resume or args.out or _new_run_folder()
    log = (lambda *a: None) if args.quiet else print
    if args.resume:
        given = _given(args.argv)
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(
                f"--resume continues the run with its own configuration; {flags} cannot be "
                "changed (only --steps or --epochs, to extend it, --threads, --workers, "
                "--ray-address and --quiet)"
            )
        summary = run_training(
            out,
            resume=True,
            steps=args.steps,
            epochs=args.epochs,
            threads=args.threads,
            workers=args.workers,
            address=args.ray_address,
            progress=not args.quiet,
            log=log,
        )
    else:
        if args.ray_address and not args.workers:
            raise ValueError("--ray-address needs --workers N (how many workers to start)")
        summary = run_training(
            out,
            _config(args),
            overwrite=args.overwrite,
            address=args.ray_address,
            progress=not args.quiet,
            log=log,
        )
    if fresh:
        _point_latest(out)
    print(describe(summary))
    model = "model.json + model.shards/" if summary.get("sharded") else "model.npz"
    print(
        f"results in {out}/ (config.json, metrics.json, {model}"
        + (", figures" if summary["figures"] else "")
        + ")"
    )
    return 0


def cmd_info(args) -> int:
    if not os.path.exists(os.path.join(args.dir, "config.json")):
        raise FileNotFoundError(f"{args.dir} is not a corrtree run folder: no config.json")
    cfg = read_config(args.dir)
    print(" ".join(f"{k}={v}" for k, v in cfg.as_dict().items() if v is not None))
    metrics = read_metrics(args.dir)
    if metrics is not None and "summary" in metrics:
        print(describe(metrics["summary"]))
        with contextlib.suppress(FileNotFoundError):
            model = load_saved_model(args.dir, default_normalize=cfg.normalize)
            print(f"model              {model!r}")
    else:
        print(describe_folder(args.dir))
    return 0


def cmd_predict(args) -> int:
    if args.save:
        _check_save_path(args.save)
    cfg = read_config(args.dir)
    model = load_saved_model(args.dir, default_normalize=cfg.normalize)
    if args.data is not None:
        if args.dataset is not None or args.split != "train" or args.n is not None:
            raise ValueError("--data scores a file of its own: without --dataset, --split, --n")
        X, y = read_points(args.data, model.n_features_in_)
        print(f"scoring {X.shape[0]} points of {args.data}", file=sys.stderr)
        outputs = model.outputs(X)
        line = f"{args.data} ({X.shape[0]} points)"
        if y is not None:
            line += ": " + _score_labels(model, outputs, y)
        print(line)
        _save_predictions(args.save, model, outputs)
        return 0
    name = args.dataset or cfg.dataset
    own = args.dataset is None  # the run's own data: its held-out points, if it kept any
    test_split = args.split == "test" and name == "fashion-mnist" and not cfg.test_size
    kept = own and (cfg.val_fraction is not None or cfg.test_size is not None) and not test_split
    if args.split == "test" and not (test_split or kept):
        raise ValueError(
            f"--split test: {name} has no test split and the run held no points out; train "
            "with --test-size F to keep some, or score other data with --dataset or --data"
        )
    points = f"the {args.split} split"
    if kept:  # the run's own split: the points it trained on, or those it held out
        parts = prepare(cfg)
        data = parts.train
        if args.split == "test":
            points, data = parts.test or parts.held
        else:
            points = "the training points (those held out excluded)"
    else:
        data = load_dataset(
            name,
            # a test split is scored whole; the run's own --n applies to its training points
            n=args.n if args.n is not None else (cfg.n if own and not test_split else None),
            d=cfg.d,
            seed=cfg.seed,
            data_dir=args.data_dir or cfg.data_dir,
            normalize=False,
            targets=cfg.targets,
            split="test" if test_split else "train",
            task=cfg.task,
        )
        data = replace(data, X=model.preprocess(data.X))
    net = model.net
    print(f"scoring {data.n} points of {data.name}", file=sys.stderr)
    out = net.outputs(net.check_X(data.X.astype(net.dtype)))
    Y = data.y if data.y.ndim == 2 else data.y[:, None]
    if Y.shape[1] != out.shape[1]:
        raise ValueError(
            f"the data has {Y.shape[1]} targets per point but the model {out.shape[1]} outputs"
        )
    loss = get_loss(cfg.parts(data.labels is not None)[0])
    value = loss(out, loss.targets(Y, Y.shape[0], Y.shape[1], out.dtype))[0]
    line = f"{data.name} ({points}): n={data.n}, {loss.name} loss={value:.6g}"
    if data.labels is not None:
        line += f", accuracy={accuracy(out, data.labels, cfg.targets, data.n_classes):.4f}"
    print(line)
    _save_predictions(args.save, model, out)
    return 0


def read_points(path: str, d: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw points (and targets, when the file has them) for a model of d features: .npz
    (array X, y optional), svmlight (.svm, .svmlight, .libsvm: d features whatever the
    file's last one), .csv (d columns, or d + 1 with y last)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data: {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        arrays = _io.read_npz(path, "npz data file (array X, y optional)")
        if "X" not in arrays:
            raise ValueError(f"{path} must hold an array 'X' (and optionally 'y')")
        return arrays["X"], arrays.get("y")
    if ext in (".svm", ".svmlight", ".libsvm"):
        from sklearn.datasets import load_svmlight_file  # a second to import: when used

        try:
            X, y = load_svmlight_file(path, n_features=d)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{path} is not a readable svmlight file for {d} features ({e})"
            ) from None
        return X.toarray(), y
    if ext == ".csv":
        try:
            table = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError as e:
            raise ValueError(f"{path} is not a CSV table of numbers ({e})") from None
        if table.shape[1] == d:
            return table, None
        if table.shape[1] == d + 1:
            return table[:, :d], table[:, d]
        raise ValueError(
            f"{path} has {table.shape[1]} columns; the model takes {d} features (then "
            f"{d} columns, or {d + 1} with the target last)"
        )
    raise ValueError(f"--data {path}: expected .npz, .csv, or svmlight (.svm, .svmlight, .libsvm)")


def _score_labels(model, outputs: np.ndarray, y) -> str:
    """The score of the model's outputs against targets as the training data gave them."""
    y = np.asarray(y)
    if model.task == "regression":
        Y = y.reshape(outputs.shape[0], -1).astype(np.float64)
        if Y.shape[1] != outputs.shape[1]:
            raise ValueError(f"y has {Y.shape[1]} columns but the model {outputs.shape[1]} outputs")
        return f"mean squared error={float(np.mean((outputs - Y) ** 2)):.6g}"
    known = np.isin(y, model.classes_)
    if not known.all():
        raise ValueError(
            f"y holds labels the model was not trained on: {np.unique(y[~known])[:5]} (its "
            f"classes: {model.classes_})"
        )
    return f"accuracy={float(np.mean(model.predictions(outputs) == y)):.4f}"


def _save_predictions(path: str | None, model, outputs: np.ndarray) -> None:
    """``--save`` (its path checked before scoring): the outputs and the predictions (class
    labels, or values)."""
    if path:
        _io.write_npz(path, outputs=outputs, predictions=model.predictions(outputs))
        print(f"outputs and predictions written to {path}")


def _check_save_path(path: str) -> None:
    """Predictions never go over a run's own files (a model, a checkpoint, its config)."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if os.path.exists(os.path.join(folder, "config.json")) and name in RUN_FILES:
        raise FileExistsError(
            f"--save {path}: {name} is a file of the run folder {folder}; write the "
            "predictions elsewhere (e.g. predictions.npz)"
        )


def cmd_demo(args) -> int:
    demo(args.out, steps=args.steps, width=args.width, quiet=args.quiet, overwrite=args.overwrite)
    return 0


def cmd_hardness(args) -> int:
    A, B = H.ov_instance(args.n, args.n, args.d, planted=True, seed=args.seed)
    print(
        f"Orthogonal Vectors: |A| = |B| = {args.n}, d = {args.d}, one planted pair "
        f"(seed {args.seed})"
    )
    print(f"  brute force            -> {H.brute_ov(A, B)}")
    for s in H.STRUCTURES:
        st: dict = {}
        ans = H.solve_ov(A, B, s, st)
        ok = ans is not None and int(A[ans[0]] @ B[ans[1]]) == 0
        print(
            f"  OV -> MBIP -> {s:6s}  -> {ans} ({'orthogonal' if ok else 'WRONG'}): "
            f"{st['updates']} updates, {st['queries']} queries, "
            f"{st['inner_products']} inner products, {st['nodes_visited']} nodes visited, "
            f"{st['seconds'] * 1e3:.1f} ms"
        )
    sizes = sorted({max(2, args.n >> k) for k in (3, 2, 1, 0)})
    print(f"\nWork per weight update on instances with no orthogonal pair (d = {args.d}):")
    print(
        f"  {'structure':9s} {'n':>7s} {'updates':>8s} {'inner products/update':>22s} "
        f"{'us/update':>10s}"
    )
    for s in H.STRUCTURES:
        rows = H.scaling_experiment(sizes, args.d, s, args.seed)
        for r in rows:
            print(
                f"  {s:9s} {r['n']:7d} {r['updates']:8d} "
                f"{r['inner_products_per_update']:22.1f} {r['microseconds_per_update']:10.1f}"
            )
        ns = np.log([r["n"] for r in rows])
        if len(set(ns)) < 2:
            print(f"  {s}: one size only (--n {args.n}): no growth rate to fit")
            continue
        slope = np.polyfit(ns, np.log([r["inner_products_per_update"] for r in rows]), 1)[0]
        print(f"  {s}: inner products per update grow as n^{slope:.2f}")
    print(
        "\nEach update does Theta(n) work. Under the Orthogonal Vectors Conjecture no structure "
        "can do n^(1-delta)\nper update and query with polynomial preprocessing; timing "
        "illustrates, it does not prove."
    )
    return 0


def cmd_bench(args) -> int:
    if args.name is None:
        for name, what in BENCHMARKS.items():
            print(f"{name:14s} {what}")
        return 0
    run_benchmark(args.name, args.args)
    return 0


class _Parser(argparse.ArgumentParser):
    """Errors in the arguments are one line, as every other error: ``corrtree: error: ...``
    with where to look, and exit 2."""

    def error(self, message):
        self.exit(2, f"corrtree: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="corrtree",
        description="Exact sparse training of wide shifted-ReLU layers with weight-data "
        "correlation trees.",
    )
    p.add_argument("--version", action="version", version=f"corrtree {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a network and write a run folder",
        description="Train the shifted-ReLU network and write config.json, "
        "metrics.json, model.npz and PNG figures to --out.",
    )
    _add_train_options(t)
    t.add_argument(
        "--out",
        help="run folder (default: a new runs/YYYYmmdd-HHMMSS, with runs/latest pointing at "
        "the newest)",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in --out (refused otherwise)",
    )
    t.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint with its own config; with "
        "--steps or --epochs beyond what it did, extend a finished run",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("info", help="print the summary of a run folder")
    i.add_argument("dir")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser(
        "predict",
        help="evaluate a run's model on its dataset (or another)",
        description="Load the model of a run folder (one file or shards) and report loss and "
        "accuracy on a dataset; --save writes the outputs.",
    )
    r.add_argument("dir", help="run folder")
    r.add_argument("--dataset", help="dataset (default: the run's)")
    r.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="which split of the dataset (test: Fashion-MNIST's test images; default: train)",
    )
    r.add_argument("--n", type=_positive, help="use the first N points")
    r.add_argument("--data-dir", help="folder with Fashion-MNIST's files")
    r.add_argument(
        "--data",
        metavar="FILE",
        help="score or predict new points: .npz (X, y optional), .csv (features, then y "
        "optionally), svmlight (.svm, .svmlight, .libsvm); the model's preprocessing applies",
    )
    r.add_argument(
        "--save",
        metavar="FILE.npz",
        help="write the outputs and predictions (arrays 'outputs', 'predictions'); never "
        "over a run's own files",
    )
    r.set_defaults(func=cmd_predict)

    d = sub.add_parser(
        "demo",
        help="the quick-start job: 10 full-batch GD steps of the auto engine (certified at "
        "this size) and of the dense engine, on Fashion-MNIST if installed, else digits",
    )
    d.add_argument("--out", default="runs/demo", help="folder for both runs")
    d.add_argument("--steps", type=_positive, default=10, help="GD steps (default: 10)")
    d.add_argument("--width", type=_positive, default=1 << 16, help="neurons (default: 65536)")
    d.add_argument("--quiet", action="store_true", help="only the summary")
    d.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo's results in --out"
    )
    d.set_defaults(func=cmd_demo)

    h = sub.add_parser(
        "hardness",
        help="run the lower bound's reduction on a planted instance",
        description="Solve a planted Orthogonal Vectors instance through "
        "OV -> MBIP -> dynamic firing detection with both trees, and "
        "show how the work per weight update grows with n.",
    )
    h.add_argument("--n", type=_positive, default=512, help="vectors on each side (default 512)")
    h.add_argument("--d", type=_positive, default=20, help="dimension (default 20, ~ log n)")
    h.add_argument("--seed", type=int, default=0, help="instance seed (default: 0)")
    h.set_defaults(func=cmd_hardness)

    b = sub.add_parser(
        "bench",
        help="run a benchmark (no NAME: list them)",
        description="Run one benchmark; options after NAME go to it (NAME --help lists "
        "them). Every benchmark checks the engines it times against dense.",
    )
    b.add_argument("name", nargs="?", choices=sorted(BENCHMARKS), metavar="NAME")
    b.add_argument("args", nargs=argparse.REMAINDER, help="options for the benchmark")
    b.set_defaults(func=cmd_bench)
    return p


def error_message(e: BaseException) -> str:
    """One line for any failure: the message, never an errno number or a bare key."""
    if isinstance(e, PathError):
        text = str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = describe_oserror(e, "use")
    elif isinstance(e, KeyError):
        text = f"missing entry {e.args[0]!r}" if e.args else "missing entry"
    elif isinstance(e, MemoryError) and not e.args:
        text = "out of memory"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


class _Stdout:
    """Standard output that a closed pipe (``corrtree train ... | head -1``) does not break:
    what is left to print is dropped and the command carries on to its end."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, self._stream.fileno())  # nothing left to flush at exit either
        self._stream = open(os.devnull, "w")

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Terminated(Exception):
    pass


_received: list[int] = []  # signals received while a command ran


def _on_signal(signum, frame):
    # Remembered as well as raised: a signal that lands inside a compiled kernel surfaces as
    # a SystemError without its cause.
    _received.append(signum)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every failure is one line ``corrtree: error: ...`` and exit 2
    (130 when interrupted, 143 when terminated). ``CORRTREE_DEBUG=1`` shows tracebacks."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    debug = os.environ.get("CORRTREE_DEBUG", "") not in ("", "0")
    _received.clear()
    try:
        old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        old = {}
    stdout, sys.stdout = sys.stdout, _Stdout(sys.stdout)
    try:
        with _progress.shown(not getattr(args, "quiet", False)):
            return args.func(args)
    except KeyboardInterrupt:
        print("corrtree: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("corrtree: terminated", file=sys.stderr)
        return 143
    except Exception as e:
        if _received:  # a signal that landed inside a compiled kernel
            term = _received[0] == signal.SIGTERM
            print(f"corrtree: {'terminated' if term else 'interrupted'}", file=sys.stderr)
            return 143 if term else 130
        if debug:
            raise
        known = isinstance(e, _ERRORS)
        prefix = "" if known else f"internal error ({type(e).__name__}): "
        print(f"corrtree: error: {prefix}{error_message(e)}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
        sys.stdout = stdout
        for signum, handler in old.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
