"""Mini-batch SGD, side by side in one process: dense PyTorch (float32, if installed), dense
NumPy (float32, and float64 as the reference) and corrtree's engines, same initial weights and
the same batches.

Reference configuration (the default): all 60000 Fashion-MNIST training images, unit norm,
d = 784, y = +1 for labels 0-4 and -1 otherwise, m = 2^16, b = sqrt(0.4 ln m), batch 256,
float32, one epoch (235 steps), lr = 400 / 256. After the epoch every method's weights are
compared with dense SGD's in its own precision (NumPy float32 for the float32 methods; both
always run), relative Frobenius error <= 1e-4, so a fast wrong method cannot post a number.
In float32 that bar is out of reach for any implementation at this step size: a product
within float32 rounding of b fires in one summation order and not in another, the step's
gradients then differ by a whole pair, and the trajectories drift apart (PyTorch and NumPy
dense float32 SGD end about 2e-4 apart; the report's ``dense_float32_spread``). Exactness is
therefore shown in float64 (``certified64`` against dense float64, same batches), and the
float32 rows are read against that spread. The distance to dense float64 is reported too.
Peak memory is the process's resident high-water mark while the method ran (reset before
each method).

    corrtree bench sgd --out benchmarks/results/sgd_m16.json
    corrtree bench sgd --quick          # tiny sizes, seconds
"""

from __future__ import annotations

import sys
import time

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
from corrtree.bench.gd import TorchDense
from corrtree.datasets import load_dataset
from corrtree.engines import make_engine
from corrtree.train import auto_lr, batch_schedule, thread_limit

TOLERANCE = 1e-4


