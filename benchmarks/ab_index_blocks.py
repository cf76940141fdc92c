"""The certified engine's index pass with blocks of all neurons (as many points as fit in
``block_bytes``: 64 points at m = 2^20 on the bfloat16 units) against blocks of at least
1024 points over chunks of neurons, alternating in one process.

With all neurons in every block, each block's product streams every weight through memory
once for a handful of points; the chunked blocks read each weight once per 1024 points.
Both build the same index (candidate counts compared). Fashion-MNIST (first ``n`` training
images), unit norm, float32, the network's initial weights, 2 threads.

    python benchmarks/ab_index_blocks.py --sizes 10000:20,60000:18,60000:16 \\
        --out benchmarks/results/ab_index_blocks.json
"""

import time

import numpy as np

import corrtree as ct
from corrtree.bench._common import header, parse, parser, save
from corrtree.datasets import load_dataset
from corrtree.engines import certified
from corrtree.nets import init_weights
from corrtree.training import thread_limit

p = parser("ab_index_blocks", __doc__)
p.add_argument("--sizes", default="10000:20,60000:18,60000:16", help="n:log2(m),...")
p.add_argument("--repeats", type=int, default=2)
args = parse(p, None)
sizes = (
    [(300, 12)] if args.quick else [tuple(map(int, s.split(":"))) for s in args.sizes.split(",")]
)
shapes = {"all neurons per block": 1, "chunks of neurons": certified._MIN_BLOCK_POINTS}

report = {**header("ab_index_blocks", args.threads), "runs": []}
try:
    for n, log_m in sizes:
        X = load_dataset("fashion-mnist", n=n).X.astype(np.float32)
        m = 1 << log_m
        W0, A0 = init_weights(X.shape[1], (0, m), n_outputs=10, seed=args.seed, dtype=np.float32)
        times = {name: [] for name in shapes}
        stored = {}
        for _ in range(args.repeats):
            for name, min_points in shapes.items():
                certified._MIN_BLOCK_POINTS = min_points
                net = ct.ShiftedReLUNet.from_weights(W0, A0)
                with thread_limit(args.threads):
                    t0 = time.perf_counter()
                    eng = certified.CertifiedEngine(net, X)
                    times[name].append(time.perf_counter() - t0)
                P, kb = certified._block_shape(
                    n, m, 2 if eng._split is not None else 4, eng.options.block_bytes
                )
                stored[name] = {"candidates": eng.candidates, "block": [P, kb]}
                del eng, net
        run = {"n": n, "m": m, "seconds": times, "index": stored}
        report["runs"].append(run)
        print(f"n = {n}, m = 2^{log_m}:")
        for name, t in times.items():
            s = stored[name]
            print(
                f"  {name:22s} blocks {s['block'][0]} x {s['block'][1]}: "
                f"{', '.join(f'{x:.1f}' for x in t)} s, {s['candidates']} candidates"
            )
finally:  # the engine's own block shape again
    certified._MIN_BLOCK_POINTS = shapes["chunks of neurons"]
save(report, args.out)
