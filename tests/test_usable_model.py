"""A model people can use: the task declared, class labels and preprocessing saved with the
model, held-out points that stay held out, prediction on new files, and ``corrtree.load``
(with ``to_torch``) giving what the run computed; through the console script and the API."""

import json
import os

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_digits
from test_reliability import corrtree, one_line_error

import corrtree as ct
from corrtree.nets import Model, Preprocess, ShiftedReLUMLP, store

BASE = ["--width", "256", "--steps", "30", "--quiet"]


def _npz(path, X, y=None):
    np.savez(path, X=X, **({} if y is None else {"y": y}))
    return path


def _train(out, *args):
    res = corrtree("train", *BASE, *args, "--out", out)
    assert res.returncode == 0, res.stderr
    return json.loads((out / "metrics.json").read_text())


def test_whole_number_targets_need_a_declared_task(tmp_path):
    X, _ = load_digits(return_X_y=True)
    y = np.where(np.arange(len(X)) % 3 == 0, 3, np.where(np.arange(len(X)) % 3 == 1, 5, 7))
    data = _npz(tmp_path / "d.npz", X[:300], y[:300])
    one_line_error(
        corrtree("train", *BASE, "--dataset", f"npz:{data}", "--out", tmp_path / "a"),
        "--task classification or --task regression",
    )
    assert not (tmp_path / "a").exists()
    metrics = _train(tmp_path / "c", "--dataset", f"npz:{data}", "--task", "classification")
    model = ct.load(str(tmp_path / "c"))
    assert model.task == "classification" and list(model.classes_) == [3, 5, 7]
    assert model.net.n_outputs == 3
    # the labels come back as given, and the score matches the run's own
    acc = float(np.mean(model.predict(X[:300]) == y[:300]))
    assert acc == pytest.approx(metrics["final_accuracy"], abs=1e-12)
    _train(tmp_path / "r", "--dataset", f"npz:{data}", "--task", "regression")
    reg = ct.load(str(tmp_path / "r"))
    assert reg.task == "regression" and reg.net.n_outputs == 1 and reg.classes_ is None
    # a file without one of the classes is scored with the model's own labels
    few = _npz(tmp_path / "few.npz", X[:30][y[:30] != 7], y[:30][y[:30] != 7])
    res = corrtree("predict", tmp_path / "c", "--data", few)
    assert res.returncode == 0 and "accuracy=" in res.stdout, res.stderr