def run_method(name, X, Y, width, dtype, batches, lr, seed, W0, progress):
    net = ct.ShiftedReLUNet(X.shape[1], width, seed=seed, dtype=dtype)
    net.W = W0.astype(dtype)
    Xd, Yd = X.astype(dtype), Y.astype(dtype)
    reset_peak_rss()
    t0 = time.perf_counter()
    eng = TorchDense(net, Xd, Yd) if name == "torch-dense" else make_engine(name, net, Xd, Yd)
    pre = time.perf_counter() - t0
    infos = []
    for t, rows in enumerate(batches):
        infos.append(eng.step(lr, rows))
        if progress and (t + 1) % 50 == 0:
            print(f"  {name}: step {t + 1}/{len(batches)}", file=sys.stderr, flush=True)
    peak = peak_rss_bytes()
    secs = [sum(i.seconds.values()) for i in infos]
    return {
        "method": method_label(name, dtype),
        "engine": name,
        "dtype": np.dtype(dtype).name,
        "preprocess_seconds": pre,
        "median_step_seconds": float(np.median(secs[1:] if len(secs) > 1 else secs)),
        "total_step_seconds": float(np.sum(secs)),
        "phase_seconds": {
            p: float(np.median([i.seconds[p] for i in infos[1:] or infos]))
            for p in infos[0].seconds
        },
        "loss": [i.loss for i in infos],
        "fired_pairs": [i.fired_pairs for i in infos],
        "changed_neurons": [i.changed_neurons for i in infos],
        "peak_rss_bytes": peak,
        "structure_bytes": int(getattr(eng, "nbytes", 0)),
        "stats": {k: int(v) for k, v in eng.stats().items()},
    }, net.W.astype(np.float64)


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--n", type=int, default=60000, help="training images (default all 60000)")
    p.add_argument("--m-log2", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="default 400 / batch")
    p.add_argument(
        "--methods",
        default="dense64,torch32,dense32,certified,certified64",
        help="comma-separated: dense64 (the reference, always run), dense32, torch32, "
        "corrtree engine names (float32) and engine names ending in 64 (float64)",
    )
    args = p.parse_args(argv)
    if min(args.n, args.batch, args.epochs, args.threads) < 1:
        p.error("--n, --batch, --epochs and --threads must be >= 1")
    if args.quick:
        data = load_dataset("synthetic", n=500, d=32, seed=0)
        desc, args.m_log2, args.batch = "synthetic n=500 d=32", min(args.m_log2, 12), 64
    else:
        data = load_dataset("fashion-mnist", n=args.n, targets="binary")
        desc = f"fashion-mnist first {args.n}, labels 0-4 -> +1"
    X, Y = data.X, data.y.reshape(data.n, -1)
    width = 1 << args.m_log2
    lr = args.lr if args.lr is not None else auto_lr(data.n, args.batch)
    per_epoch = -(-data.n // args.batch)
    batches = list(batch_schedule(data.n, args.batch, args.epochs * per_epoch, args.seed))
    W0 = ct.ShiftedReLUNet(X.shape[1], width, seed=args.seed).W.astype(np.float32)
    plan = plan_methods("dense32," + args.methods, args.threads)
    results = []
    with thread_limit(args.threads):
        small = [np.arange(10, dtype=np.int64)] * 2  # compile every kernel first
        for name, dtype in plan:
            if name != "torch-dense":
                run_method(name, X[:20], Y[:20], 64, dtype, small, lr, args.seed, W0[:64], False)
        refs = {}  # final weights of dense SGD per dtype
        for name, dtype in plan:
            print(f"running {name} ({np.dtype(dtype).name}) ...", file=sys.stderr, flush=True)
            r, W = run_method(name, X, Y, width, dtype, batches, lr, args.seed, W0, not args.quick)
            if name == "dense":
                refs[r["dtype"]] = (W, r["loss"])
            for key, (Wr, _) in refs.items():
                r[f"weight_relative_error_vs_dense_{key}"] = float(
                    np.linalg.norm(W - Wr) / np.linalg.norm(Wr)
                )
            Wr, loss_ref = refs[r["dtype"]]
            r["weight_relative_error"] = float(np.linalg.norm(W - Wr) / np.linalg.norm(Wr))
            r["weight_max_abs_error"] = float(np.abs(W - Wr).max())
            gap = np.abs(np.array(r["loss"]) - loss_ref) / np.maximum(np.abs(loss_ref), 1e-12)
            r["max_relative_loss_gap"] = float(gap.max())
            r["exact_within_tolerance"] = bool(r["weight_relative_error"] <= TOLERANCE)
            results.append(r)
            del W
    dense32 = [
        r for r in results if r["engine"] in ("dense", "torch-dense") and r["dtype"] == "float32"
    ]
    torch32 = [r for r in results if r["engine"] == "torch-dense"]
    for r in results:
        if dense32:
            best = min(x["median_step_seconds"] for x in dense32)
            r["speedup_vs_fastest_dense32"] = best / r["median_step_seconds"]
        if torch32:
            r["speedup_vs_torch32"] = torch32[0]["median_step_seconds"] / r["median_step_seconds"]
        r["floor_madds_median"] = float(np.median(r["fired_pairs"])) * X.shape[1]
    report = {
        **header("sgd", args.threads),
        "data": desc,
        "n": int(data.n),
        "d": int(X.shape[1]),
        "m": width,
        "threshold": ct.default_threshold(width),
        "batch": args.batch,
        "steps": len(batches),
        "lr": lr,
        "results": results,
        # How far apart two dense float32 implementations end (PyTorch against NumPy): the
        # scale of float32 rounding over the run, to read the float32 rows against.
        "dense_float32_spread": (torch32[0]["weight_relative_error"] if torch32 else None),
    }
    print(
        f"\n{desc}: n={data.n} d={X.shape[1]} m=2^{args.m_log2} batch {args.batch}, "
        f"{len(batches)} steps, {args.threads} threads"
    )
    print(
        f"{'method':22s} {'pre s':>8s} {'s/step':>9s} {'x torch32':>10s} {'peak GB':>8s} "
        f"{'W err (own dtype)':>17s} {'W err vs f64':>13s} {'exact':>6s}"
    )
    for r in results:
        peak = r["peak_rss_bytes"] / 2**30 if r["peak_rss_bytes"] else float("nan")
        print(
            f"{r['method']:22s} {r['preprocess_seconds']:8.2f} {r['median_step_seconds']:9.4f} "
            f"{r.get('speedup_vs_torch32', float('nan')):10.2f} {peak:8.2f} "
            f"{r['weight_relative_error']:17.2e} "
            f"{r['weight_relative_error_vs_dense_float64']:13.2e} "
            f"{'yes' if r['exact_within_tolerance'] else 'NO':>6s}"
        )
    if args.out:
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
