"""Sparsity: how many neurons fire per data point, at init and during training.

At init, for m = 2^10 .. 2^20 with b = sqrt(0.4 ln m): the count per point, against the exact
expectation m * P(z > b) (z ~ N(0, 1) for unit-norm x and w ~ N(0, I)) and the paper's
O(m^(4/5)) bound. During training: full-batch GD with the ``certified`` engine, where every
step's firing pairs are recounted densely at checkpoints (the check against dense) and the
per-point counts k_{i,t} are compared with k_{i,0}.

Reference data: Fashion-MNIST, first 2000 training images, unit norm, binary targets.

    corrtree bench sparsity --out benchmarks/results/sparsity.json
"""

from __future__ import annotations

import time

import numpy as np

from corrtree import _io
from corrtree.bench._common import header, loglog_slope, parse, parser, reference_lr
from corrtree.datasets import load_dataset
from corrtree.nets import ShiftedReLUNet, default_threshold, firing_probability
from corrtree.training import thread_limit, train


def firing_counts(X32: np.ndarray, m: int, b: float, seed: int, block: int = 1 << 14):
    """Per-point firing counts for m fresh N(0, I) neurons, drawn and counted in blocks so
    that the O(md) weights never sit in memory at once."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(X32.shape[0], dtype=np.int64)
    for lo in range(0, m, block):
        Wb = rng.standard_normal((min(block, m - lo), X32.shape[1]), dtype=np.float32)
        counts += np.count_nonzero(X32 @ Wb.T > b, axis=1)
    return counts


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--m-log2-max", type=int, default=20)
    p.add_argument("--train-m-log2", type=int, default=14)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--every", type=int, default=5, help="dense recount every K steps")
    args = parse(p, argv)
    if args.quick:
        data = load_dataset("synthetic", n=100, d=16, seed=0)
        desc = "synthetic n=100 d=16"
        args.m_log2_max, args.train_m_log2, args.train_steps = 12, 10, 10
    else:
        data = load_dataset("fashion-mnist", n=args.n, targets="binary")
        desc = f"fashion-mnist first {args.n}, unit norm"
    X32 = data.X.astype(np.float32)
    init = []
    with thread_limit(args.threads):
        for k in range(10 if not args.quick else 6, args.m_log2_max + 1):
            m = 1 << k
            b = default_threshold(m)
            p_fire = firing_probability(b)
            t0 = time.perf_counter()
            c = firing_counts(X32, m, b, args.seed + k)
            row = {
                "m": m,
                "b": b,
                "p": p_fire,
                "expected": m * p_fire,
                "binomial_std": float(np.sqrt(m * p_fire * (1 - p_fire))),
                "bound_m45": m**0.8,
                "mean": float(c.mean()),
                "min": int(c.min()),
                "max": int(c.max()),
                "std": float(c.std()),
                "seconds": time.perf_counter() - t0,
            }
            init.append(row)
            print(
                f"m=2^{k:<2d} b={b:.3f} expected {row['expected']:9.1f}  mean {row['mean']:9.1f}"
                f"  min {row['min']:6d}  max {row['max']:6d}  m^(4/5) {row['bound_m45']:9.0f}",
                flush=True,
            )
        # During training: k_{i,t} against k_{i,0}.
        m = 1 << args.train_m_log2
        net = ShiftedReLUNet(data.d, m, seed=args.seed, dtype=np.float32)
        b = net.threshold

        X64 = X32.astype(np.float64)
        xmax = np.linalg.norm(X64, axis=1).max()
        near = {}  # step -> pairs within float32 rounding of b (either side may be right)

        def dense_counts(step):
            """Firing counts per point from the float64 product of the float32 values, and
            the pairs close enough to b for float32 summation order to decide them."""
            W = net.W.astype(np.float64)
            Z = X64 @ W.T
            wmax = np.linalg.norm(W, axis=1).max()
            margin = (data.d + 2) * np.finfo(np.float32).eps * xmax * wmax
            near[step] = int(np.count_nonzero(np.abs(Z - b) <= margin))
            return np.count_nonzero(Z > b, axis=1)

        k0 = dense_counts(0)
        checkpoints = {0: k0}

        def record(t, net_, info):
            if (t + 1) % args.every == 0 or t + 1 == args.train_steps:
                checkpoints[t + 1] = dense_counts(t + 1)

        hist = train(
            net,
            X32,
            data.y,
            steps=args.train_steps + 1,
            lr=reference_lr(data.n),
            engine="certified",
            callback=record,
        )
    # The engine's count must equal the dense recount up to the pairs within rounding of b.
    mismatched = [
        t
        for t, c in checkpoints.items()
        if t < hist.steps and abs(int(c.sum()) - hist.fired_pairs[t]) > near[t]
    ]
    pos = k0 > 0
    trained = {
        "m": m,
        "steps": args.train_steps,
        "mean_per_point": [f / data.n for f in hist.fired_pairs[: args.train_steps + 1]],
        "loss": hist.loss[: args.train_steps + 1],
        "checkpoints": [
            {
                "step": t,
                "pairs": int(c.sum()),
                "engine_pairs": int(hist.fired_pairs[t]) if t < hist.steps else None,
                "pairs_within_rounding_of_b": near[t],
                "mean": float(c.mean()),
                "max": int(c.max()),
                "max_ratio_to_init": float((c[pos] / k0[pos]).max()) if pos.any() else None,
                "mean_ratio_to_init": float((c[pos] / k0[pos]).mean()) if pos.any() else None,
                "points_with_new_firing": int(np.count_nonzero(c[~pos])),
            }
            for t, c in sorted(checkpoints.items())
        ],
        "engine_matches_dense_counts": not mismatched,
        "mismatched_steps": mismatched,
    }
    report = {
        **header("sparsity", args.threads),
        "data": desc,
        "n": int(data.n),
        "d": int(data.d),
        "init": init,
        "init_fitted_exponent": loglog_slope([r["m"] for r in init], [r["mean"] for r in init]),
        "train": trained,
    }
    last = trained["checkpoints"][-1]
    print(
        f"fitted exponent of the mean count in m: {report['init_fitted_exponent']:.3f} "
        "(m p = m^(4/5) / sqrt(ln m) asymptotically)"
    )
    print(
        f"training m=2^{args.train_m_log2}, {args.train_steps} GD steps: mean k_t/k_0 "
        f"{last['mean_ratio_to_init']:.3f}, max k_t/k_0 {last['max_ratio_to_init']:.2f}, "
        f"max k_t {last['max']} vs m^(4/5) = {m**0.8:.0f}; "
        f"engine pairs == dense recount (up to pairs within rounding of b): "
        f"{trained['engine_matches_dense_counts']}"
    )
    if args.out:
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report
