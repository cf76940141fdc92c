"""Full-batch GD, side by side in one process: dense NumPy (float32, float64), dense PyTorch
(float32, if installed) and corrtree's engines, from the same initial weights.

Reference configuration (the default): Fashion-MNIST, first 2000 training images, unit norm,
d = 784, y = +1 for labels 0-4 and -1 otherwise, m = 2^17, b = sqrt(0.4 ln m), float32,
20 steps, lr 0.2. Every method's loss is checked against dense float64 at every step (relative
gap <= 1e-4), so a fast wrong method cannot post a number.

    corrtree bench gd --out benchmarks/results/gd_m17.json
    corrtree bench gd --quick          # tiny sizes, seconds
"""

from __future__ import annotations

import math
import sys
import time
import tracemalloc

import numpy as np

import corrtree as ct
from corrtree import _io
from corrtree.bench._common import (
    header,
    method_label,
    parser,
    peak_rss_bytes,
    plan_methods,
    reset_peak_rss,
)
from corrtree.datasets import load_dataset
from corrtree.engines import make_engine
from corrtree.train import thread_limit

TOLERANCE = 1e-4


def load(quick: bool):
    if quick:
        data = load_dataset("synthetic", n=300, d=32, seed=0)
        return "synthetic n=300 d=32", data.X, data.y
    data = load_dataset("fashion-mnist", n=2000, targets="binary")
    return "fashion-mnist first 2000, labels 0-4 -> +1", data.X, data.y


class TorchDense:
    """Dense GD (or SGD on ``rows``) in PyTorch on the CPU: the same arithmetic as corrtree's
    dense engine."""

    name = "torch-dense"

    def __init__(self, net, X, Y):
        import torch

        self.torch = torch
        self.net = net
        self.W = torch.from_numpy(net.W)  # shares memory: net.W is updated in place
        self.A = torch.from_numpy(net._A)
        self.X = torch.from_numpy(X)
        self.Y = torch.from_numpy(Y)
        self.b = float(net.threshold)
        self.scale = 1.0 / math.sqrt(net.width)
        self.nbytes = 0

    def step(self, lr, rows=None):
        t0 = time.perf_counter()
        with self.torch.no_grad():
            if rows is None:
                X, Y = self.X, self.Y
            else:
                idx = self.torch.from_numpy(rows)
                X, Y = self.X[idx], self.Y[idx]
            Z = X @ self.W.T
            mask = Z > self.b
            H = (Z - self.b) * mask
            F = (H @ self.A) * self.scale
            E = F - Y
            loss = 0.5 * float((E.double() ** 2).sum())
            G = ((E @ self.A.T) * self.scale * mask).T @ X
            self.W -= lr * G
            pairs = int(mask.sum())
            changed = int(mask.any(dim=0).sum())
        secs = time.perf_counter() - t0
        return ct.engines.StepInfo(
            loss, pairs, changed, {"detect": secs, "forward": 0.0, "backward": 0.0, "maintain": 0.0}
        )

    def stats(self):
        return {}


def make_method(name, net, X, Y):
    """A baseline or engine by benchmark name: torch-dense, an engine name, or
    lsh-simhash / lsh-dwta (the approximate LSH engine with that hash family)."""
    if name == "torch-dense":
        return TorchDense(net, X, Y)
    if name.startswith("lsh-"):
        return make_engine("lsh", net, X, Y, hash=name[4:])
    return make_engine(name, net, X, Y)


