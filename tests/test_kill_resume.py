"""A run killed at a random point (SIGKILL, SIGTERM, SIGINT) and resumed ends bit for bit
where the uninterrupted run does: a two-layer and a deep network (dense engine, float64,
the Adam recipe for the two-layer one, so the optimizer's state travels too)."""

import os
import signal
import time
import zlib

import numpy as np
import pytest
from test_reliability import corrtree, started_until

RUNS = {
    "two-layer": ["--width", "300", "--engine", "dense"],
    "deep": ["--widths", "96,64", "--engine", "dense"],
}
COMMON = ["--dataset", "digits", "--steps", "300", "--batch-size", "64",
          "--checkpoint-every", "7", "--dtype", "float64", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    out = {}
    for kind, args in RUNS.items():
        res = corrtree("train", *COMMON, *args, "--out", root / kind)
        assert res.returncode == 0, res.stderr
        with np.load(root / kind / "model.npz") as f:
            out[kind] = {k: f[k] for k in f.files}
    return out


@pytest.mark.parametrize(
    "kind, sig",
    [("two-layer", signal.SIGKILL), ("deep", signal.SIGTERM), ("two-layer", signal.SIGINT),
     ("deep", signal.SIGKILL)],
)  # fmt: skip
def test_killed_and_resumed_equals_straight(kind, sig, straight, tmp_path):
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{int(sig)}".encode()))
    out = tmp_path / "run"
    # somewhere after the first checkpoint exists: while training, or (rarely) after the
    # model is saved, when resume writes the summary the kill cut off
    proc = started_until(["train", *COMMON, *RUNS[kind], "--out", out], out / "checkpoint.npz")
    time.sleep(rng.uniform(0, 0.3))
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    if proc.returncode == 0:  # it finished first: nothing was interrupted, nothing to test
        pytest.skip("the run ended before the signal")
    expected = {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
    assert proc.returncode == expected, err
    res = corrtree("train", "--resume", out, "--quiet")
    assert res.returncode == 0, res.stderr
    with np.load(out / "model.npz") as f:
        got = {k: f[k] for k in f.files}
    for key, want in straight[kind].items():
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got[key], want, err_msg=key)
    assert not os.path.exists(out / "checkpoint.npz")
