"""A real training run, end to end: E epochs of SGD on all 60000 Fashion-MNIST training
images, test accuracy on the 10000 test images after each epoch, for corrtree (``auto``) and
the tight dense PyTorch step (NumPy when PyTorch is absent) with the same initial weights and
the same batches.

Reference configuration (the default): unit norm, one-hot 10 outputs, m = 2^16,
b = sqrt(0.4 ln m), batch 256, float32, lr = 400 / 256, 10 epochs. corrtree's wall time is
measured over the whole run: preprocessing, every step (rebuilds included). Test accuracy is
computed between epochs, outside the timing, for both. The dense step's cost does not change
from step to step, so the dense side runs its first ``--dense-epochs`` epochs for real (its
own accuracy after each) and its later epochs are extrapolated from its mean step; the table
marks them. Exactness: after the epochs both ran, corrtree's weights are compared with the
dense run's (float32: near-threshold pairs fire in one summation order and not another, so
the two drift apart by rounding; ``corrtree bench sgd`` proves exactness in float64).

    corrtree bench epochs --out benchmarks/results/epochs_m16.json
    corrtree bench epochs --quick          # tiny sizes, seconds
"""

from __future__ import annotations

import sys
import time

import numpy as np

from corrtree.bench._common import (
    compile_certified,
    header,
    parse,
    parser,
    peak_rss_bytes,
    reference_lr,
    reset_peak_rss,
    save,
)
from corrtree.bench._methods import make_method, method_threads
from corrtree.datasets import load_dataset
from corrtree.engines.certified import CertifiedEngine
from corrtree.nets import ShiftedReLUNet, default_threshold, init_weights
from corrtree.training import auto_lr, batch_schedule


def accuracy(net, X, labels) -> float:
    return float(np.mean(net.outputs(X).argmax(axis=1) == labels))


