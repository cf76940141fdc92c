"""Benchmarks: each module has ``main(argv) -> report`` that runs one experiment, checks every
engine it times against dense, prints a table and writes raw JSON (``--out``). ``--quick``
runs tiny sizes in seconds (the test suite does). Plots are made from the JSON afterwards by
``corrtree bench plots``.

    corrtree bench NAME [--quick] [--out FILE] [options]
"""

from __future__ import annotations

import importlib

BENCHMARKS = {
    "gd": "full-batch GD side by side: dense NumPy/PyTorch and corrtree's engines",
    "sgd": "mini-batch SGD side by side, weights checked against dense SGD",
    "epochs": "a real run: E epochs of SGD, test accuracy against wall time, corrtree vs dense",
    "scaling": "SGD step of corrtree against the tight dense step as m grows, 2^14..2^20",
    "sparsity": "neurons firing per point at init (m = 2^10..2^20) and during training",
    "preprocessing": "Init time of both trees over n, m, d: the O(nmd) slope",
    "periter": "time per iteration of dense, dtree and wtree as m grows",
    "dims": "SYZ21 half-space ball tree against the correlation trees as d grows",
    "distributed": "neurons sharded over 1, 2, 4 Ray workers: overhead, bytes, memory per step",
    "deep": "deep shifted-ReLU networks: exact sparse engine vs tight dense and sparse PyTorch",
    "tta": "time to 85% and 88% test accuracy, each side's best recipe (Adam, cross-entropy)",
    "plots": "PNG plots in docs/results from the JSON in benchmarks/results",
}


def run(name: str, argv: list[str] | None = None) -> dict:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    return importlib.import_module(f"corrtree.bench.{name}").main(argv)
