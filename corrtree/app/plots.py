"""Figures of a run, drawn from its metrics (matplotlib, imported only here)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .._io import atomic_path  # noqa: E402
from ..engines.base import PHASES  # noqa: E402


def save(fig, path: str) -> str:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_run(out: str, metrics: dict) -> list[str]:
    steps = metrics["steps"]
    t = [s["step"] for s in steps]
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(t, [s["loss"] for s in steps], marker=".")
    ax.set(xlabel="step", ylabel="loss (1/2 sum of squares)", yscale="log", title="Loss")
    ax.grid(alpha=0.3)
    paths.append(save(fig, os.path.join(out, "loss.png")))

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, label in (("fired_per_point_start", "start"), ("fired_per_point_end", "end")):
        if key in metrics:
            counts = np.asarray(metrics[key])
            ax.hist(counts, bins=40, alpha=0.6, label=f"{label} (mean {counts.mean():.0f})")
    ax.set(xlabel="neurons firing on a point", ylabel="points", title="Firing neurons per point")
    ax.legend()
    paths.append(save(fig, os.path.join(out, "fired_hist.png")))

    fig, ax = plt.subplots(figsize=(5, 3.4))
    bottom = np.zeros(len(steps))
    for p in PHASES:
        v = np.array([s["seconds"][p] for s in steps])
        ax.bar(t, v, bottom=bottom, label=p, width=0.9)
        bottom += v
    ax.set(xlabel="step", ylabel="seconds", title="Time per phase")
    ax.legend(fontsize=8)
    paths.append(save(fig, os.path.join(out, "phases.png")))
    return paths