def run(method, X, Y, Xt, lt, W0, A0, batches, per_epoch, epochs, lr, threads, log, options=None):
    """Train ``method`` for ``epochs`` epochs (``options``: its engine's); per epoch:
    seconds (preprocessing in the first), test accuracy."""
    net = ShiftedReLUNet.from_weights(W0.copy(), A0.copy())
    reset_peak_rss()
    out = {"epoch_seconds": [], "test_accuracy": [], "step_seconds": []}
    with method_threads(method, threads):
        t0 = time.perf_counter()
        m = make_method(method, net, X, Y, options)
        out["preprocess_seconds"] = time.perf_counter() - t0
        out["engine"] = getattr(m, "name", method)
        for e in range(epochs):
            t0 = time.perf_counter()
            for rows in batches[e * per_epoch : (e + 1) * per_epoch]:
                s = time.perf_counter()
                m.step(lr, rows)
                out["step_seconds"].append(time.perf_counter() - s)
            secs = time.perf_counter() - t0
            out["epoch_seconds"].append(secs + (out["preprocess_seconds"] if e == 0 else 0.0))
            out["test_accuracy"].append(accuracy(net, Xt, lt))
            log(
                f"  {method}: epoch {e + 1}/{epochs}: {out['epoch_seconds'][-1]:.1f} s, "
                f"test accuracy {out['test_accuracy'][-1]:.4f}"
            )
    out["stats"] = {k: int(v) for k, v in m.stats().items()}
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out, net.W


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--m-log2", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dense-epochs", type=int, default=2, help="epochs the dense side runs")
    p.add_argument("--lr", type=float, default=None, help="default 400 / batch")
    p.add_argument("--target", type=float, default=0.85, help="test accuracy to time")
    p.add_argument(
        "--engine-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of corrtree's engine, e.g. lazy=true (repeatable; the run then uses "
        "certified, which auto picks at the reference sizes)",
    )
    args = parse(p, argv)
    try:
        options = CertifiedEngine.parse_options(args.engine_opt) or None
    except (TypeError, ValueError) as e:
        p.error(str(e))
    if min(args.batch, args.epochs, args.threads, args.dense_epochs) < 1:
        p.error("--batch, --epochs, --dense-epochs and --threads must be >= 1")
    log = (lambda *a: None) if args.quick else (lambda s: print(s, file=sys.stderr, flush=True))
    if args.quick:
        train = load_dataset("digits")
        cut = 1400
        X, labels, Xt, lt = train.X[:cut], train.labels[:cut], train.X[cut:], train.labels[cut:]
        desc, args.m_log2, args.batch = "digits (1400 train, 397 test)", 10, 100
        args.epochs = args.dense_epochs = 2
    else:
        train = load_dataset("fashion-mnist")
        test = load_dataset("fashion-mnist", split="test")
        X, labels, Xt, lt = train.X, train.labels, test.X, test.labels
        desc = "fashion-mnist 60000 train / 10000 test, one-hot 10 outputs"
    C = int(labels.max()) + 1
    Y = np.zeros((labels.size, C), dtype=np.float32)
    Y[np.arange(labels.size), labels] = 1
    X, Xt = X.astype(np.float32), Xt.astype(np.float32)
    n, width = X.shape[0], 1 << args.m_log2
    if args.lr is not None:
        lr = args.lr
    elif args.quick:  # digits at m = 2^10: the library's default, which is stable there
        lr = auto_lr(n, args.batch, default_threshold(width))
    else:
        lr = reference_lr(args.batch)
    per_epoch = -(-n // args.batch)
    batches = list(batch_schedule(n, args.batch, args.epochs * per_epoch, args.seed))
    W0, A0 = init_weights(X.shape[1], (0, width), n_outputs=C, seed=args.seed, dtype=np.float32)
    dense_name = "torch-tight"
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        dense_name = "numpy-tight"
    dense_epochs = min(args.dense_epochs, args.epochs)
    # compile and warm up both sides on a few rows
    small = [np.arange(16, dtype=np.int64)] * 2
    for name in ("auto", dense_name):
        run(
            name,
            X[:64],
            Y[:64],
            Xt[:8],
            lt[:8],
            W0[:64],
            A0[:64],
            small,
            2,
            1,
            lr,
            args.threads,
            lambda s: None,
        )
    compile_certified(np.float32, args.threads)
    ours_name = "certified" if options else "auto"
    log(f"corrtree ({ours_name}), {args.epochs} epochs ...")
    ours, W_ours = run(
        ours_name,
        X,
        Y,
        Xt,
        lt,
        W0,
        A0,
        batches,
        per_epoch,
        args.epochs,
        lr,
        args.threads,
        log,
        options,
    )
    log(f"dense ({dense_name}), {dense_epochs} epochs ...")
    dense, W_dense = run(
        dense_name, X, Y, Xt, lt, W0, A0, batches, per_epoch, dense_epochs, lr, args.threads, log
    )
    mean_dense = float(np.mean(dense["step_seconds"]))
    extra = args.epochs - dense_epochs
    dense["epoch_seconds_extrapolated"] = [per_epoch * mean_dense] * extra
    dense["mean_step_seconds"] = mean_dense
    ours["mean_step_seconds"] = float(np.mean(ours["step_seconds"]))
    ours["median_step_seconds"] = float(np.median(ours["step_seconds"]))
    dense["median_step_seconds"] = float(np.median(dense["step_seconds"]))
    total_ours = float(np.sum(ours["epoch_seconds"]))
    total_dense = float(
        np.sum(dense["epoch_seconds"]) + np.sum(dense["epoch_seconds_extrapolated"])
    )

    def time_to(target, epoch_seconds, acc):
        wall = np.cumsum(epoch_seconds)
        hit = [k for k, a in enumerate(acc) if a >= target]
        return (float(wall[hit[0]]), hit[0] + 1) if hit else (None, None)

    t_ours, e_ours = time_to(args.target, ours["epoch_seconds"], ours["test_accuracy"])
    t_dense, e_dense = time_to(args.target, dense["epoch_seconds"], dense["test_accuracy"])
    # Both ran all epochs (--dense-epochs >= --epochs): the same batches, so the same weights
    # up to float32 rounding of near-threshold pairs.
    w_err = None
    if dense_epochs == args.epochs:
        w_err = float(np.linalg.norm(W_ours - W_dense) / np.linalg.norm(W_dense))
    report = {
        **header("epochs", args.threads),
        "data": desc,
        "n": int(n),
        "d": int(X.shape[1]),
        "m": width,
        "batch": args.batch,
        "epochs": args.epochs,
        "dense_epochs_run": dense_epochs,
        "steps_per_epoch": per_epoch,
        "lr": lr,
        "engine_options": options or {},
        "target_accuracy": args.target,
        "corrtree": ours,
        "dense": {**dense, "method": dense_name},
        "total_seconds": {"corrtree": total_ours, "dense": total_dense},
        "speedup_end_to_end": total_dense / total_ours,
        "speedup_mean_step": mean_dense / ours["mean_step_seconds"],
        "time_to_target": {
            "corrtree": t_ours,
            "dense": t_dense,
            "epochs_corrtree": e_ours,
            "epochs_dense": e_dense,
        },
        "speedup_time_to_target": (t_dense / t_ours) if t_ours and t_dense else None,
        "weight_relative_error": w_err,
        "slowest_epoch_after_first_over_first": float(
            max(ours["epoch_seconds"][1:], default=0.0) / ours["epoch_seconds"][0]
        ),
    }
    print(
        f"\n{desc}: m=2^{args.m_log2}, batch {args.batch}, {per_epoch} steps per epoch, "
        f"{args.epochs} epochs, {args.threads} threads; dense = {dense_name}"
    )
    print(f"{'epoch':>5s} {'corrtree s':>11s} {'acc':>7s} {'dense s':>9s} {'acc':>7s}")
    for e in range(args.epochs):
        if e < dense_epochs:
            ds, da = f"{dense['epoch_seconds'][e]:9.1f}", f"{dense['test_accuracy'][e]:7.4f}"
        else:
            ds, da = f"{dense['epoch_seconds_extrapolated'][e - dense_epochs]:8.1f}*", "      -"
        print(
            f"{e + 1:5d} {ours['epoch_seconds'][e]:11.1f} {ours['test_accuracy'][e]:7.4f} {ds} {da}"
        )
    print(
        f"total: corrtree {total_ours:.1f} s (preprocessing {ours['preprocess_seconds']:.1f} s), "
        f"dense {total_dense:.1f} s -> {report['speedup_end_to_end']:.2f}x end to end; mean "
        f"step {ours['mean_step_seconds']:.4f} vs {mean_dense:.4f} s "
        f"({report['speedup_mean_step']:.2f}x); * extrapolated from the dense mean step"
    )
    if report["speedup_time_to_target"]:
        print(
            f"time to {args.target:.0%} test accuracy: corrtree {t_ours:.1f} s (epoch {e_ours}),"
            f" dense {t_dense:.1f} s (epoch {e_dense}) -> {report['speedup_time_to_target']:.2f}x"
        )
    return save(report, args.out)


if __name__ == "__main__":
    main()
