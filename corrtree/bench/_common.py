"""What every benchmark report shares: where and when it ran, and a log-log slope."""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import time

import numpy as np

from corrtree import _bf16, _io
from corrtree.engines import APPROXIMATE, ENGINES, make_engine
from corrtree.nets import ShiftedReLUNet
from corrtree.training import take_step, thread_limit, train


def header(name: str, threads: int) -> dict:
    return {
        "benchmark": name,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads": threads,
    }


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (the fitted exponent)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def parser(module: str, doc: str):
    """The argument parser every benchmark starts from: --quick, --threads, --seed, --out."""
    p = argparse.ArgumentParser(
        prog=f"corrtree bench {module.rsplit('.', 1)[-1]}", description=doc.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (used by the tests)")
    p.add_argument("--threads", type=int, default=2, help="numba and BLAS threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output (default: print only)")
    return p


def parse(p, argv):
    """Parse a benchmark's arguments; fail now if ``--out`` cannot be written, not after the
    benchmark ran."""
    args = p.parse_args(argv)
    if getattr(args, "out", None):
        _io.check_writable(args.out)
    return args


def save(report: dict, out: str | None) -> dict:
    """Write a benchmark's report as JSON to ``out`` (atomically; nothing when None)."""
    if out:
        _io.write_json(out, report)
        print(f"wrote {out}")
    return report


def reset_peak_rss() -> None:
    """Reset the kernel's resident high-water mark of this process (Linux; no-op elsewhere)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def plan_methods(methods: str, threads: int) -> list[tuple[str, type]]:
    """(method, dtype) per comma-separated name, dense float64 first. ``dense64``: the dense
    engine in float64, the reference every method is checked against; ``numpy32`` and
    ``torch32``: the tight dense baselines in float32 (torch32 skipped with a message when
    PyTorch is absent); ``dense32``: the dense engine in float32; an engine name (float32) or
    an engine name ending in ``64`` (that engine in float64)."""
    names = list(dict.fromkeys(["dense64", *[m for m in methods.split(",") if m]]))
    plan = []
    for name in names:
        if name in ("dense64", "dense32"):
            plan.append(("dense", np.float64 if name == "dense64" else np.float32))
        elif name == "numpy32":
            plan.append(("numpy-tight", np.float32))
        elif name == "torch32":
            try:
                import torch
            except ImportError:
                print(
                    "torch32: PyTorch is not installed (pip install 'corrtree[torch]'): skipped",
                    file=sys.stderr,
                )
                continue
            torch.set_num_threads(threads)
            plan.append(("torch-tight", np.float32))
        elif name.endswith("64") and (name[:-2] in ENGINES or name[:-2] in APPROXIMATE):
            plan.append((name[:-2], np.float64))
        else:
            plan.append((name, np.float32))
    return plan


def method_label(engine: str, dtype) -> str:
    """How a report names a method: numpy-tight-float32, dense-float64, certified,
    certified-float64."""
    dtype = np.dtype(dtype).name
    if engine in ("dense", "numpy-tight", "torch-tight"):
        return f"{engine}-{dtype}"
    return engine if dtype == "float32" else f"{engine}-{dtype}"


def step_summary(secs: list[float], pre: float) -> dict:
    """What a user waits for: the mean step over all steps (rebuilds and the first step
    included), the median of the steps after the first, and the wall time end to end with
    the preprocessing."""
    secs = [float(s) for s in secs]
    return {
        "preprocess_seconds": float(pre),
        "step_seconds": secs,
        "mean_step_seconds": float(np.mean(secs)),
        "median_step_seconds": float(np.median(secs[1:] if len(secs) > 1 else secs)),
        "max_step_seconds": float(np.max(secs)),
        "total_seconds": float(pre + np.sum(secs)),
    }


def reference_lr(batch: int) -> float:
    """The benchmarks' step size, 400 / batch (the loss is a sum over the batch): the
    reference configurations' lr, kept fixed whatever the library's default."""
    return 400.0 / batch


def compile_certified(dtype=np.float32, threads: int = 2) -> None:
    """Take a tiny `certified` engine through every path a timed step can reach, so that numba
    compiles (or loads from its on-disk cache) each kernel before any timing: full and mini
    batches, the hot neurons as one BLAS block, a re-reference, the bfloat16 index pass where
    it is available (float32), and a lazy index. A warm-up with a few points alone reaches
    none of the large-problem paths, and a cold cache then put compile time into the timed
    steps (about a minute for full-batch GD)."""
    rng = np.random.default_rng(0)
    n, d, m = 1100, 16, 64  # n >= 1024: full batches take the BLAS path for hot neurons
    X = rng.standard_normal((n, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(dtype)
    Y = rng.standard_normal((n, 2)).astype(dtype)
    bf16 = [False] + ([True] if dtype == np.float32 and _bf16.available() else [])
    with thread_limit(threads):
        for index_bf16 in bf16:
            for lazy in (False, True):
                net = ShiftedReLUNet(d, m, n_outputs=2, threshold=0.5, dtype=dtype)
                options = {"blas_gradient": 0.0, "index_bf16": index_bf16, "lazy": lazy}
                engine = make_engine("certified", net, X, options)
                for rows in (None, None, np.arange(8), np.arange(8, 16)):
                    take_step(engine, Y, 0.5, rows)
                engine.rereference(np.arange(m // 2))
                take_step(engine, Y, 0.5, np.arange(16, 24))
        # the recipes' kernels: output-layer gradient, lazy Adam, the split update
        for rows in (None, 8):
            net = ShiftedReLUNet(d, m, n_outputs=2, threshold=0.5, dtype=dtype)
            train(
                net, X, rng.integers(0, 2, n), steps=3, batch_size=rows, engine="certified",
                engine_options={"blas_gradient": 0.0}, loss="cross_entropy", optimizer="adam",
                train_output=True, threads=threads,
            )  # fmt: skip
