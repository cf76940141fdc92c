"""Neuron sharding on Ray: what 1, 2 and 4 workers cost per step against one process.

Two configurations, each from the same seeded weights (float32, 2 threads in all, so that
workers split the same two cores; ``--threads``): the SGD reference (Fashion-MNIST training
images, one-hot 10 outputs, m = 2^16, batch 256) and the GD reference (first 2000 images,
+-1 targets, m = 2^17). For each: the single-process engine (``auto``), then the same
network sharded over W workers. Reported per method: the mean step over all steps and the
median, preprocessing, the bytes sent per step (driver <-> workers: the batch's rows and
residuals out, the partial outputs back), the communication time per step (wall time beyond
the slowest shard's compute), the peak resident memory of each worker process, and the
relative gap of the loss to the single-process run's (float32: the reduction order differs,
so rounding differs; at most 1e-4 over the first 20 steps or the run is marked inexact, and
the largest gap over all steps next to it).
The workers share this machine's two cores; on a cluster each has its own, which is what
``docs/distributed.md``'s cost model projects.

    corrtree bench distributed --out benchmarks/results/distributed.json
    corrtree bench distributed --quick
"""

from __future__ import annotations

import time

import numpy as np

from corrtree.bench._common import header, parse, parser, save, step_summary
from corrtree.datasets import load_dataset
from corrtree.distributed import Cluster, ShardedNet
from corrtree.nets import ShiftedReLUNet
from corrtree.training import train

# float32 runs: the loss of the first CHECKED steps within TOLERANCE (relative) of the
# one-process run's. The shards' partial outputs are summed in another order, so float32
# rounding differs, and over many SGD steps a pair at the threshold can flip and the runs
# drift apart as two float32 runs of any exact method do; the largest gap over all steps is
# reported too. The float64 tests check 1e-12 after every step.
TOLERANCE = 1e-4
CHECKED = 20


def configs(args) -> list[dict]:
    if args.quick:
        data = load_dataset("synthetic", n=400, d=16, seed=0)
        y = data.y.reshape(len(data.y), -1)
        return [
            {"name": "sgd", "X": data.X, "Y": y, "m": 2048, "batch": 64, "steps": 6, "lr": 0.01},
            {"name": "gd", "X": data.X, "Y": y, "m": 2048, "batch": None, "steps": 3, "lr": 0.01},
        ]
    sgd = load_dataset("fashion-mnist", n=args.sgd_n)
    gd = load_dataset("fashion-mnist", n=2000, targets="binary")
    return [
        {
            "name": f"sgd n={sgd.n} m=2^16 batch 256 C=10",
            "X": sgd.X,
            "Y": sgd.y,
            "m": 1 << 16,
            "batch": 256,
            "steps": args.sgd_steps,
            "lr": 400 / 256,
        },
        {
            "name": "gd n=2000 m=2^17 C=1",
            "X": gd.X,
            "Y": gd.y[:, None],
            "m": 1 << 17,
            "batch": None,
            "steps": args.gd_steps,
            "lr": 0.2,
        },
    ]


def run_config(cfg: dict, workers_list, threads: int, cluster) -> list[dict]:
    X = cfg["X"].astype(np.float32)
    Y = cfg["Y"].astype(np.float32)
    d, C, m, B = X.shape[1], Y.shape[1], cfg["m"], cfg["batch"]
    kw = {"steps": cfg["steps"], "lr": cfg["lr"], "batch_size": B, "seed": 0}
    rows = []
    net = ShiftedReLUNet(d, m, seed=0, dtype=np.float32, n_outputs=C)
    t0 = time.perf_counter()
    hist = train(net, X, Y, threads=threads, **kw)
    wall = time.perf_counter() - t0
    secs = [sum(s) for s in zip(*hist.seconds.values(), strict=True)]
    ref_W, ref_loss = net.W, np.array(hist.loss)
    rows.append(
        {"method": f"one process ({hist.engine})", "workers": 0, "wall_seconds": wall}
        | step_summary(secs, hist.preprocess_seconds)
    )
    print(f"  {rows[-1]['method']:28s} mean step {rows[-1]['mean_step_seconds']:.4f} s")
    for w in workers_list:
        snet = ShardedNet(d, m, seed=0, dtype=np.float32, n_outputs=C, workers=w, cluster=cluster)
        try:
            t0 = time.perf_counter()
            hist = train(snet, X, Y, threads=max(1, threads // w), **kw)
            wall = time.perf_counter() - t0
            W = snet.gather().W
            peak = snet.peak_memory()
        finally:
            snet.close()
        secs = [sum(s) for s in zip(*hist.seconds.values(), strict=True)]
        batch = X.shape[0] if B is None else B
        # out: rows (int64, SGD only) and E to each worker; back: each worker's F
        sent = w * ((0 if B is None else batch * 8) + 2 * batch * C * 4)
        comm = hist.stats["communication_us"] / 1e6 / max(1, hist.steps)
        row = {
            "method": f"{w} worker{'s' if w > 1 else ''} ({hist.engine})",
            "workers": w,
            "wall_seconds": wall,
            "bytes_per_step": sent,
            "communication_seconds_per_step": comm,
            "peak_worker_bytes": peak,
            "max_weight_difference": float(np.max(np.abs(W - ref_W))),
            "max_loss_gap": float(np.max(np.abs(np.array(hist.loss) / ref_loss - 1))),
            "loss_gap_first_steps": float(
                np.max(np.abs(np.array(hist.loss[:CHECKED]) / ref_loss[:CHECKED] - 1))
            ),
        } | step_summary(secs, hist.preprocess_seconds)
        row["exact_within_tolerance"] = row["loss_gap_first_steps"] <= TOLERANCE
        # the step as the driver saw it: shard compute (max over shards) + communication
        row["mean_step_seconds"] += comm
        row["total_seconds"] += comm * hist.steps
        rows.append(row)
        print(
            f"  {row['method']:28s} mean step {row['mean_step_seconds']:.4f} s, "
            f"{sent} B/step, comm {comm * 1e3:.2f} ms/step, worker peak "
            f"{max(peak) / 2**20:.0f} MiB, loss gap {row['max_loss_gap']:.1e}"
        )
    return rows


def main(argv=None) -> dict:
    p = parser(__name__, __doc__)
    p.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    p.add_argument("--sgd-n", type=int, default=60000, help="SGD training images")
    p.add_argument("--sgd-steps", type=int, default=100)
    p.add_argument("--gd-steps", type=int, default=10)
    args = parse(p, argv)
    workers_list = [int(w) for w in args.workers.split(",")]
    report = header("distributed", args.threads) | {"configs": []}
    with Cluster(num_cpus=max(args.threads, max(workers_list))) as cluster:
        for cfg in configs(args):
            print(f"{cfg['name']}: {cfg['steps']} steps")
            rows = run_config(cfg, workers_list, args.threads, cluster)
            report["configs"].append({"name": cfg["name"], "steps": cfg["steps"], "rows": rows})
    report["all_exact"] = all(
        r.get("exact_within_tolerance", True) for c in report["configs"] for r in c["rows"]
    )
    return save(report, args.out)
