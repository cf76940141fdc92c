"""The command line and run folders: outputs, resume, info, errors."""

import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from corrtree.app import cli
from corrtree.app.run import load_model
from corrtree.datasets import load_dataset, read_idx
from corrtree.engines import ENGINES

SMALL = ["--dataset", "synthetic", "--n", "40", "--d", "6", "--width", "300", "--quiet"]


def test_train_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *SMALL, "--steps", "4", "--out", str(out)]) == 0
    files = set(os.listdir(out))
    assert {
        "config.json",
        "metrics.json",
        "model.npz",
        "loss.png",
        "fired_hist.png",
        "phases.png",
    } <= files
    assert not [f for f in files if f.startswith(".tmp-")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["steps"]) == 4
    assert metrics["steps"][0]["loss"] > metrics["final_loss"]
    assert len(metrics["fired_per_point_start"]) == 40
    with np.load(out / "model.npz", allow_pickle=False) as f:
        assert f["W"].shape == (300, 6)
    assert "loss" in capsys.readouterr().out
    assert cli.main(["info", str(out)]) == 0
    assert "time per step" in capsys.readouterr().out


def test_classification_reports_accuracy(tmp_path):
    out = tmp_path / "digits"
    args = [
        "train",
        "--dataset",
        "digits",
        "--n",
        "200",
        "--width",
        "512",
        "--steps",
        "3",
        "--engine",
        "wtree",
        "--quiet",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["final_accuracy"] <= 1.0
    assert all("accuracy" in s for s in metrics["steps"])
    assert load_model(str(out)).n_outputs == 10


@pytest.mark.parametrize("engine", ["dense", "dtree"])
def test_resume_follows_the_uninterrupted_trajectory(tmp_path, monkeypatch, engine):
    args = [
        *SMALL,
        "--steps",
        "7",
        "--batch-size",
        "16",
        "--engine",
        engine,
        "--checkpoint-every",
        "3",
    ]
    full = tmp_path / "full"
    assert cli.main(["train", *args, "--out", str(full)]) == 0

    # Interrupt the second run in its fifth step: the checkpoint of step 3 survives.
    broken = tmp_path / "broken"
    calls = {"n": 0}
    engine_cls = ENGINES[engine]
    original = engine_cls.detect

    def flaky(self, rows):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, rows)

    monkeypatch.setattr(engine_cls, "detect", flaky)
    assert cli.main(["train", *args, "--out", str(broken)]) == 130
    monkeypatch.setattr(engine_cls, "detect", original)
    assert not (broken / "model.npz").exists()
    assert (broken / "checkpoint.npz").exists()
    assert len(json.loads((broken / "metrics.json").read_text())["steps"]) == 3

    assert cli.main(["train", "--resume", str(broken), "--quiet"]) == 0
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((broken / "metrics.json").read_text())
    np.testing.assert_allclose(
        [s["loss"] for s in b["steps"]], [s["loss"] for s in a["steps"]], rtol=1e-12
    )
    np.testing.assert_allclose(load_model(str(broken)).W, load_model(str(full)).W, rtol=1e-12)
    assert not (broken / "checkpoint.npz").exists()


def test_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert cli.main(["train", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corrtree: error: unknown dataset 'nope'") and err.count("\n") == 1
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(tmp_path),
                "--quiet",
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 2
    )
    assert "dataset-fashion-mnist" in capsys.readouterr().err
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", "1000")
    assert cli.main(["train", *SMALL, "--out", str(tmp_path / "m")]) == 2
    assert "needs about" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--width", "0"])
    assert e.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path)]) == 2
    assert cli.main(["train", "--resume", str(tmp_path / "none")]) == 2


