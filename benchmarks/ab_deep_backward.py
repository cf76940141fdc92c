"""The deep engine's back-propagation and update of layers 2..L: one pass over each unit's
weight row (``backprop_update``, the engine's) against the two passes it replaced (errors,
then update), in one process, interleaved step by step from the same weights on the same
batches.

    python benchmarks/ab_deep_backward.py --widths 16384,16384 --steps 200 \\
        --out benchmarks/results/ab_deep_backward_m14.json

SGD on all 60000 Fashion-MNIST images, one-hot 10 outputs, batch 256, float32, lr as
``corrtree bench deep``; layer 1 found by ``auto``. The first 20 steps are left out of the
means (compilation, first visits). Both sides do the same arithmetic in the same order: the
weights must end bit-identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit, prange

from corrtree._kernels import deep as K
from corrtree.bench._common import header, save
from corrtree.datasets import load_dataset
from corrtree.nets import ShiftedReLUMLP, default_threshold
from corrtree.training import auto_lr, batch_schedule, thread_limit
from corrtree.training.deep import DeepEngine


@njit(parallel=True, nogil=True, cache=True)
def _errors(col_ptr, rows, Wt, dptr, didx, dval, out):
    for k in prange(Wt.shape[0]):
        w = Wt[k]
        for q in range(col_ptr[k], col_ptr[k + 1]):
            i = rows[q]
            s = 0.0
            for p in range(dptr[i], dptr[i + 1]):
                s += w[didx[p]] * dval[p]
            out[q] = s


@njit(parallel=True, nogil=True, cache=True)
def _update(col_ptr, rows, vals, b, Wt, dptr, didx, dval, lr):
    for k in prange(Wt.shape[0]):
        w = Wt[k]
        for q in range(col_ptr[k], col_ptr[k + 1]):
            c = lr * (vals[q] - b)
            i = rows[q]
            for p in range(dptr[i], dptr[i + 1]):
                w[didx[p]] -= c * dval[p]


def two_passes(col_ptr, rows, vals, b, Wt, dptr, didx, dval, lr, out):
    _errors(col_ptr, rows, Wt, dptr, didx, dval, out)
    _update(col_ptr, rows, vals, b, Wt, dptr, didx, dval, lr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="16384,16384")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(","))
    train = load_dataset("fashion-mnist")
    X = train.X.astype(np.float32)
    Y = np.zeros((X.shape[0], 10), dtype=np.float32)
    Y[np.arange(X.shape[0]), train.labels] = 1
    lr = auto_lr(X.shape[0], 256, default_threshold(widths[0]), len(widths))
    sides = {"two_passes": two_passes, "one_pass": K.backprop_update}
    nets = {
        s: ShiftedReLUMLP(X.shape[1], widths, n_outputs=10, seed=0, dtype=np.float32) for s in sides
    }
    out = {s: {"step_seconds": [], "backward_seconds": []} for s in sides}
    fused = K.backprop_update
    try:
        with thread_limit(args.threads):
            engines = {s: DeepEngine(nets[s], X) for s in sides}
            for rows in batch_schedule(X.shape[0], 256, args.steps, seed=0):
                for s, kernel in sides.items():
                    K.backprop_update = kernel
                    t = time.perf_counter()
                    info = engines[s].step(Y, lr, rows)
                    out[s]["step_seconds"].append(time.perf_counter() - t)
                    out[s]["backward_seconds"].append(info.seconds["backward"])
    finally:
        K.backprop_update = fused
    for s in sides:
        steps, back = (np.array(out[s][k][20:]) for k in ("step_seconds", "backward_seconds"))
        out[s].update(
            mean_step_seconds=float(steps.mean()),
            median_step_seconds=float(np.median(steps)),
            mean_backward_seconds=float(back.mean()),
        )
        print(
            f"{s}: mean step {steps.mean() * 1e3:.1f} ms (median {np.median(steps) * 1e3:.1f}), "
            f"backward {back.mean() * 1e3:.1f} ms"
        )
    a, b = (nets[s] for s in sides)
    identical = all(
        np.array_equal(a.weights(layer), b.weights(layer)) for layer in range(1, len(widths) + 1)
    )
    print(f"weights bit-identical: {identical}")
    report = {
        **header("ab_deep_backward", args.threads),
        "widths": widths,
        "steps": args.steps,
        "weights_identical": identical,
        **out,
    }
    save(report, args.out)


if __name__ == "__main__":
    main()
