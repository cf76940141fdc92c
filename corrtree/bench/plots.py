"""PNG plots of the benchmark results, drawn from their JSON (a separate step, so figures can
be redrawn without rerunning anything). Missing result files are skipped with a message.

    corrtree bench plots [--results benchmarks/results] [--out-dir docs/results]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from matplotlib.ticker import NullFormatter

from corrtree import _io
from corrtree.app.plots import plt, save


def _fig():
    return plt.subplots(figsize=(5.6, 3.8))


def sparsity(r, out):
    fig, ax = _fig()
    m = [x["m"] for x in r["init"]]
    ax.loglog(m, [x["mean"] for x in r["init"]], "o", label="measured mean per point")
    ax.fill_between(
        m,
        [x["min"] for x in r["init"]],
        [x["max"] for x in r["init"]],
        alpha=0.2,
        label="min..max over points",
    )
    ax.loglog(m, [x["expected"] for x in r["init"]], "-", label="m P(z > b)")
    ax.loglog(m, [x["bound_m45"] for x in r["init"]], "--", label="m^(4/5)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("neurons m")
    ax.set_ylabel("neurons firing per point")
    ax.set_title(f"Sparsity at init, b = sqrt(0.4 ln m) ({r['data']})", fontsize=9)
    ax.legend(fontsize=8)
    paths = [save(fig, os.path.join(out, "sparsity_init.png"))]
    tr = r["train"]
    fig, ax = _fig()
    k = np.array(tr["mean_per_point"])
    ax.plot(np.arange(k.size), k / k[0], label="mean k_t / mean k_0 (every step)")
    cps = tr["checkpoints"]
    ax.plot(
        [c["step"] for c in cps],
        [c["max_ratio_to_init"] for c in cps],
        "s",
        label="max over points of k_{i,t} / k_{i,0}",
    )
    ax.set_xlabel("GD step t")
    ax.set_ylabel("ratio to init")
    ax.set_title(f"Firing during training, m = {tr['m']}", fontsize=9)
    ax.legend(fontsize=8)
    paths.append(save(fig, os.path.join(out, "sparsity_train.png")))
    return paths


def preprocessing(r, out):
    fig, ax = _fig()
    for s, mark in (("dtree", "o"), ("wtree", "s")):
        rows = [x for x in r["rows"] if x["structure"] == s]
        ax.loglog(
            [x["nmd"] for x in rows],
            [x["seconds"] for x in rows],
            mark,
            label=f"{s} (slope {r['fitted_exponent_nmd'][s]:.2f})",
        )
    x = np.array(sorted({x["nmd"] for x in r["rows"]}), dtype=float)
    ref = np.median([y["seconds"] / y["nmd"] for y in r["rows"]])
    ax.loglog(x, ref * x, "k--", lw=0.8, label="slope 1")
    ax.set_xlabel("n * m * d")
    ax.set_ylabel("Init seconds")
    ax.set_title("Preprocessing time of the correlation trees", fontsize=9)
    ax.legend(fontsize=8)
    return [save(fig, os.path.join(out, "preprocessing.png"))]


def periter(r, out):
    paths = []
    for regime, spec in r["regimes"].items():
        fig, ax = _fig()
        for engine in r["fitted_exponent_m"][regime]:
            rows = [x for x in r["rows"] if x["regime"] == regime and x["engine"] == engine]
            a = r["fitted_exponent_m"][regime][engine]["step_seconds"]
            ax.loglog(
                [x["m"] for x in rows],
                [x["median_step_seconds"] for x in rows],
                "o-",
                label=f"{engine} (m^{a:.2f})",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("neurons m")
        ax.set_ylabel("seconds per GD step")
        ax.set_title(f"Per-iteration cost, n = {spec['n']}", fontsize=9)
        ax.legend(fontsize=8)
        paths.append(save(fig, os.path.join(out, f"periter_{regime}.png")))
    return paths


def dims(r, out):
    fig, ax = _fig()
    for engine in ("halfspace", "dtree", "wtree", "dense"):
        rows = [x for x in r["rows"] if x["engine"] == engine]
        label = "SYZ21 ball tree" if engine == "halfspace" else engine
        ax.loglog(
            [x["d"] for x in rows], [x["median_step_seconds"] for x in rows], "o-", label=label
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dimension d")
    ax.set_ylabel("seconds per GD step")
    ax.set_title(
        f"Half-space reporting vs correlation trees, n = {r['n']}, m = {r['m']}", fontsize=9
    )
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    hs = [x for x in r["rows"] if x["engine"] == "halfspace"]
    ax2.plot([x["d"] for x in hs], [100 * x["visited_fraction"] for x in hs], "k:", lw=1)
    ax2.set_ylabel("ball-tree nodes visited per query (%, dotted)")
    ax2.set_ylim(0, 105)
    return [save(fig, os.path.join(out, "dims.png"))]


def side_by_side(r, out, name):
    fig, ax = _fig()
    res = r["results"]
    # Approximate methods (LSH, which report a recall) are grey and say so.
    exact = ["mean_recall" not in x for x in res]
    labels = [
        x["method"] + ("" if ok else " (approximate)") for x, ok in zip(res, exact, strict=True)
    ]
    ax.barh(
        labels,
        [x.get("mean_step_seconds", x["median_step_seconds"]) for x in res],
        color=["tab:blue" if ok else "tab:gray" for ok in exact],
    )
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mean seconds per step, rebuilds included (log)")
    kind = "full-batch GD" if name.startswith("gd") else f"SGD, batch {r.get('batch')}"
    ax.set_title(f"{kind}: n = {r['n']}, m = {r['m']}, {r['threads']} threads", fontsize=9)
    ax.invert_yaxis()
    return [save(fig, os.path.join(out, f"{name}.png"))]


def epochs(r, out, name):
    """Test accuracy against wall time (preprocessing included) for both sides; the dense
    side's later epochs are extrapolated in time and drawn hollow, at corrtree's accuracy
    (the same trajectory: both are exact dense SGD on the same batches)."""
    fig, ax = _fig()
    ours, dense = r["corrtree"], r["dense"]
    t = np.cumsum(ours["epoch_seconds"])
    ax.plot(t, ours["test_accuracy"], "o-", label=f"corrtree ({ours['engine']})")
    td = np.cumsum(dense["epoch_seconds"] + dense.get("epoch_seconds_extrapolated", []))
    k = len(dense["test_accuracy"])
    ax.plot(td[:k], dense["test_accuracy"], "s-", color="tab:red", label=dense["method"])
    if len(td) > k:
        ax.plot(
            td[k:],
            ours["test_accuracy"][k:],
            "s--",
            mfc="none",
            color="tab:red",
            label="dense, time extrapolated (same trajectory)",
        )
    ax.axhline(r["target_accuracy"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("wall time, s (preprocessing included)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"SGD on {r['n']} images, m = {r['m']}, batch {r['batch']}: "
        f"{r['speedup_end_to_end']:.1f}x end to end",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return [save(fig, os.path.join(out, f"{name}.png"))]


def deep(r, out, name):
    """End-to-end seconds of each method per widths (PyTorch extrapolated from its sample)."""
    fig, ax = _fig()
    labels, secs, colors = [], [], []
    for run in r["runs"]:
        w = "(" + ", ".join(f"2^{int(np.log2(x))}" for x in run["widths"]) + ")"
        for key, label, color in (
            ("corrtree", "corrtree", "tab:blue"),
            ("torch_sparse", "PyTorch sparse*", "tab:orange"),
            ("torch_dense", "PyTorch dense*", "tab:red"),
        ):
            labels.append(f"{w} {label}")
            secs.append(run[key]["total_seconds"])
            colors.append(color)
    ax.barh(labels, secs, color=colors)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("seconds end to end (log); * extrapolated from sampled steps")
    epochs_ = r["runs"][0]["epochs"]
    ax.set_title(f"deep networks, SGD batch 256, {epochs_} epochs of Fashion-MNIST", fontsize=9)
    ax.invert_yaxis()
    return [save(fig, os.path.join(out, f"{name}.png"))]


def distributed(r, out, name):
    """Mean step of one process and of k workers, per configuration."""
    fig, ax = _fig()
    for c in r["configs"]:
        rows = c["rows"]
        ks = [row["workers"] for row in rows]
        ax.plot(ks, [row["mean_step_seconds"] for row in rows], "o-", label=c["name"])
    ax.set_yscale("log")
    ax.set_xticks([0, 1, 2, 4], ["one process", "1", "2", "4"])
    ax.set_xlabel("workers (sharing 2 cores)")
    ax.set_ylabel("mean seconds per step (log)")
    ax.set_title("neurons sharded over Ray workers, one machine", fontsize=9)
    ax.legend(fontsize=7)
    return [save(fig, os.path.join(out, f"{name}.png"))]


def tta(r, out, name):
    """Test accuracy against training wall time (evaluation excluded), one line per method."""
    fig, ax = _fig()
    for method, run in r["runs"].items():
        ax.plot(run["train_seconds"], run["test_accuracy"], ".-", ms=3, label=method)
    for t in r["targets"]:
        ax.axhline(t, color="grey", lw=0.6, ls=":")
    ax.set_ylim(max(0.5, min(min(x["test_accuracy"]) for x in r["runs"].values())), None)
    ax.set_xlabel("training wall time, s (preprocessing included, evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"Fashion-MNIST, m = {r['m']}, batch {r['batch']}, {r['epochs']} epochs", fontsize=9
    )
    ax.legend(fontsize=8)
    return [save(fig, os.path.join(out, f"{name}.png"))]


PLOTS = {"sparsity": sparsity, "preprocessing": preprocessing, "periter": periter, "dims": dims}
NAMED = {"deep": deep, "distributed": distributed, "tta": tta}  # drawn under the file's name


def main(argv=None):
    p = argparse.ArgumentParser(prog="corrtree bench plots", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--out-dir", default="docs/results")
    args = p.parse_args(argv)
    if not os.path.isdir(args.results):
        raise FileNotFoundError(f"no results folder {args.results!r}; run a benchmark first")
    written = []
    for fname in sorted(os.listdir(args.results)):
        if not fname.endswith(".json"):
            continue
        r = _io.read_json(os.path.join(args.results, fname))
        name = r.get("benchmark")
        stem = fname[: -len(".json")]
        if name in PLOTS:
            written += PLOTS[name](r, args.out_dir)
        elif name in ("gd", "sgd"):
            written += side_by_side(r, args.out_dir, stem)
        elif name == "epochs":
            written += epochs(r, args.out_dir, stem)
        elif name in NAMED:
            written += NAMED[name](r, args.out_dir, stem)
        elif str(name).startswith("ab_"):  # side-by-side option and kernel comparisons: tables only
            continue
        else:
            print(f"{fname}: not a benchmark report, skipped", file=sys.stderr)
    for w in written:
        print(f"wrote {w}")
    return {"written": written}
