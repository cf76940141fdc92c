"""How the advantage grows with the width: mini-batch SGD on Fashion-MNIST at m = 2^14 ..
2^20, corrtree (``auto``) against the tight dense PyTorch step (NumPy without PyTorch), in
one process, 2 threads, float32, one-hot 10 outputs, batch 256, lr 400 / 256.

At each width, both sides start from the same weights and take the same first
``--check-steps`` batches; their losses are compared at every one of those steps (relative gap
<= 1e-4), so a fast wrong engine cannot post a number. corrtree then continues to ``--steps``
steps; the dense step's cost does not change from step to step, so it is timed on the check
steps only. Reported per width: corrtree's preprocessing, mean step (rebuilds included) and
median, the dense mean step, their ratio, and the end-to-end ratio over one epoch of the
``--n`` points (preprocessing included).

    corrtree bench scaling --out benchmarks/results/scaling.json
    corrtree bench scaling --quick
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
    reference_lr,
    save,
)
from corrtree.bench._methods import make_method, method_threads
from corrtree.datasets import load_dataset
from corrtree.nets import ShiftedReLUNet, default_threshold, init_weights
from corrtree.training import auto_lr, batch_schedule

TOLERANCE = 1e-4


def timed_steps(method, net, X, Y, batches, lr, threads):
    with method_threads(method, threads):
        t0 = time.perf_counter()
        m = make_method(method, net, X, Y)
        pre = time.perf_counter() - t0
        secs, loss = [], []
        for rows in batches:
            s = time.perf_counter()
            info = m.step(lr, rows)
            secs.append(time.perf_counter() - s)
            loss.append(info.loss)
    return pre, secs, loss, getattr(m, "name", method)


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--n", type=int, default=10000, help="training images (default 10000)")
    p.add_argument("--m-log2", default="14,15,16,17,18,19,20")
    p.add_argument("--steps", type=int, default=60, help="corrtree steps per width")
    p.add_argument("--check-steps", type=int, default=6, help="steps both sides take")
    p.add_argument("--batch", type=int, default=256)
    args = parse(p, argv)
    widths = [int(k) for k in args.m_log2.split(",") if k]
    if args.quick:
        data = load_dataset("digits")
        widths, args.steps, args.check_steps, args.batch = [8, 10], 8, 3, 64
        desc = "digits"
    else:
        data = load_dataset("fashion-mnist", n=args.n)
        desc = f"fashion-mnist first {args.n}, one-hot 10 outputs"
    if args.check_steps < 1 or args.steps < args.check_steps:
        p.error("need 1 <= --check-steps <= --steps")
    X, Y = data.X.astype(np.float32), data.y.astype(np.float32)
    n = X.shape[0]
    lr = reference_lr(args.batch)
    if args.quick:  # digits at small m: the library's default step, stable there
        lr = auto_lr(n, args.batch, default_threshold(1 << widths[0]))
    batches = list(batch_schedule(n, args.batch, args.steps, args.seed))
    per_epoch = -(-n // args.batch)
    dense = "torch-tight"
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        dense = "numpy-tight"
    rows = []
    compile_certified(np.float32, args.threads)
    for k in widths:
        m = 1 << k
        W0, A0 = init_weights(
            X.shape[1], (0, m), n_outputs=Y.shape[1], seed=args.seed, dtype=np.float32
        )
        warm = [np.arange(8, dtype=np.int64)] * 2
        for name in ("auto", dense):  # compile and warm up on a few rows
            net = ShiftedReLUNet.from_weights(W0[:64].copy(), A0[:64].copy())
            timed_steps(name, net, X[:32], Y[:32], warm, lr, args.threads)
        print(f"m = 2^{k} ...", file=sys.stderr, flush=True)
        net = ShiftedReLUNet.from_weights(W0.copy(), A0.copy())
        pre, secs, loss, engine = timed_steps("auto", net, X, Y, batches, lr, args.threads)
        del net
        net = ShiftedReLUNet.from_weights(W0, A0)
        _, dsecs, dloss, _ = timed_steps(
            dense, net, X, Y, batches[: args.check_steps], lr, args.threads
        )
        del net, W0, A0
        gap = np.abs(np.subtract(loss[: args.check_steps], dloss)) / np.abs(dloss)
        mean, dmean = float(np.mean(secs)), float(np.mean(dsecs))
        rows.append(
            {
                "m": m,
                "engine": engine,
                "preprocess_seconds": pre,
                "mean_step_seconds": mean,
                "median_step_seconds": float(np.median(secs[1:])),
                "dense_mean_step_seconds": dmean,
                "speedup_mean_step": dmean / mean,
                "speedup_epoch_end_to_end": per_epoch * dmean / (pre + per_epoch * mean),
                "max_relative_loss_gap": float(gap.max()),
                "exact_within_tolerance": bool(gap.max() <= TOLERANCE),
            }
        )
    report = {
        **header("scaling", args.threads),
        "data": desc,
        "n": int(n),
        "batch": args.batch,
        "steps": args.steps,
        "check_steps": args.check_steps,
        "dense": dense,
        "lr": lr,
        "rows": rows,
        "all_exact": all(r["exact_within_tolerance"] for r in rows),
    }
    print(f"\n{desc}: n={n}, batch {args.batch}, {args.threads} threads; dense = {dense}")
    print(
        f"{'m':>9s} {'pre s':>7s} {'mean s':>8s} {'median s':>9s} {'dense s':>8s} "
        f"{'x step':>7s} {'x epoch e2e':>12s} {'exact':>6s}"
    )
    for r in rows:
        print(
            f"{r['m']:9d} {r['preprocess_seconds']:7.2f} {r['mean_step_seconds']:8.4f} "
            f"{r['median_step_seconds']:9.4f} {r['dense_mean_step_seconds']:8.4f} "
            f"{r['speedup_mean_step']:7.2f} {r['speedup_epoch_end_to_end']:12.2f} "
            f"{'yes' if r['exact_within_tolerance'] else 'NO':>6s}"
        )
    return save(report, args.out)


if __name__ == "__main__":
    main()
