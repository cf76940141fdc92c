"""Every Python block of the README and docs/ runs as written, at small size: the sizes are
shrunk (widths, epochs, workers) and the names a block takes from the reader (X, labels, y,
a run folder) are given small real data; anything else is the block's own."""

import os
import re

import numpy as np
import pytest
from sklearn.datasets import load_digits

import corrtree as ct

ROOT = os.path.join(os.path.dirname(__file__), "..")
FILES = ["README.md", *sorted(f"docs/{f}" for f in os.listdir(f"{ROOT}/docs") if f.endswith(".md"))]
SMALLER = [
    (r"1 << 2[0-9]", "256"),
    (r"1 << 1[0-9]", "256"),
    (r"\b16384\b", "64"),
    (r"d=784", "d=64"),
    (r"epochs=\d+", "epochs=1"),
    (r"steps=100\b", "steps=2"),
    (r"workers=\d+", "workers=2"),
    (r"eval_every=\d+", "eval_every=3"),
]


def _blocks():
    out = []
    for name in FILES:
        text = open(os.path.join(ROOT, name)).read()
        for k, code in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S)):
            out.append(pytest.param(code, id=f"{name}:{k}"))
    return out


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """What a reader brings: data, and a finished run at runs/latest."""
    X, labels = load_digits(return_X_y=True)
    X, labels = X[:300] / 16.0, labels[:300]
    Y = np.eye(10)[labels]
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("reader")
    net = ct.ShiftedReLUNet(64, 256)  # the one-output network docs/distributed.md trains
    from corrtree.app.run import RunConfig, run_training

    run_training(str(root / "runs" / "latest"), RunConfig(width=256, steps=3), progress=False,
                 log=lambda *a: None)  # fmt: skip
    return {
        "X": X, "labels": labels, "Y": Y, "y": Y[:, 0] - 0.1, "X_new": X[:20],
        "X_test": X[:50], "labels_test": labels[:50], "W": rng.standard_normal((40, 64)),
        "i": 0, "b": 0.5, "r": 0, "w_new": rng.standard_normal(64), "net": net, "root": root,
    }  # fmt: skip


@pytest.mark.parametrize("code", _blocks())
def test_doc_block_runs(code, reader, monkeypatch):
    if "corrtree.distributed" in code or "workers=" in code:
        pytest.importorskip("ray")
    if "to_torch" in code:
        pytest.importorskip("torch")
    for pattern, small in SMALLER:
        code = re.sub(pattern, small, code)
    monkeypatch.chdir(reader["root"])
    namespace = {k: v for k, v in reader.items() if k != "root"}
    namespace["ct"] = ct  # the first block of a page imports it; later ones continue
    if "W" in code and "CorrelationDTree(W, X)" in code:
        namespace["X"] = ct.normalize_rows(reader["X"])
    exec(compile(code, "<doc block>", "exec"), namespace)
