"""Per-iteration cost as m grows: dense against the paper's tree algorithm (dtree, wtree) and
the ``certified`` engine, in two regimes of full-batch GD on Fashion-MNIST (unit norm, d = 784,
binary targets, float32, lr = 400 / n):

- small n (default 16 points), m = 2^10 .. 2^20: n * p < 1, so few neurons fire anywhere and
  few move; this is where the paper's bound O(m^(4/5) n^2 d) is o(nmd);
- n = 2000, m = 2^10 .. 2^15: about half the neurons move every step and each moved neuron
  costs the trees n * d, so their step is Theta(|U| n d), no better than dense's n m d.

Per configuration: preprocessing seconds, median seconds per step (steps after the first),
neurons changed and inner products per step, and the loss of every step checked against
dense float64 (relative 1e-4). The fitted exponent of m is reported per engine and regime.

    corrtree bench periter --out benchmarks/results/periter.json
"""

from __future__ import annotations

import time

import numpy as np

from corrtree import _io
from corrtree.bench._common import header, loglog_slope, parse, parser, reference_lr
from corrtree.datasets import load_dataset
from corrtree.engines import make_engine
from corrtree.nets import ShiftedReLUNet, init_weights
from corrtree.training import take_step, thread_limit

TOLERANCE = 1e-4
ENGINES = ("dense", "dtree", "wtree", "certified")


def measure(engine, X, Y, W0, A0, dtype, steps, lr):
    net = ShiftedReLUNet.from_weights(W0.astype(dtype), A0.astype(dtype))
    t0 = time.perf_counter()
    eng = make_engine(engine, net, X.astype(dtype))
    pre = time.perf_counter() - t0
    ip0 = eng.stats()["inner_products"]
    Y = Y.astype(dtype)
    infos = [take_step(eng, Y, lr) for _ in range(steps)]
    secs = [sum(i.seconds.values()) for i in infos]
    return {
        "engine": engine,
        "dtype": np.dtype(dtype).name,
        "preprocess_seconds": pre,
        "median_step_seconds": float(np.median(secs[1:])),
        "changed_neurons": float(np.mean([i.changed_neurons for i in infos])),
        "fired_pairs": float(np.mean([i.fired_pairs for i in infos])),
        "inner_products_per_step": (eng.stats()["inner_products"] - ip0) / steps,
        "loss": [i.loss for i in infos],
        "stats": {k: int(v) for k, v in eng.stats().items()},
    }


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--small-n", type=int, default=16)
    p.add_argument("--small-m-log2-max", type=int, default=20)
    p.add_argument("--big-n", type=int, default=2000)
    p.add_argument("--big-m-log2-max", type=int, default=15)
    args = parse(p, argv)
    if args.steps < 2:
        p.error(f"--steps must be >= 2, got {args.steps}")
    if args.quick:
        data = load_dataset("synthetic", n=64, d=16, seed=0)
        regimes = {"small-n": (4, range(8, 12)), "big-n": (64, range(8, 11))}
        args.steps = 3
    else:
        data = load_dataset("fashion-mnist", n=max(args.small_n, args.big_n), targets="binary")
        regimes = {
            "small-n": (args.small_n, range(10, args.small_m_log2_max + 1)),
            "big-n": (args.big_n, range(10, args.big_m_log2_max + 1)),
        }
    rows = []
    seed = args.seed
    with thread_limit(args.threads):
        for regime, (n, ks) in regimes.items():
            X, Y = data.X[:n], data.y[:n].reshape(n, -1)
            lr = reference_lr(n)
            for k in ks:
                W0, A0 = init_weights(X.shape[1], (0, 1 << k), seed=seed + k, dtype=np.float32)
                ref = measure("dense", X, Y, W0, A0, np.float64, args.steps, lr)["loss"]
                for engine in ENGINES:
                    r = measure(engine, X, Y, W0, A0, np.float32, args.steps, lr)
                    gap = np.max(np.abs(np.array(r["loss"]) - ref) / np.abs(ref))
                    r.update(regime=regime, n=n, m=1 << k, max_relative_loss_gap=float(gap))
                    r["exact_within_tolerance"] = bool(gap <= TOLERANCE)
                    rows.append(r)
                    print(
                        f"{regime:7s} n={n:5d} m=2^{k:<2d} {engine:9s} "
                        f"pre {r['preprocess_seconds']:7.3f} s  "
                        f"step {r['median_step_seconds']:8.4f} s  changed "
                        f"{r['changed_neurons']:9.1f}  products/step "
                        f"{r['inner_products_per_step']:12.3g}  gap {gap:.1e}",
                        flush=True,
                    )
                del W0
    exponents = {
        regime: {
            engine: {
                "step_seconds": loglog_slope(
                    [r["m"] for r in rows if r["regime"] == regime and r["engine"] == engine],
                    [
                        r["median_step_seconds"]
                        for r in rows
                        if r["regime"] == regime and r["engine"] == engine
                    ],
                ),
                "inner_products": loglog_slope(
                    [r["m"] for r in rows if r["regime"] == regime and r["engine"] == engine],
                    [
                        r["inner_products_per_step"]
                        for r in rows
                        if r["regime"] == regime and r["engine"] == engine
                    ],
                ),
            }
            for engine in ENGINES
        }
        for regime in regimes
    }
    for regime, per in exponents.items():
        print(
            f"{regime}: time per step ~ m^a with a = "
            + ", ".join(f"{e} {v['step_seconds']:.2f}" for e, v in per.items())
        )
    report = {
        **header("periter", args.threads),
        "regimes": {k: {"n": v[0], "m": [1 << j for j in v[1]]} for k, v in regimes.items()},
        "steps": args.steps,
        "rows": rows,
        "fitted_exponent_m": exponents,
        "all_exact": all(r["exact_within_tolerance"] for r in rows),
    }
    if args.out:
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report
