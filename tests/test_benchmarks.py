"""Every benchmark runs end to end at tiny sizes through `corrtree bench`, checks what it
times against dense, and refuses wrong engines; the plots are drawn from its JSON."""

import importlib.util
import json
import os

import pytest

from corrtree.app.cli import main as cli
from corrtree.bench import BENCHMARKS, gd

EXACTNESS = {
    "gd": lambda r: all(x["exact_within_tolerance"] for x in r["results"]),
    "sgd": lambda r: all(x["exact_within_tolerance"] for x in r["results"]),
    "epochs": lambda r: r["weight_relative_error"] <= 1e-4,
    "scaling": lambda r: r["all_exact"],
    "sparsity": lambda r: r["train"]["engine_matches_dense_counts"],
    "preprocessing": lambda r: r["all_match_dense"],
    "periter": lambda r: r["all_exact"],
    "dims": lambda r: r["all_exact"],
    "distributed": lambda r: r["all_exact"] and len(r["configs"]) == 2,
    "deep": lambda r: r["all_exact"] and len(r["runs"]) == 2,
    "tta": lambda r: r["exact_gap_float64"] <= 1e-12 and len(r["rows"]) == 3,
}


NEEDS = {
    "distributed": "ray",
    "deep": "torch",
    "tta": "torch",
}  # benchmarks that need an optional extra


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    for name in EXACTNESS:
        if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
            continue  # an optional extra this environment lacks: that test skips
        extra = ["--methods", "dense32,certified,dtree,wtree,halfspace"] if name == "gd" else []
        assert cli(["bench", name, "--quick", "--out", str(folder / f"{name}.json"), *extra]) == 0
    return folder


@pytest.mark.parametrize("name", sorted(EXACTNESS))
def test_quick_benchmark_is_exact(results, name):
    if not (results / f"{name}.json").exists():
        pytest.skip(f"{NEEDS[name]} is not installed")
    report = json.loads((results / f"{name}.json").read_text())
    assert report["benchmark"] == name
    assert EXACTNESS[name](report)


def test_epochs_passes_engine_options(tmp_path, capsys):
    """``--engine-opt`` reaches corrtree's engine (certified) and is recorded; a wrong option
    is refused by name before anything runs."""
    out = tmp_path / "epochs.json"
    assert cli(["bench", "epochs", "--quick", "--engine-opt", "slack=0.3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["engine_options"] == {"slack": 0.3} and r["corrtree"]["engine"] == "certified"
    with pytest.raises(SystemExit):
        cli(["bench", "epochs", "--quick", "--engine-opt", "slak=0.3"])
    assert "slak" in capsys.readouterr().err


def test_gd_report(results):
    report = json.loads((results / "gd.json").read_text())
    methods = [r["method"] for r in report["results"]]
    assert methods[0] == "dense-float64"
    assert {"certified", "dtree", "wtree", "halfspace"} <= set(methods)
    assert all(len(r["loss"]) == report["steps"] for r in report["results"])


def test_epochs_report(results):
    """The real-run benchmark: per-epoch wall time and test accuracy for both sides, the
    same number of epochs, a learning model, and end-to-end ratios that add up."""
    r = json.loads((results / "epochs.json").read_text())
    ours, dense = r["corrtree"], r["dense"]
    assert len(ours["epoch_seconds"]) == len(ours["test_accuracy"]) == r["epochs"] == 2
    assert len(dense["test_accuracy"]) == r["dense_epochs_run"] == 2
    assert min(ours["test_accuracy"]) > 0.5  # digits, 10 classes: chance is 0.1
    assert abs(ours["test_accuracy"][-1] - dense["test_accuracy"][-1]) <= 0.01
    total = ours["preprocess_seconds"] + sum(ours["step_seconds"])
    assert r["total_seconds"]["corrtree"] == pytest.approx(total, rel=0.05)
    assert r["speedup_end_to_end"] == pytest.approx(
        r["total_seconds"]["dense"] / r["total_seconds"]["corrtree"]
    )


def test_sgd_weights_match_dense(results):
    report = json.loads((results / "sgd.json").read_text())
    assert report["steps"] > 1
    for r in report["results"]:
        assert r["weight_relative_error"] <= 1e-4, r["method"]


def test_plots_from_json(results, tmp_path):
    assert cli(["bench", "plots", "--results", str(results), "--out-dir", str(tmp_path)]) == 0
    pngs = sorted(os.listdir(tmp_path))
    for expected in (
        "sparsity_init.png",
        "preprocessing.png",
        "periter_small-n.png",
        "dims.png",
        "gd.png",
        "sgd.png",
        "epochs.png",
        "tta.png",
    ):
        assert expected in pngs
        assert (tmp_path / expected).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gd_flags_a_wrong_engine(monkeypatch):
    from corrtree.engines.certified import CertifiedEngine

    original = CertifiedEngine.backward

    def wrong(self, firing, E, lr):  # a wrong step size: fast and wrong
        return original(self, firing, E, 3 * lr)

    monkeypatch.setattr(CertifiedEngine, "backward", wrong)
    report = gd.main(["--quick", "--methods", "certified"])
    (cert,) = [r for r in report["results"] if r["method"] == "certified"]
    assert not cert["exact_within_tolerance"]


def test_bench_listing_and_errors(capsys):
    assert cli(["bench"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in BENCHMARKS)
    with pytest.raises(SystemExit):
        cli(["bench", "nosuch"])
    with pytest.raises(SystemExit):
        gd.main(["--quick", "--steps", "0"])
    assert cli(["bench", "plots", "--results", "/nonexistent"]) == 2


def test_tta_report(results):
    """Time to a test accuracy: every method's curve, wall times that grow, and the ratios
    against the dense Adam step taken from the first evaluation at each target."""
    r = json.loads((results / "tta.json").read_text())
    rows = {row["method"]: row for row in r["rows"]}
    assert set(rows) == {"corrtree-adam", "torch-adam", "torch-adam-relu"}
    for name, run in r["runs"].items():
        assert all(
            a < b for a, b in zip(run["train_seconds"], run["train_seconds"][1:], strict=False)
        )
        assert len(run["eval_step"]) == len(run["test_accuracy"])
        for t in r["targets"]:
            hit = [
                c for a, c in zip(run["test_accuracy"], run["train_seconds"], strict=True) if a >= t
            ]
            assert rows[name][f"seconds_to_{t}"] == (hit[0] if hit else None)
    # the same recipe from the same weights and batches: the same accuracy, within lazy Adam
    assert abs(rows["corrtree-adam"]["best_accuracy"] - rows["torch-adam"]["best_accuracy"]) < 0.03