def test_binary_labels_keep_their_sign(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    y = np.where(y == 1, 1, -1)
    data = _npz(tmp_path / "b.npz", X, y)
    metrics = _train(
        tmp_path / "b", "--dataset", f"npz:{data}", "--task", "classification",
        "--targets", "binary", "--standardize",
    )  # fmt: skip
    model = ct.load(str(tmp_path / "b"))
    assert list(model.classes_) == [-1, 1] and model.net.n_outputs == 1
    sign = np.where(model.outputs(X)[:, 0] > 0, 1, -1)
    assert np.mean(sign == y) == pytest.approx(metrics["final_accuracy"], abs=1e-12)
    assert metrics["final_accuracy"] > 0.9  # standardised, breast cancer separates well
    np.testing.assert_array_equal(model.predict(X), sign)


def test_test_size_points_stay_out_and_are_what_split_test_scores(tmp_path):
    out = tmp_path / "t"
    _train(out, "--test-size", "0.25")
    res = corrtree("predict", out, "--split", "test")
    assert res.returncode == 0, res.stderr
    assert "0.25 of the points held out for testing (450)" in res.stdout
    assert "n=450" in res.stdout
    res = corrtree("predict", out)
    assert "n=1347" in res.stdout  # 1797 - 450: the training points only
    one_line_error(corrtree("predict", _trained(tmp_path), "--split", "test"), "--test-size")


def _trained(tmp_path):
    out = tmp_path / "plain"
    if not out.exists():
        _train(out)
    return out


def test_preprocessing_is_saved_and_applied_to_raw_inputs(tmp_path):
    X, labels = load_digits(return_X_y=True)
    metrics = _train(tmp_path / "s", "--standardize")
    model = ct.load(str(tmp_path / "s"))
    assert model.preprocess.standardize and model.preprocess.normalize
    raw = X / 16.0  # digits as corrtree loads them, before any preprocessing
    acc = float(np.mean(model.predict(raw) == labels))
    assert acc == pytest.approx(metrics["final_accuracy"], abs=1e-12)
    P = model.predict_proba(raw)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(model.classes_[P.argmax(axis=1)], model.predict(raw))


def test_models_saved_before_the_version_field_still_load(tmp_path):
    net = ct.ShiftedReLUNet(5, 40, seed=1)
    np.savez(tmp_path / "old.npz", **net.state_dict())  # no format_version, task, prep
    model = store.load_model(str(tmp_path / "old.npz"))
    assert model.task == "regression" and model.preprocess.normalize
    X = np.random.default_rng(0).standard_normal((7, 5))
    np.testing.assert_allclose(model.predict(X), net.predict(ct.normalize_rows(X)), rtol=1e-12)
    np.savez(tmp_path / "new.npz", **net.state_dict(), format_version=np.array(99))
    with pytest.raises(ValueError, match="version 99"):
        store.load(str(tmp_path / "new.npz"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("deep", [False, True])
def test_to_torch_computes_the_same_outputs(dtype, deep, rng):
    torch = pytest.importorskip("torch")
    X = rng.standard_normal((40, 12)) * 3 + 1
    net = (
        ShiftedReLUMLP(12, (50, 30), n_outputs=3, dtype=dtype, seed=2)
        if deep
        else ct.ShiftedReLUNet(12, 80, n_outputs=3, dtype=dtype, seed=2)
    )
    prep = Preprocess.fit(X, standardize=True)
    model = Model(net, prep, "classification", np.array(["a", "b", "c"]), "cross_entropy")
    module = model.to_torch()
    got = module(torch.tensor(X)).detach().numpy()
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, model.outputs(X), rtol=tol, atol=tol)


def test_predict_new_files(tmp_path):
    X, labels = load_digits(return_X_y=True)
    out = _trained(tmp_path)
    raw = X / 16.0
    model = ct.load(str(out))
    want = model.predict(raw[:50])
    # npz without y
    res = corrtree("predict", out, "--data", _npz(tmp_path / "x.npz", raw[:50]),
                   "--save", tmp_path / "p.npz")  # fmt: skip
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "p.npz") as f:
        np.testing.assert_array_equal(f["predictions"], want)
    # svmlight whose last feature is zero everywhere: the model's feature count is used
    Z = raw[:50].copy()
    Z[:, -1] = 0
    dump_svmlight_file(Z, labels[:50], str(tmp_path / "z.svm"))
    res = corrtree("predict", out, "--data", tmp_path / "z.svm")
    assert res.returncode == 0 and "(50 points): accuracy=" in res.stdout, res.stderr
    # CSV, the target last
    np.savetxt(tmp_path / "x.csv", np.column_stack([raw[:50], labels[:50]]), delimiter=",")
    res = corrtree("predict", out, "--data", tmp_path / "x.csv")
    acc = float(np.mean(want == labels[:50]))
    assert res.returncode == 0 and f"accuracy={acc:.4f}" in res.stdout, res.stdout
    one_line_error(corrtree("predict", out, "--data", tmp_path / "none.csv"), "does not exist")


def test_default_run_folders_are_fresh_and_latest_points_at_the_newest(tmp_path):
    for _ in range(2):
        res = corrtree("train", *BASE, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    runs = sorted(p for p in os.listdir(tmp_path / "runs") if p != "latest")
    assert len(runs) == 2
    assert os.readlink(tmp_path / "runs" / "latest") == runs[-1]
    assert ct.load(str(tmp_path / "runs" / "latest")).task == "classification"


def test_long_passes_draw_progress_bars(tmp_path, monkeypatch, capsys):
    """Index builds and scoring passes draw bars on stderr while switched on (``progress``,
    the command line without --quiet); here every pass counts as long."""
    from corrtree import _progress
    from corrtree.app.cli import main

    monkeypatch.setattr(_progress, "DELAY", 0.0)
    X, labels = load_digits(return_X_y=True)
    X = ct.normalize_rows(X)
    for engine, built in (("certified", "indexing"), ("dtree", "building the CorrelationDTree")):
        net = ct.ShiftedReLUNet(64, 512, n_outputs=10, seed=0)
        ct.train(net, X, labels, steps=2, batch_size=64, engine=engine, progress=True,
                 loss="cross_entropy", eval=(X[:100], labels[:100]))  # fmt: skip
        err = capsys.readouterr().err
        assert built in err and f"train [{engine}]" in err and "scoring" in err, err
        ct.train(net, X, labels, steps=1, engine=engine, loss="cross_entropy")
        assert capsys.readouterr().err == ""  # progress off: nothing drawn
    deep = ShiftedReLUMLP(64, [128, 64], n_outputs=10, seed=0)
    with _progress.shown():
        deep.predict(X)
    assert "scoring" in capsys.readouterr().err
    out = _trained(tmp_path)
    data = _npz(tmp_path / "x.npz", X[:30] * 16)
    assert main(["predict", str(out), "--data", str(data)]) == 0
    assert "scoring" in capsys.readouterr().err