def test_module_entry_point_help():
    res = subprocess.run(
        [sys.executable, "-m", "corrtree", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for opt in ("--dataset", "--width", "--engine", "--checkpoint-every", "--resume"):
        assert opt in res.stdout


def test_read_idx_and_user_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4) + images.tobytes())
    np.testing.assert_array_equal(read_idx(str(path)), images)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00\x00\x0d\x01")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(str(bad))

    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    np.savez(tmp_path / "d.npz", X=X, y=np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="--task classification or --task regression"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")  # whole numbers: classes or counts?
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", task="classification")
    np.testing.assert_allclose(data.X[0], [0.6, 0.8])
    assert data.n_classes == 2 and data.y.shape == (3, 2)
    (tmp_path / "s.svm").write_text("1.5 1:3 2:4\n-0.5 2:1\n")
    data = load_dataset(f"svmlight:{tmp_path / 's.svm'}", normalize=False)
    np.testing.assert_allclose(data.X, [[3, 4], [0, 1]])
    np.testing.assert_allclose(data.y, [1.5, -0.5])
    np.savez(tmp_path / "e.npz", X=X)
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        load_dataset(f"npz:{tmp_path / 'e.npz'}")
    with pytest.raises(ValueError, match="n=5000 but digits has only 1797"):
        load_dataset("digits", n=5000)
    binary = load_dataset("digits", n=50, targets="binary")
    np.testing.assert_array_equal(binary.y, np.where(binary.labels < 5, 1.0, -1.0))


def test_hardness_command(capsys):
    assert cli.main(["hardness", "--n", "32", "--d", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("(orthogonal)") == 2 and "WRONG" not in out
    assert "grow as n^1.00" in out


def test_idle_blas_threads_sleep_unless_the_environment_says_otherwise():
    code = "import os, corrtree; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.stdout.split() == ["4"], res.stderr
    env["OPENBLAS_THREAD_TIMEOUT"] = "20"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.stdout.split() == ["20"], res.stderr


DIGITS = ["--dataset", "digits", "--width", "1024", "--batch-size", "100", "--quiet"]


def test_adam_recipe_is_the_default_and_paper_one_option_away(tmp_path):
    for recipe, expect in (
        (None, ("cross_entropy", "adam", True)),
        ("paper", ("squared", "sgd", False)),
    ):
        out = tmp_path / str(recipe)
        extra = [] if recipe is None else ["--recipe", recipe]
        assert cli.main(["train", *DIGITS, "--steps", "5", "--out", str(out), *extra]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        r = metrics["recipe"]
        assert (r["loss"], r["optimizer"], r["train_output"]) == expect
        A = np.load(out / "model.npz")["a"]
        assert np.array_equal(np.abs(A), np.ones_like(A)) != expect[2]  # trained or +-1
        if recipe is None:
            assert metrics["lr"] == 1e-2  # a 5-step run: 1 / steps, clipped to 1e-2


def test_adam_default_lr_follows_the_run_length_and_is_kept_on_extension(tmp_path):
    from corrtree.app.run import adam_lr

    assert [adam_lr(s) for s in (1, 100, 500, 1000, 5000)] == [1e-2, 1e-2, 2e-3, 1e-3, 1e-3]
    out = tmp_path / "ext"
    assert cli.main(["train", *DIGITS, "--steps", "400", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["lr"] == 1 / 400
    assert cli.main(["train", "--resume", str(out), "--steps", "420", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["lr"] == 1 / 400


def test_val_fraction_scores_the_held_out_points(tmp_path, capsys):
    out = tmp_path / "val"
    args = ["train", *DIGITS, "--epochs", "3", "--val-fraction", "0.25", "--lr", "0.01"]
    assert cli.main([*args, "--eval-every", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held-out accuracy" in text and "(450)" in text
    metrics = json.loads((out / "metrics.json").read_text())
    ev = metrics["eval"]
    assert ev["step"] == [5, 10, 14, 15, 20, 25, 28, 30, 35, 40, 42]
    assert len(metrics["steps"]) == 42  # 1347 training points, batches of 100
    # the held-out points, scored again from the saved model
    from sklearn.model_selection import train_test_split

    data = load_dataset("digits")
    _, held = train_test_split(
        np.arange(data.n), test_size=0.25, random_state=0, stratify=data.labels
    )
    net = load_model(str(out))
    acc = np.mean(net.predict(data.X[held]).argmax(1) == data.labels[held])
    assert ev["accuracy"][-1] == pytest.approx(acc)
    # predict --split test scores exactly those held-out points, and says so
    assert cli.main(["predict", str(out), "--split", "test"]) == 0
    line = capsys.readouterr().out
    assert "n=450" in line and "held out" in line and f"accuracy={acc:.4f}" in line
    assert cli.main(["predict", str(out)]) == 0
    assert "n=1347" in capsys.readouterr().out


def test_split_test_is_refused_where_there_is_none(tmp_path, capsys):
    out = tmp_path / "plain"
    assert cli.main(["train", *DIGITS, "--steps", "2", "--out", str(out)]) == 0
    assert cli.main(["predict", str(out), "--split", "test"]) == 2
    assert "digits has no test split" in capsys.readouterr().err


def test_target_accuracy_stops_and_eval_errors(tmp_path, capsys):
    out = tmp_path / "target"
    args = ["train", *DIGITS, "--epochs", "20", "--val-fraction", "0.2", "--lr", "0.01"]
    assert cli.main([*args, "--target-accuracy", "0.8", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["stopped"] == "target"
    assert metrics["eval"]["accuracy"][-1] >= 0.8
    assert len(metrics["steps"]) < 20 * 15
    assert cli.main(["train", *DIGITS, "--eval", "test", "--out", str(tmp_path / "x")]) == 2
    assert "has no test split" in capsys.readouterr().err
    assert cli.main(["train", *DIGITS, "--patience", "2", "--out", str(tmp_path / "y")]) == 2
    assert "needs a held-out set" in capsys.readouterr().err


def _straight_and_interrupted(cfg, full, full_steps, part, part_steps, at):
    """Run ``cfg`` straight into ``full``, and into ``part`` stopped by an interrupt after
    step ``at`` (its checkpoints kept)."""
    from corrtree.app.run import RunConfig, run_training

    run_training(full, RunConfig(steps=full_steps, **cfg), progress=False, log=lambda *a: None)

    def stop(t, net, info):
        if t == at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(part, RunConfig(steps=part_steps, **cfg), callback=stop, progress=False,
                     log=lambda *a: None)  # fmt: skip


def test_adam_resume_and_extension_are_exact(tmp_path):
    """The optimizer's state travels with checkpoints and with the finished model: a run
    interrupted after a checkpoint, resumed, and extended, ends where the straight run does."""
    cfg = dict(dataset="digits", width=1024, batch_size=100, dtype="float64", lr=0.01,
               recipe="adam", checkpoint_every=5)  # fmt: skip
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    _straight_and_interrupted(cfg, full, 16, part, 12, at=7)
    assert "optim.W0.m" in np.load(os.path.join(part, "checkpoint.npz"))
    assert cli.main(["train", "--resume", part, "--quiet"]) == 0  # steps 5 .. 12
    assert os.path.exists(os.path.join(part, "optimizer.npz"))
    assert cli.main(["train", "--resume", part, "--steps", "16", "--quiet"]) == 0
    a, b = np.load(os.path.join(full, "model.npz")), np.load(os.path.join(part, "model.npz"))
    # float64: the same up to the order of sums over firing pairs after a new index
    np.testing.assert_allclose(a["W"], b["W"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a["a"], b["a"], rtol=1e-12, atol=1e-14)


def test_deep_runs_checkpoint_and_resume(tmp_path):
    """A deep run writes checkpoints, and resumed from one ends where the straight run does."""
    cfg = dict(dataset="digits", widths=[256, 128], batch_size=100, dtype="float64",
               recipe="paper", checkpoint_every=4)  # fmt: skip
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    _straight_and_interrupted(cfg, full, 10, part, 10, at=5)
    assert int(np.load(os.path.join(part, "checkpoint.npz"))["step"]) == 4
    assert cli.main(["train", "--resume", part, "--quiet"]) == 0
    a, b = np.load(os.path.join(full, "model.npz")), np.load(os.path.join(part, "model.npz"))
    for key in a.files:
        if a[key].dtype.kind in "fiu":  # the arrays (config_hash and network are names)
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-14, err_msg=key)
        else:
            assert a[key] == b[key] or key == "config_hash"
