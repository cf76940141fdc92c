"""What a run reports: accuracy against the dataset's labels, the summary of a finished run
and its text."""

from __future__ import annotations

import numpy as np

from ..datasets import positive

__all__ = ["accuracy", "describe", "summarize"]


def accuracy(outputs: np.ndarray, labels: np.ndarray, targets: str, n_classes: int) -> float:
    """Fraction of points classified right. ``n_classes`` is the dataset's (not the batch's):
    with binary targets, output > 0 predicts the positive points (``datasets.positive``)."""
    if targets == "binary" or outputs.shape[1] == 1:
        truth = positive(labels, n_classes)
        return float(np.mean((outputs[:, 0] > 0) == truth))
    return float(np.mean(outputs.argmax(axis=1) == labels))


def summarize(metrics: dict, net, n: int) -> dict:
    steps = metrics["steps"]
    per_step = [sum(s["seconds"].values()) for s in steps]
    fired = np.asarray(metrics["fired_per_point_end"])
    out = {
        "engine": metrics.get("engine"),
        "steps": len(steps),
        # the loss over every training point before and after training (older runs: the
        # first step's batch)
        "first_loss": metrics.get("initial_loss", steps[0]["loss"] if steps else None),
        "final_loss": metrics["final_loss"],
        "median_step_seconds": float(np.median(per_step)) if per_step else None,
        "preprocess_seconds": float(sum(metrics["preprocess_seconds"])),
        "fired_fraction": float(fired.mean() / net.width),
        "mean_changed_neurons": float(np.mean([s["changed_neurons"] for s in steps]))
        if steps
        else 0.0,
    }
    if "final_accuracy" in metrics:
        out["final_accuracy"] = metrics["final_accuracy"]
    if "recipe" in metrics:
        out["recipe"] = metrics["recipe"]
    ev = metrics.get("eval")
    if ev and ev["step"]:
        out["eval"] = {
            "points": ev["points"],
            "final_accuracy": ev["accuracy"][-1],
            "best_accuracy": max((a for a in ev["accuracy"] if a is not None), default=None),
            "final_loss": ev["loss"][-1],
            "stopped": ev.get("stopped"),
        }
    return out


def describe(summary: dict) -> str:
    lines = [
        f"engine             {summary.get('engine')}",
        f"steps              {summary['steps']}",
        f"loss               {summary['first_loss']:.6g} -> {summary['final_loss']:.6g} "
        "(all training points)",
    ]
    if "recipe" in summary:
        r = summary["recipe"]
        output = "trained" if r["train_output"] else "fixed"
        lines.insert(
            1, f"recipe             {r['loss']} loss, {r['optimizer']}, {output} output layer"
        )
    if "final_accuracy" in summary:
        lines.append(f"train accuracy     {summary['final_accuracy']:.4f}")
    ev = summary.get("eval")
    if ev:
        acc = ev["final_accuracy"]
        line = f"held-out loss      {ev['final_loss']:.6g}"
        if acc is not None:
            line = f"held-out accuracy  {acc:.4f} (best {ev['best_accuracy']:.4f})"
        line += f" on {ev['points']}"
        if ev.get("stopped"):
            line += f"; stopped early ({ev['stopped']})"
        lines.append(line)
    lines += [
        f"fired fraction     {summary['fired_fraction']:.4%} of neurons per point",
        f"neurons changed    {summary['mean_changed_neurons']:.0f} per step (mean)",
        f"preprocessing      {summary['preprocess_seconds']:.3f} s",
        f"time per step      {summary['median_step_seconds']:.4f} s (median)",
    ]
    return "\n".join(lines)
