"""Two option sets of the certified engine in one process, interleaved step by step from the
same weights on the same batches: an option's cost or gain with the machine's noise shared by
both sides (separate runs on this machine differ by 10-15%).

    python benchmarks/ab_options.py --a index_bf16=false --b index_bf16=true \\
        --epochs 3 --out benchmarks/results/ab_index_bf16.json

SGD on all 60000 Fashion-MNIST images, one-hot 10 outputs, batch 256, lr = 400 / 256,
float32, as ``corrtree bench epochs``; with ``--gd``, ``--steps`` full-batch steps in the
configuration of ``corrtree bench gd`` (first 2000 images, binary labels, lr 0.2). The two
index builds run one after the other, then every step runs on side A and then on side B.
Each side's loss is checked against the other's at every step (float32: equal up to rounding
of near-threshold pairs).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import corrtree as ct
from corrtree.bench._common import compile_certified, header, reference_lr, save
from corrtree.bench.gd import load as load_gd
from corrtree.datasets import load_dataset
from corrtree.engines import make_engine
from corrtree.engines.certified import CertifiedEngine
from corrtree.nets import init_weights
from corrtree.training import batch_schedule, take_step, thread_limit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--b", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--gd", action="store_true", help="full-batch GD instead of SGD epochs")
    p.add_argument("--m-log2", type=int, default=None, help="default 16 (SGD), 17 (GD)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="GD steps")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    options = {
        "a": CertifiedEngine.parse_options(args.a),
        "b": CertifiedEngine.parse_options(args.b),
    }
    if args.m_log2 is None:
        args.m_log2 = 17 if args.gd else 16
    if args.gd:
        _, X, y = load_gd(False)
        X = X.astype(np.float32)
        Y = y.reshape(len(y), -1).astype(np.float32)
        per_epoch, batches, lr = args.steps, [None] * args.steps, 0.2
    else:
        train = load_dataset("fashion-mnist")  # y: one-hot over the 10 classes
        X, Y = train.X.astype(np.float32), train.y.astype(np.float32)
        per_epoch = -(-X.shape[0] // args.batch)
        batches = list(batch_schedule(X.shape[0], args.batch, args.epochs * per_epoch, args.seed))
        lr = reference_lr(args.batch)
    m = 1 << args.m_log2
    W0, A0 = init_weights(
        X.shape[1], (0, m), n_outputs=Y.shape[1], seed=args.seed, dtype=np.float32
    )
    compile_certified(np.float32, args.threads)
    out = {side: {"options": options[side], "step_seconds": []} for side in "ab"}
    engines = {}
    with thread_limit(args.threads):
        for side in "ab":
            net = ct.ShiftedReLUNet.from_weights(W0.copy(), A0.copy())
            t = time.perf_counter()
            engines[side] = make_engine("certified", net, X, options[side])
            out[side]["build_seconds"] = time.perf_counter() - t
            print(f"{side}: build {out[side]['build_seconds']:.1f} s", file=sys.stderr)
        gap = 0.0
        for k, rows in enumerate(batches):
            loss = {}
            for side in "ab":
                t = time.perf_counter()
                loss[side] = take_step(engines[side], Y, lr, rows).loss
                out[side]["step_seconds"].append(time.perf_counter() - t)
            gap = max(gap, abs(loss["a"] - loss["b"]) / max(abs(loss["b"]), 1e-30))
            if (k + 1) % per_epoch == 0:
                e = (k + 1) // per_epoch
                s = {side: sum(out[side]["step_seconds"][-per_epoch:]) for side in "ab"}
                print(f"epoch {e}: a {s['a']:.1f} s, b {s['b']:.1f} s", file=sys.stderr)
    for side in "ab":
        steps = np.array(out[side]["step_seconds"])
        out[side].update(
            mean_step_seconds=float(steps.mean()),
            median_step_seconds=float(np.median(steps)),
            total_seconds=float(out[side]["build_seconds"] + steps.sum()),
            stats={k: int(v) for k, v in engines[side].stats().items()},
        )
        print(
            f"{side} {options[side]}: build {out[side]['build_seconds']:.1f} s, mean step "
            f"{steps.mean() * 1e3:.1f} ms (median {np.median(steps) * 1e3:.1f}), total "
            f"{out[side]['total_seconds']:.1f} s"
        )
    print(f"largest relative loss gap between the sides: {gap:.1e}")
    report = {
        **header("ab_options", args.threads),
        "config": "GD" if args.gd else "SGD",
        "m": m,
        **({"steps": args.steps} if args.gd else {"epochs": args.epochs, "batch": args.batch}),
        "max_relative_loss_gap": gap,
        **out,
    }
    if args.out:
        save(report, args.out)


if __name__ == "__main__":
    main()
