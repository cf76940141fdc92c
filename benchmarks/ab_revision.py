"""The working tree's engine against the same engine at an older git revision, in one process,
interleaved step by step from the same weights on the same batches: a change's speed cost or
gain with machine noise shared by both sides.

    python benchmarks/ab_revision.py --rev 351186e --out benchmarks/results/ab_protocol.json

The old revision's package is extracted (``git archive``) into a temporary folder as
``corrtree_old`` and driven through its own API (``eng.step``); the new one through
``take_step``. Configurations: full-batch GD on the first 2000 Fashion-MNIST images at
m = 2^17, and SGD with batches of 256 over all 60000 at m = 2^16 (both float32, binary
targets, unit norm). Each side's loss is checked against the other's at every step.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import corrtree as ct
from corrtree import _io
from corrtree.bench._common import header
from corrtree.datasets import load_dataset
from corrtree.engines import make_engine
from corrtree.nets import init_weights
from corrtree.training import batch_schedule, take_step, thread_limit


def old_package(rev: str, folder: str):
    root = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
    archive = subprocess.check_output(["git", "-C", root, "archive", rev, "corrtree"])
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    os.rename(os.path.join(folder, "corrtree"), os.path.join(folder, "corrtree_old"))
    sys.path.insert(0, folder)
    return importlib.import_module("corrtree_old")


def compare(old, engine, X, Y, W0, A0, batches, lr, threads=2):
    new_net = ct.ShiftedReLUNet.from_weights(W0.copy(), A0.copy())
    old_net = old.ShiftedReLUNet(X.shape[1], W0.shape[0], seed=0, dtype=np.float32)
    old_net.W, old_net._A = W0.copy(), A0.copy()
    t0 = time.perf_counter()
    new = make_engine(engine, new_net, X)
    pre_new = time.perf_counter() - t0
    t0 = time.perf_counter()
    old_train = importlib.import_module("corrtree_old.train")
    from corrtree_old.engines import make_engine as old_make

    if hasattr(old_train, "take_step"):  # a revision with the step protocol
        old_net = old.ShiftedReLUNet.from_weights(W0.copy(), A0.copy())
        eng = old_make(engine, old_net, X)

        class Prev:
            def step(self, lr, rows):
                return old_train.take_step(eng, Y, lr, rows)

        prev = Prev()
    else:
        prev = old_make(engine, old_net, X, Y)
    pre_old = time.perf_counter() - t0
    if hasattr(old, "_blas"):  # both split products themselves: both contexts, once
        outer = (old_train.thread_limit(threads), thread_limit(threads))
        ctx_new = ctx_old = contextlib.nullcontext
    else:  # the old side runs multi-threaded BLAS: each side in its own context per step
        outer = ()
        ctx_new = lambda: thread_limit(threads)  # noqa: E731
        ctx_old = lambda: old_train.thread_limit(threads)  # noqa: E731
    with contextlib.ExitStack() as stack:
        for c in outer:
            stack.enter_context(c)
        return _interleave(new, prev, Y, batches, lr, ctx_new, ctx_old, engine, pre_new, pre_old)


def _interleave(new, prev, Y, batches, lr, ctx_new, ctx_old, engine, pre_new, pre_old):
    t_new, t_old, gap = [], [], 0.0
    for t, rows in enumerate(batches):
        sides = [("new", None), ("old", None)] if t % 2 == 0 else [("old", None), ("new", None)]
        for side, _ in sides:
            t0 = time.perf_counter()
            if side == "new":
                with ctx_new():
                    a = take_step(new, Y, lr, rows)
                t_new.append(time.perf_counter() - t0)
            else:
                with ctx_old():
                    b = prev.step(lr, rows)
                t_old.append(time.perf_counter() - t0)
        gap = max(gap, abs(a.loss - b.loss) / abs(b.loss))
    return {
        "engine": engine,
        "steps": len(batches),
        "preprocess_seconds": {"new": pre_new, "old": pre_old},
        "mean_step_seconds": {"new": float(np.mean(t_new)), "old": float(np.mean(t_old))},
        "median_step_seconds": {"new": float(np.median(t_new)), "old": float(np.median(t_old))},
        "new_over_old_mean": float(np.mean(t_new) / np.mean(t_old)),
        "max_relative_loss_gap": gap,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", required=True, help="the older git revision")
    p.add_argument("--engine", default="certified")
    p.add_argument("--gd-steps", type=int, default=20)
    p.add_argument("--sgd-steps", type=int, default=235)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        old = old_package(args.rev, folder)
        rows = []
        data = load_dataset("fashion-mnist", n=2000, targets="binary")
        X, Y = data.X.astype(np.float32), data.y.reshape(-1, 1).astype(np.float32)
        W0, A0 = init_weights(X.shape[1], (0, 1 << 17), seed=0, dtype=np.float32)
        small = [np.arange(8, dtype=np.int64)] * 2  # compile both sides' kernels first
        compare(old, args.engine, X[:64], Y[:64], W0[:64], A0[:64], small + [None], 0.2)
        print("GD m=2^17 ...", file=sys.stderr, flush=True)
        gd = compare(old, args.engine, X, Y, W0, A0, [None] * args.gd_steps, 0.2)
        rows.append({"config": "gd n=2000 m=2^17", **gd})
        del W0, A0
        data = load_dataset("fashion-mnist", targets="binary")
        X, Y = data.X.astype(np.float32), data.y.reshape(-1, 1).astype(np.float32)
        W0, A0 = init_weights(X.shape[1], (0, 1 << 16), seed=0, dtype=np.float32)
        batches = list(batch_schedule(data.n, 256, args.sgd_steps, seed=0))
        print("SGD m=2^16 ...", file=sys.stderr, flush=True)
        sgd = compare(old, args.engine, X, Y, W0, A0, batches, 400 / 256)
        rows.append({"config": "sgd n=60000 m=2^16 batch 256", **sgd})
    report = {**header("ab_revision", args.threads), "rev": args.rev, "results": rows}
    for r in rows:
        print(
            f"{r['config']:30s} {r['engine']}: mean step new {r['mean_step_seconds']['new']:.4f}"
            f" s, old {r['mean_step_seconds']['old']:.4f} s (new/old {r['new_over_old_mean']:.3f});"
            f" medians {r['median_step_seconds']['new']:.4f} / "
            f"{r['median_step_seconds']['old']:.4f}; loss gap {r['max_relative_loss_gap']:.1e}"
        )
    if args.out:
        _io.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