def run_method(name, X, y, width, dtype, steps, lr, seed, W0):
    net = ct.ShiftedReLUNet(X.shape[1], width, seed=seed, dtype=dtype)
    net.W = W0.astype(dtype)
    Xd = X.astype(dtype)
    Y = y.reshape(len(y), -1).astype(dtype)
    approximate = name.startswith("lsh-")
    reset_peak_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    eng = make_method(name, net, Xd, Y)
    pre = time.perf_counter() - t0
    infos, true_pairs = [], []
    for _ in range(steps):
        if approximate:  # the exact firing count at these weights, outside the timing
            true_pairs.append(int(np.count_nonzero(Xd @ net.W.T > net.dtype.type(net.threshold))))
        infos.append(eng.step(lr))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    secs = [sum(i.seconds.values()) for i in infos]
    out = {
        "method": method_label(name, dtype),
        "engine": name,
        "dtype": np.dtype(dtype).name,
        "preprocess_seconds": pre,
        "step_seconds": secs,
        "median_step_seconds": float(np.median(secs[1:] if len(secs) > 1 else secs)),
        "mean_step_seconds": float(np.mean(secs)),
        "phase_seconds": {
            p: float(np.median([i.seconds[p] for i in infos[1:] or infos]))
            for p in infos[0].seconds
        },
        "loss": [i.loss for i in infos],
        "fired_pairs": [i.fired_pairs for i in infos],
        "changed_neurons": [i.changed_neurons for i in infos],
        "structure_bytes": int(getattr(eng, "nbytes", 0)),
        "tracemalloc_peak_bytes": int(peak),
        "peak_rss_bytes": peak_rss_bytes(),
        "stats": {k: int(v) for k, v in eng.stats().items()},
        "final_W_checksum": float(np.abs(net.W.astype(np.float64)).sum()),
    }
    if approximate:
        found = [i.fired_pairs for i in infos]
        out["recall"] = [f / t if t else 1.0 for f, t in zip(found, true_pairs, strict=True)]
        out["mean_recall"] = float(np.mean(out["recall"]))
    return out


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--m-log2", type=int, default=17)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--ref-steps",
        type=int,
        default=None,
        help="steps for the dense baselines (default --steps); at large m they are slow, and "
        "exactness is then checked on these first steps",
    )
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument(
        "--methods",
        default="dense64,dense32,torch32,certified,dtree",
        help="comma-separated: dense64 (the reference, always run), dense32, "
        "torch32, corrtree engine names (float32) and engine names ending in 64 (float64)",
    )
    args = p.parse_args(argv)
    if args.steps < 1 or args.threads < 1:
        p.error(f"--steps and --threads must be >= 1, got {args.steps} and {args.threads}")
    if args.quick:
        args.m_log2, args.steps = min(args.m_log2, 12), min(args.steps, 5)
    ref_steps = args.steps if args.ref_steps is None else min(args.ref_steps, args.steps)
    if ref_steps < 1:
        p.error(f"--ref-steps must be >= 1, got {ref_steps}")
    width = 1 << args.m_log2
    desc, X, y = load(args.quick)
    lr = args.lr if not args.quick else 1.0
    W0 = ct.ShiftedReLUNet(X.shape[1], width, seed=args.seed).W  # float64 draw, cast per run
    W0 = W0.astype(np.float32)  # every method starts from the same float32 weights
    plan = plan_methods(args.methods, args.threads)
    results = []
    with thread_limit(args.threads):
        # Warm-up: compile every kernel on a tiny problem so JIT time is never measured.
        small = X[:20]
        for name, dtype in plan:
            if name != "torch-dense":
                run_method(name, small, y[:20], 64, dtype, 2, lr, args.seed, W0[:64])
        for name, dtype in plan:
            print(f"running {name} ({np.dtype(dtype).name}) ...", file=sys.stderr, flush=True)
            steps = ref_steps if name in ("dense", "torch-dense") else args.steps
            results.append(run_method(name, X, y, width, dtype, steps, lr, args.seed, W0))
    ref = np.array(results[0]["loss"])
    dense_fast = (
        min(
            r["median_step_seconds"]
            for r in results
            if r["engine"] in ("dense", "torch-dense") and r["dtype"] == "float32"
        )
        if any(r["dtype"] == "float32" and r["engine"] in ("dense", "torch-dense") for r in results)
        else results[0]["median_step_seconds"]
    )
    for r in results:
        k = min(len(ref), len(r["loss"]))
        gap = np.abs(np.array(r["loss"][:k]) - ref[:k]) / np.abs(ref[:k])
        r["steps_checked"] = k
        r["max_relative_loss_gap"] = float(gap.max())
        r["exact_within_tolerance"] = bool(gap.max() <= TOLERANCE)
        r["speedup_vs_fastest_dense32"] = dense_fast / r["median_step_seconds"]
        floor = r["fired_pairs"][-1] * X.shape[1]
        r["floor_madds"] = floor
    report = {
        **header("gd", args.threads),
        "data": desc,
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "m": width,
        "threshold": ct.default_threshold(width),
        "steps": args.steps,
        "ref_steps": ref_steps,
        "lr": lr,
        "results": results,
    }
    print(
        f"\n{desc}: n={X.shape[0]} d={X.shape[1]} m=2^{args.m_log2} {args.steps} steps, "
        f"{args.threads} threads"
    )
    print(
        f"{'method':22s} {'pre s':>8s} {'s/step':>9s} {'x dense32':>10s} {'peak GB':>8s} "
        f"{'recall':>7s} {'final loss':>11s} {'max loss gap':>13s} {'exact':>6s}"
    )
    for r in results:
        peak = r["peak_rss_bytes"] / 2**30 if r["peak_rss_bytes"] else float("nan")
        print(
            f"{r['method']:22s} {r['preprocess_seconds']:8.2f} {r['median_step_seconds']:9.4f} "
            f"{r['speedup_vs_fastest_dense32']:10.2f} {peak:8.2f} "
            f"{r.get('mean_recall', 1.0):7.3f} {r['loss'][-1]:11.5g} "
            f"{r['max_relative_loss_gap']:13.2e} "
            f"{'yes' if r['exact_within_tolerance'] else 'NO':>6s}"
        )
    if args.out:
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
