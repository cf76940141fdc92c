"""Full-batch GD, side by side in one process: the tight dense baselines (NumPy and PyTorch,
float32), the dense engine (float64: the reference) and corrtree's engines, from the same
initial weights.

Reference configuration (the default): Fashion-MNIST, first 2000 training images, unit norm,
d = 784, y = +1 for labels 0-4 and -1 otherwise, m = 2^17, b = sqrt(0.4 ln m), float32,
50 steps, lr 0.2. Every method's loss is checked against dense float64 at every step (relative
gap <= 1e-4), so a fast wrong method cannot post a number. Speed-ups are against the faster
of the two tight baselines, by the mean step over all steps (rebuilds included) and by the
wall time end to end (preprocessing included); the dense baselines' step cost does not change
from step to step, so with ``--ref-steps`` they run fewer steps and their mean is used.

    corrtree bench gd --out benchmarks/results/gd_m17.json
    corrtree bench gd --quick          # tiny sizes, seconds
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np

from corrtree.bench._common import (
    compile_certified,
    header,
    method_label,
    parse,
    parser,
    peak_rss_bytes,
    plan_methods,
    reset_peak_rss,
    save,
    step_summary,
)
from corrtree.bench._methods import BASELINES, make_method, method_threads
from corrtree.datasets import load_dataset
from corrtree.nets import ShiftedReLUNet, default_threshold, init_weights

TOLERANCE = 1e-4


def load(quick: bool):
    if quick:
        data = load_dataset("synthetic", n=300, d=32, seed=0)
        return "synthetic n=300 d=32", data.X, data.y
    data = load_dataset("fashion-mnist", n=2000, targets="binary")
    return "fashion-mnist first 2000, labels 0-4 -> +1", data.X, data.y


def run_method(name, X, y, W0, A0, dtype, steps, lr, threads=2):
    net = ShiftedReLUNet.from_weights(W0.astype(dtype), A0.astype(dtype))
    Xd = X.astype(dtype)
    Y = y.reshape(len(y), -1).astype(dtype)
    approximate = name.startswith("lsh-")
    reset_peak_rss()
    tracemalloc.start()
    with method_threads(name, threads):
        t0 = time.perf_counter()
        eng = make_method(name, net, Xd, Y)
        pre = time.perf_counter() - t0
        infos, true_pairs = [], []
        for _ in range(steps):
            if approximate:  # the exact firing count at these weights, outside the timing
                Z = Xd @ net.W.T
                true_pairs.append(int(np.count_nonzero(Z > net.dtype.type(net.threshold))))
            infos.append(eng.step(lr))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    secs = [sum(i.seconds.values()) for i in infos]
    out = {
        "method": method_label(name, dtype),
        "engine": name,
        "dtype": np.dtype(dtype).name,
        **step_summary(secs, pre),
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
    p.add_argument("--steps", type=int, default=50)
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
        default="dense64,numpy32,torch32,auto",
        help="comma-separated: dense64 (the reference, always run), numpy32 and torch32 (the "
        "tight baselines), dense32, corrtree engine names (float32) and engine names ending "
        "in 64 (float64)",
    )
    args = parse(p, argv)
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
    # Every method starts from the same float32 weights.
    W0, A0 = init_weights(X.shape[1], (0, width), seed=args.seed, dtype=np.float32)
    plan = plan_methods(args.methods, args.threads)
    results = []
    # Warm-up: compile every kernel on tiny problems so JIT time is never measured.
    small = X[:20]
    for name, dtype in plan:
        run_method(name, small, y[:20], W0[:64], A0[:64], dtype, 2, lr, args.threads)
    for dtype in {dt for name, dt in plan if name in ("auto", "certified")}:
        compile_certified(dtype, args.threads)
    for name, dtype in plan:
        print(f"running {name} ({np.dtype(dtype).name}) ...", file=sys.stderr, flush=True)
        steps = ref_steps if name == "dense" or name in BASELINES else args.steps
        results.append(run_method(name, X, y, W0, A0, dtype, steps, lr, args.threads))
    ref = np.array(results[0]["loss"])
    base = [r for r in results if r["engine"] in BASELINES]
    fast = min(base or results[:1], key=lambda r: r["mean_step_seconds"])
    for r in results:
        k = min(len(ref), len(r["loss"]))
        gap = np.abs(np.array(r["loss"][:k]) - ref[:k]) / np.abs(ref[:k])
        r["steps_checked"] = k
        r["max_relative_loss_gap"] = float(gap.max())
        r["exact_within_tolerance"] = bool(gap.max() <= TOLERANCE)
        r["baseline"] = fast["method"]
        r["speedup_mean_step"] = fast["mean_step_seconds"] / r["mean_step_seconds"]
        r["speedup_median_step"] = fast["median_step_seconds"] / r["median_step_seconds"]
        # end to end over --steps: a baseline that ran fewer steps is extrapolated by its mean
        wall = fast["preprocess_seconds"] + args.steps * fast["mean_step_seconds"]
        own = r["preprocess_seconds"] + args.steps * r["mean_step_seconds"]
        r["speedup_end_to_end"] = wall / own
        # the floor: the firing pairs' gradient work, pairs * d (the reference's last step)
        r["floor_madds"] = results[0]["fired_pairs"][-1] * X.shape[1]
    report = {
        **header("gd", args.threads),
        "data": desc,
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "m": width,
        "threshold": default_threshold(width),
        "steps": args.steps,
        "ref_steps": ref_steps,
        "lr": lr,
        "results": results,
    }
    print(
        f"\n{desc}: n={X.shape[0]} d={X.shape[1]} m=2^{args.m_log2} {args.steps} steps, "
        f"{args.threads} threads; speed-ups against {fast['method']}"
    )
    print(
        f"{'method':24s} {'pre s':>7s} {'mean s':>8s} {'median s':>9s} {'x mean':>7s} "
        f"{'x e2e':>6s} {'peak GB':>8s} {'recall':>7s} {'max loss gap':>13s} {'exact':>6s}"
    )
    for r in results:
        peak = r["peak_rss_bytes"] / 2**30 if r["peak_rss_bytes"] else float("nan")
        print(
            f"{r['method']:24s} {r['preprocess_seconds']:7.2f} {r['mean_step_seconds']:8.4f} "
            f"{r['median_step_seconds']:9.4f} {r['speedup_mean_step']:7.2f} "
            f"{r['speedup_end_to_end']:6.2f} {peak:8.2f} {r.get('mean_recall', 1.0):7.3f} "
            f"{r['max_relative_loss_gap']:13.2e} "
            f"{'yes' if r['exact_within_tolerance'] else 'NO':>6s}"
        )
    return save(report, args.out)


if __name__ == "__main__":
    main()
