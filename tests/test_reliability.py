"""Run folders that never lose or mix results, divergence that is caught, and a command line
that answers every bad input with one line and exit code 2 (run through the real console
script, as a user runs it)."""

import contextlib
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from corrtree import _io
from corrtree.app.run import accuracy

SMALL = ["--dataset", "synthetic", "--n", "40", "--d", "6", "--width", "300", "--quiet"]
ROOT = os.geteuid() == 0


SCRIPT = os.path.join(os.path.dirname(sys.executable), "corrtree")
COMMAND = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "corrtree"]


def corrtree(*args, env=None, cwd=None):
    """The console script, as a user runs it."""
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=300,
    )


def in_process(*args):
    """``corrtree ARGS`` run by the console script's own ``main`` in this process (no
    interpreter start-up: for catalogues of refusals); returns what ``corrtree`` does."""
    from corrtree.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, args)))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def started_until(args, path, timeout=180):
    """The console script started with ``args`` (stderr piped), returned once ``path``
    exists (or the process ended)."""
    proc = subprocess.Popen(
        [*COMMAND, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + timeout
    while not os.path.exists(path) and proc.poll() is None:
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)
    return proc


def one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("corrtree: error: "), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def snapshot(folder):
    """Name -> content hash of every file in a folder (to prove nothing changed)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not name.startswith(".corrtree.lock"):
            out[name] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    res = corrtree("train", *SMALL, "--steps", "4", "--out", out)
    assert res.returncode == 0, res.stderr
    return out


# --- one folder, one run ------------------------------------------------------------------
def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished):
    before = snapshot(finished)
    one_line_error(corrtree("train", "--resume", finished), "is finished (4 steps)")
    one_line_error(
        corrtree("train", "--resume", finished, "--width", "10", "--out", "x"),
        "--width, --out cannot be changed",
    )
    assert snapshot(finished) == before


def test_resume_extends_a_finished_run_on_the_same_schedule(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        corrtree("train", *SMALL, "--steps", "6", "--batch-size", "8", "--out", a).returncode == 0
    )
    assert (
        corrtree("train", *SMALL, "--steps", "3", "--batch-size", "8", "--out", b).returncode == 0
    )
    res = corrtree("train", "--resume", b, "--steps", "6", "--quiet")
    assert res.returncode == 0, res.stderr
    la = [s["loss"] for s in json.loads((a / "metrics.json").read_text())["steps"]]
    lb = [s["loss"] for s in json.loads((b / "metrics.json").read_text())["steps"]]
    np.testing.assert_allclose(lb, la, rtol=1e-12)
    with np.load(a / "model.npz") as fa, np.load(b / "model.npz") as fb:
        np.testing.assert_allclose(fb["W"], fa["W"], rtol=1e-12)
        np.testing.assert_array_equal(fb["a"], fa["a"])


def test_a_new_run_never_replaces_another_runs_results(finished, tmp_path):
    before = snapshot(finished)
    one_line_error(corrtree("train", *SMALL, "--out", finished), "--overwrite")
    one_line_error(corrtree("train", *SMALL, "--lr", "inf", "--out", finished))
    assert snapshot(finished) == before
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in before:
        (copy / name).write_bytes((finished / name).read_bytes())
    res = corrtree("train", *SMALL, "--steps", "2", "--seed", "5", "--out", copy, "--overwrite")
    assert res.returncode == 0, res.stderr
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["seed"] == 5 and len(json.loads((copy / "metrics.json").read_text())["steps"]) == 2


def test_a_locked_folder_is_refused_with_its_holder(tmp_path):
    out = tmp_path / "busy"
    with _io.FolderLock(str(out)):
        one_line_error(corrtree("train", *SMALL, "--out", out), "is in use by process")
    assert corrtree("train", *SMALL, "--steps", "1", "--out", out).returncode == 0


def test_checkpoint_of_another_run_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, "1"), (b, "2")):
        res = corrtree("train", *SMALL, "--steps", "3", "--seed", seed, "--out", out)
        assert res.returncode == 0
    state = _io.read_npz(str(a / "model.npz"))
    state["step"] = np.array(1)
    _io.write_npz(str(b / "checkpoint.npz"), **state)
    one_line_error(corrtree("train", "--resume", b, "--steps", "5"), "does not belong to the run")


def test_stale_temporary_files_are_cleaned_and_modes_follow_the_umask(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".tmp-dead.npz").write_bytes(b"half")
    code = (
        "import os, sys; os.umask(0o027); from corrtree.app.cli import main; "
        f"sys.exit(main({['train', *SMALL, '--steps', '1', '--out', str(out)]!r}))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not (out / ".tmp-dead.npz").exists()
    assert os.stat(out / "model.npz").st_mode & 0o777 == 0o640


# --- divergence ----------------------------------------------------------------------------
def test_divergence_stops_the_run_and_metrics_stay_strict_json(tmp_path):
    out = tmp_path / "div"
    res = corrtree(
        "train",
        *SMALL,
        "--lr",
        "1e30",
        "--dtype",
        "float32",
        "--steps",
        "30",
        "--checkpoint-every",
        "1",
        "--out",
        out,
    )
    one_line_error(res, "diverged at step", "lower the learning rate")
    text = (out / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert not (out / "model.npz").exists()
    if (out / "checkpoint.npz").exists():
        with np.load(out / "checkpoint.npz") as f:
            assert np.isfinite(f["W"]).all()


def test_dead_network_warns(tmp_path):
    res = corrtree(
        "train",
        "--dataset",
        "digits",
        "--n",
        "100",
        "--width",
        "256",
        "--steps",
        "3",
        "--threshold",
        "1000",
        "--quiet",
        "--out",
        tmp_path / "dead",
    )
    assert res.returncode == 0
    assert "no neuron fires on any point" in res.stderr  # --quiet hides progress, not this


# --- the catalogue of bad inputs: one line, exit 2, nothing lost ------------------------
def test_bad_paths_and_files_are_one_line_errors(tmp_path, finished):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(corrtree("train", *SMALL, "--out", afile))  # the real script once
    one_line_error(in_process("train", *SMALL, "--out", afile / "sub"), "is a file, not a folder")
    one_line_error(in_process("train", *SMALL, "--out", tmp_path / ("x" * 300)), "too long")
    one_line_error(in_process("demo", "--out", afile, "--quiet"))
    one_line_error(in_process("train", *SMALL[:-1], "--dataset", f"npz:{tmp_path}"), "is a folder")
    (tmp_path / "empty.npz").write_bytes(b"")
    one_line_error(
        in_process("train", "--dataset", f"npz:{tmp_path / 'empty.npz'}"), "not a readable"
    )
    np.savez(tmp_path / "zero.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    one_line_error(in_process("train", "--dataset", f"npz:{tmp_path / 'zero.npz'}"), "no data")
    (tmp_path / "empty.svm").write_text("")
    one_line_error(in_process("train", "--dataset", f"svmlight:{tmp_path / 'empty.svm'}"))
    fm = tmp_path / "fm"
    fm.mkdir()
    (fm / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    (fm / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    one_line_error(
        in_process("train", "--dataset", "fashion-mnist", "--data-dir", fm), "not a readable IDX"
    )
    with gzip.open(fm / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3, 0, 0]))
    one_line_error(in_process("train", "--dataset", "fashion-mnist", "--data-dir", fm), "truncated")
    broken = tmp_path / "broken"
    assert (
        in_process(
            "train", *SMALL, "--steps", "4", "--checkpoint-every", "2", "--out", broken
        ).returncode
        == 0
    )
    (broken / "checkpoint.npz").write_bytes(b"PK\x03\x04trunc")
    os.remove(broken / "model.npz")
    one_line_error(in_process("train", "--resume", broken), "not a readable")
    (broken / "config.json").write_text("[1, 2]")
    one_line_error(in_process("train", "--resume", broken), "expected an object")
    one_line_error(in_process("info", afile))
    before = snapshot(finished)
    res = in_process("bench", "gd", "--quick", "--out", afile / "r.json")
    one_line_error(res, "is a file, not a folder")
    assert "running" not in res.stderr  # refused before the benchmark ran
    assert snapshot(finished) == before


def test_checking_an_output_path_leaves_its_old_content(tmp_path):
    old = tmp_path / "results.json"
    old.write_text('{"old": 1}')
    _io.check_writable(str(old))
    assert old.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ["results.json"]


def test_no_errno_numbers_or_bare_keys(tmp_path):
    res = corrtree("info", tmp_path / "nope")
    one_line_error(res)
    assert "error: 2" not in res.stderr and "[Errno" not in res.stderr
    res = corrtree("train", *SMALL, "--engine-opt", "slak=1", "--engine", "certified")
    one_line_error(res, "unknown option slak for engine 'certified'")
    one_line_error(corrtree("train", *SMALL, "--engine-opt", "slack"), "is not KEY=VALUE")


@pytest.mark.skipif(ROOT, reason="root writes through permission bits")
def test_unwritable_out(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    one_line_error(corrtree("train", *SMALL, "--out", ro / "run"), "Permission denied")


def test_memory_limit_only_lowers(tmp_path, monkeypatch):
    from corrtree._validation import available_memory, check_memory

    monkeypatch.setenv("CORRTREE_MAX_MEMORY", str(1 << 62))
    with pytest.raises(MemoryError, match="is available"):
        check_memory(available_memory() * 2, "a huge thing")
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", "1000")
    with pytest.raises(MemoryError, match=r"only 1000 B"):
        check_memory(2000, "a small thing")
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", "lots")
    with pytest.raises(ValueError, match="CORRTREE_MAX_MEMORY must be a finite number of bytes"):
        check_memory(1, "x")


def test_model_goes_to_a_named_fallback_when_the_folder_fails(tmp_path, monkeypatch, capsys):
    from corrtree.app import cli
    from corrtree.app import run as run_mod

    real = _io.write_npz

    def failing(path, **arrays):
        if os.path.basename(path) == "model.npz":
            raise OSError(28, "No space left on device", path)
        return real(path, **arrays)

    monkeypatch.setattr(run_mod._io, "write_npz", failing)
    monkeypatch.setattr(run_mod.tempfile, "gettempdir", lambda: str(tmp_path))
    assert cli.main(["train", *SMALL, "--steps", "2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "the trained model was saved to" in err
    saved = err.split("saved to ")[1].strip()
    with np.load(saved) as f:
        assert f["W"].shape == (300, 6) and int(f["step"]) == 2


def test_sigterm_is_one_line_and_exit_143(tmp_path):
    import signal
    import time

    proc = subprocess.Popen(
        [
            *COMMAND,
            "train",
            "--dataset",
            "synthetic",
            "--n",
            "2000",
            "--d",
            "64",
            "--width",
            "20000",
            "--steps",
            "100000",
            "--quiet",
            "--out",
            str(tmp_path / "long"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == "corrtree: terminated"


def test_tree_queries_refuse_non_integer_ids():
    W = np.eye(3)
    tree = __import__("corrtree").CorrelationDTree(W, W)
    with pytest.raises(TypeError, match="integer ids"):
        tree.query_rows(np.array([0.7, 1.2]), 0.5)
    with pytest.raises(TypeError, match="integer ids"):
        tree.query_rows(np.array([True, False]), 0.5)
    indptr, ids, _ = tree.query_rows(np.array([2, 0]), 0.5)
    assert list(ids) == [2, 0] and list(indptr) == [0, 1, 2]


# --- results that used to be wrong ----------------------------------------------------------
def test_svmlight_integer_labels_are_classes(tmp_path):
    from corrtree.datasets import load_dataset

    lines = [f"{c} 1:{1 + i % 3} 2:{i % 5}" for i, c in enumerate([1, 2, 3, 1, 2, 3, 1, 2])]
    (tmp_path / "c.svm").write_text("\n".join(lines) + "\n")
    data = load_dataset(f"svmlight:{tmp_path / 'c.svm'}", task="classification")
    assert data.n_classes == 3 and data.y.shape == (8, 3)
    np.testing.assert_array_equal(data.labels, [0, 1, 2, 0, 1, 2, 0, 1])
    (tmp_path / "r.svm").write_text("0.5 1:1\n1.25 1:2\n-3.5 2:1\n")
    assert load_dataset(f"svmlight:{tmp_path / 'r.svm'}").labels is None


def test_binary_accuracy_uses_the_datasets_classes():
    labels = np.array([0, 1, 2, 3])  # a batch that happens to hold only low classes
    outputs = np.array([[1.0], [1.0], [1.0], [1.0]])  # +1: the lower half of 10 classes
    assert accuracy(outputs, labels, "binary", n_classes=10) == 1.0


def test_model_lost_when_the_fallback_fails_too(tmp_path, monkeypatch, capsys):
    from corrtree.app import cli
    from corrtree.app import run as run_mod

    real = _io.write_npz

    def failing(path, **arrays):
        if "model" in os.path.basename(path):
            raise OSError(28, "No space left on device", path)
        return real(path, **arrays)

    monkeypatch.setattr(run_mod._io, "write_npz", failing)
    monkeypatch.setattr(run_mod.tempfile, "gettempdir", lambda: str(tmp_path))
    out = tmp_path / "r"
    assert cli.main(["train", *SMALL, "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"could not be written to {out}" in err and "the trained weights are lost" in err
    assert str(tmp_path / "corrtree-model-") in err and "No space left on device" in err
