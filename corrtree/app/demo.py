"""``make demo``: the auto engine (certified at the demo's size) and the dense engine on the
same bundled data, compared."""

from __future__ import annotations

import os

import numpy as np

from .. import _io
from ..datasets import FASHION_MNIST_DIR
from .run import RunConfig, describe, run_training


def demo(
    out: str = "runs/demo",
    *,
    steps: int = 10,
    width: int = 1 << 16,
    engine: str = "auto",
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    have_fashion = os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))
    dataset, n = ("fashion-mnist", 2000) if have_fashion else ("digits", None)
    log = (lambda *a: None) if quiet else print
    if not have_fashion:
        log(
            f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}; Debian package "
            "dataset-fashion-mnist): using scikit-learn's digits"
        )
    common = dict(dataset=dataset, n=n, width=width, steps=steps, dtype="float32")
    results = {}
    for eng in (engine, "dense"):
        log(f"\n== {eng} ==")
        results[eng] = run_training(
            os.path.join(out, eng),
            RunConfig(engine=eng, **common),
            overwrite=overwrite,
            progress=not quiet,
            log=log,
        )
    loss = {
        e: [s["loss"] for s in _io.read_json(os.path.join(out, e, "metrics.json"))["steps"]]
        for e in results
    }
    gap = float(np.max(np.abs(np.subtract(loss[engine], loss["dense"])) / np.abs(loss["dense"])))
    t_tree = results[engine]["median_step_seconds"]
    t_dense = results["dense"]["median_step_seconds"]
    print(
        f"\n== corrtree demo: {dataset}, n={n or 1797}, width={width}, {steps} full-batch "
        "GD steps, float32 =="
    )
    print(describe(results[engine]))
    used = results[engine]["engine"]
    print(f"dense time/step    {t_dense:.4f} s  ->  {used} is {t_dense / t_tree:.2f}x faster")
    print(
        f"loss vs dense      max relative gap {gap:.2e} over {steps} steps (exact up to "
        "float32 rounding)"
    )
    print(f"figures            {os.path.join(out, engine)}/{{loss,fired_hist,phases}}.png")
    return {"results": results, "max_relative_loss_gap": gap}
