"""Does it matter whether a script imports numpy before corrtree? Runs the same training in
fresh processes, alternating the two import orders, and compares their step times.

    python benchmarks/import_order.py --out benchmarks/results/import_order.json

Configurations: full-batch GD on the first 2000 Fashion-MNIST images at m = 2^17 (20 steps),
and SGD with batches of 256 on the first 10000 at m = 2^16 (120 steps), both ``certified``,
float32, 2 threads. Each process reports its median and mean step; with numpy first, OpenBLAS
has loaded before corrtree could set ``OPENBLAS_THREAD_TIMEOUT``, so only corrtree's own
handling of threads (single-threaded BLAS and its own product threads while training) keeps
the two orders equal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import sys, time
if sys.argv[1] == "numpy-first":
    import numpy
import corrtree as ct
import numpy as np
from corrtree.datasets import load_dataset
from corrtree.nets import init_weights
what = sys.argv[2]
if what == "gd":
    data = load_dataset("fashion-mnist", n=2000, targets="binary")
    m, batch, steps, lr = 1 << 17, None, 20, 0.2
else:
    data = load_dataset("fashion-mnist", n=10000, targets="binary")
    m, batch, steps, lr = 1 << 16, 256, 120, 400 / 256
X = data.X.astype(np.float32)
Y = data.y.reshape(-1, 1).astype(np.float32)
W, A = init_weights(784, (0, m), seed=0, dtype=np.float32)
net = ct.ShiftedReLUNet.from_weights(W, A)
h = ct.train(net, X, Y, steps=steps, lr=lr, engine="certified", batch_size=batch, threads=2)
secs = np.array([sum(v) for v in zip(*h.seconds.values())])
print(json.dumps({"median": float(np.median(secs[1:])), "mean": float(secs.mean()),
                  "pre": h.preprocess_seconds}))
""".replace("import sys, time", "import sys, time, json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    rows = {}
    for what in ("gd", "sgd"):
        for rep in range(args.repeats):
            for order in ("corrtree-first", "numpy-first"):
                res = subprocess.run(
                    [sys.executable, "-c", CHILD, order, what],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(res.stdout.strip().splitlines()[-1])
                rows.setdefault(what, {}).setdefault(order, []).append(r)
                print(
                    f"{what} {order} #{rep}: median {r['median']:.4f} s, mean {r['mean']:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {}
    for what, orders in rows.items():
        med = {o: sorted(x["median"] for x in v)[len(v) // 2] for o, v in orders.items()}
        summary[what] = {
            "median_of_medians": med,
            "numpy_first_over_corrtree_first": med["numpy-first"] / med["corrtree-first"],
        }
        print(
            f"{what}: numpy-first / corrtree-first = "
            f"{summary[what]['numpy_first_over_corrtree_first']:.3f} "
            f"({med['numpy-first']:.4f} vs {med['corrtree-first']:.4f} s per step)"
        )
    if args.out:
        from corrtree import _io
        from corrtree.bench._common import header

        _io.write_json(args.out, {**header("import_order", 2), "runs": rows, "summary": summary})


if __name__ == "__main__":
    main()
