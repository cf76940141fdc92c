"""SYZ21's half-space reporting (a ball tree over the weights) against the correlation trees
as the dimension grows: d = 2, 4, 8, 16, 32, 64, 784.

Data: n unit-norm Gaussian points in R^d with a tanh teacher (``synthetic``), m = 2^14 neurons,
b = sqrt(0.4 ln m), float32, full-batch GD. The firing probability does not depend on d
(<w, x> ~ N(0, 1) for unit x); only the geometry does. Per d and engine: preprocessing
seconds, median seconds per step, inner products per step and, for the ball tree, the
fraction of its nodes a query visits. Every loss is checked against dense float64.

    corrtree bench dims --out benchmarks/results/dims.json
"""

from __future__ import annotations

import numpy as np

from corrtree import _io
from corrtree.bench._common import header, parse, parser, reference_lr
from corrtree.bench.periter import TOLERANCE, measure
from corrtree.datasets import load_dataset
from corrtree.nets import init_weights
from corrtree.training import thread_limit

ENGINES = ("halfspace", "dtree", "wtree", "dense")


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--m-log2", type=int, default=14)
    p.add_argument("--dims", default="2,4,8,16,32,64,784")
    p.add_argument("--steps", type=int, default=4)
    args = parse(p, argv)
    dims = [int(v) for v in args.dims.split(",") if v]
    if args.steps < 2 or not dims or min(dims) < 1:
        p.error(f"need --steps >= 2 and positive --dims, got {args.steps} and {args.dims!r}")
    if args.quick:
        args.n, args.m_log2, dims, args.steps = 40, 10, [2, 8, 64], 2
    m = 1 << args.m_log2
    rows = []
    with thread_limit(args.threads):
        for d in dims:
            data = load_dataset("synthetic", n=args.n, d=d, seed=args.seed)
            X, Y = data.X, data.y.reshape(-1, 1)
            W0, A0 = init_weights(d, (0, m), seed=args.seed + d, dtype=np.float32)
            lr = reference_lr(args.n)
            ref = measure("dense", X, Y, W0, A0, np.float64, args.steps, lr)["loss"]
            for engine in ENGINES:
                r = measure(engine, X, Y, W0, A0, np.float32, args.steps, lr)
                gap = float(np.max(np.abs(np.array(r["loss"]) - ref) / np.abs(ref)))
                r.update(d=d, n=args.n, m=m, max_relative_loss_gap=gap)
                r["exact_within_tolerance"] = gap <= TOLERANCE
                if engine == "halfspace":
                    visited = r["stats"]["nodes_visited"] / (args.n * args.steps)
                    r["nodes_visited_per_query"] = visited
                    r["visited_fraction"] = visited / r["stats"]["nodes"]
                rows.append(r)
                extra = (
                    f"  visits {100 * r['visited_fraction']:5.1f}% of nodes"
                    if engine == "halfspace"
                    else ""
                )
                print(
                    f"d={d:4d} {engine:9s} pre {r['preprocess_seconds']:7.3f} s  step "
                    f"{r['median_step_seconds']:8.4f} s  products/step "
                    f"{r['inner_products_per_step']:10.3g}  gap {gap:.1e}{extra}",
                    flush=True,
                )
    report = {
        **header("dims", args.threads),
        "n": args.n,
        "m": m,
        "steps": args.steps,
        "rows": rows,
        "all_exact": all(r["exact_within_tolerance"] for r in rows),
    }
    if args.out:
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report
