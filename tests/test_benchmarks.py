"""The benchmark scripts run end to end at tiny sizes and refuse wrong engines."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import bench_gd  # noqa: E402


def test_bench_gd_quick(tmp_path):
    out = tmp_path / "gd.json"
    report = bench_gd.main(
        ["--quick", "--methods", "dense32,certified,dtree,wtree", "--out", str(out)]
    )
    assert json.loads(out.read_text())["benchmark"] == "gd"
    methods = [r["method"] for r in report["results"]]
    assert methods[0] == "numpy-dense-float64"
    assert {"certified", "dtree", "wtree"} <= set(methods)
    for r in report["results"]:
        assert r["exact_within_tolerance"], r["method"]
        assert len(r["loss"]) == report["steps"]


def test_bench_gd_flags_a_wrong_engine(monkeypatch):
    from corrtree.engines.certified import CertifiedEngine

    original = CertifiedEngine.step

    def wrong(self, lr, rows=None):  # a wrong step size: fast and wrong
        return original(self, 3 * lr, rows)

    monkeypatch.setattr(CertifiedEngine, "step", wrong)
    report = bench_gd.main(["--quick", "--methods", "certified"])
    (cert,) = [r for r in report["results"] if r["method"] == "certified"]
    assert not cert["exact_within_tolerance"]


@pytest.mark.parametrize("bad", [["--steps", "0"]])
def test_bench_gd_rejects_bad_arguments(bad):
    with pytest.raises(SystemExit):
        bench_gd.main(["--quick", *bad])
