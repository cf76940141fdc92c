"""What docs/cli.md's "Run folders" promises, through the real console script: a refused or
failed run leaves the folder exactly as it was (or leaves no folder), resume takes nothing
from the command line but what it may, a run's files are never written over by another
command, and every answer is one line."""

import json
import os
import subprocess
import sys
import time

import numpy as np
from test_reliability import COMMAND, SMALL, corrtree, in_process, one_line_error, snapshot

from corrtree import SparseReLURegressor


def _finished(tmp_path, name="run", *extra):
    out = tmp_path / name
    res = corrtree("train", *SMALL, "--steps", "3", *extra, "--out", out)
    assert res.returncode == 0, res.stderr
    return out


def test_overwrite_keeps_the_old_run_until_the_new_one_can_start(tmp_path):
    out = _finished(tmp_path)
    before = snapshot(out)
    refused = [
        (["--dataset", "npz:" + str(tmp_path / "missing.npz")], {}),
        ([], {"CORRTREE_MAX_MEMORY": "1000"}),
        (["--seed", "-1"], {}),
    ]
    for args, env in refused:
        res = corrtree("train", *SMALL, *args, "--steps", "2", "--out", out, "--overwrite", env=env)
        assert res.returncode == 2, res.stderr
        assert snapshot(out) == before, args


def test_overwrite_never_deletes_a_config_that_is_not_a_runs(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    one_line_error(
        corrtree("train", *SMALL, "--out", out, "--overwrite"), "not a corrtree run configuration"
    )
    assert (out / "config.json").read_text() == '{"my": "settings"}'


def test_failed_runs_and_missing_resumes_leave_no_folder(tmp_path):
    one_line_error(in_process("train", "--resume", tmp_path / "none"), "does not exist")
    one_line_error(in_process("train", "--dataset", "npz:/nowhere.npz", "--out", tmp_path / "new"))
    assert not (tmp_path / "none").exists() and not (tmp_path / "new").exists()


def test_resume_refuses_options_given_with_their_default_values(tmp_path):
    out = _finished(tmp_path, "run", "--seed", "3")  # SMALL has --width 300
    before = snapshot(out)
    for option in (["--width", "4096"], ["--seed", "0"], ["--dtype", "float64"]):
        flag = option[0]
        one_line_error(in_process("train", "--resume", out, *option), f"{flag} cannot be changed")
    assert snapshot(out) == before


def test_a_checkpoint_without_its_configuration_hash_is_refused(tmp_path):
    out = tmp_path / "r"
    res = corrtree("train", *SMALL, "--steps", "6", "--checkpoint-every", "2", "--out", out)
    assert res.returncode == 0
    with np.load(out / "model.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "config_hash"}
    arrays["step"] = np.array(2)
    os.remove(out / "model.npz")
    np.savez(out / "checkpoint.npz", **arrays)
    one_line_error(corrtree("train", "--resume", out), "carries no configuration hash")


def test_info_and_train_describe_an_unfinished_or_diverged_run_alike(tmp_path):
    out = tmp_path / "r"
    res = corrtree("train", *SMALL, "--steps", "6", "--checkpoint-every", "2", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("summary")
    (out / "metrics.json").write_text(json.dumps(metrics))
    info = corrtree("info", out)
    assert info.returncode == 0 and "unfinished: 6 steps recorded" in info.stdout
    res = corrtree("train", *SMALL, "--out", out)
    one_line_error(res, "a run that did not finish: unfinished: 6 steps recorded")
    div = tmp_path / "div"
    res = corrtree("train", *SMALL, "--steps", "30", "--lr", "1e30", "--dtype", "float32",
                   "--out", div)  # fmt: skip
    assert res.returncode == 2
    info = corrtree("info", div)
    assert info.returncode == 0 and "diverged at step" in info.stdout


def test_damaged_run_files_are_one_line_errors_naming_them(tmp_path):
    out = _finished(tmp_path)
    (out / "config.json").write_text("[1, 2]")
    one_line_error(in_process("info", out), "config.json", "not a run configuration")
    one_line_error(in_process("predict", out), "config.json", "not a run configuration")
    out = _finished(tmp_path, "b")
    (out / "metrics.json").write_text("[1, 2]")
    one_line_error(in_process("info", out), "metrics.json", "not a corrtree metrics file")


def test_predictions_never_replace_a_runs_files(tmp_path):
    out = _finished(tmp_path)
    before = snapshot(out)
    for name in ("model.npz", "config.json"):
        one_line_error(in_process("predict", out, "--save", out / name), "is a file of the run")
    assert snapshot(out) == before
    res = corrtree("predict", out, "--save", out / "predictions.npz")
    assert res.returncode == 0 and (out / "predictions.npz").exists()


def test_another_process_temporary_file_is_left_alone(tmp_path):
    out = _finished(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / f".tmp-{sleeper.pid}-writing.npz"
        live.write_bytes(b"in progress")
        dead = out / ".tmp-999999999-left.npz"  # no such process
        dead.write_bytes(b"stale")
        res = corrtree("train", *SMALL, "--steps", "2", "--out", out, "--overwrite")
        assert res.returncode == 0, res.stderr
        assert live.exists() and not dead.exists()
    finally:
        sleeper.kill()


def test_argument_errors_are_one_line():
    one_line_error(corrtree("train", "--width", "x"), "--width", "corrtree train --help")
    one_line_error(corrtree("nope"), "invalid choice")


def test_a_closed_pipe_does_not_end_a_run(tmp_path):
    out = tmp_path / "r"
    cmd = " ".join([*map(str, COMMAND), "train", *SMALL[:-1], "--steps", "3", "--out", str(out)])
    res = subprocess.run(f"{cmd} | head -c 1", shell=True, capture_output=True, text=True,
                         executable="/bin/bash", timeout=300)  # fmt: skip
    assert "Broken pipe" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert (out / "model.npz").exists() and "summary" in json.loads(
        (out / "metrics.json").read_text()
    )


def test_demo_runs_twice_with_overwrite(tmp_path):
    args = ["demo", "--width", "256", "--steps", "2", "--quiet", "--out", tmp_path / "d"]
    assert corrtree(*args).returncode == 0
    one_line_error(corrtree(*args), "--overwrite")
    res = corrtree(*args, "--overwrite")
    assert res.returncode == 0, res.stderr


def test_hardness_with_one_size_fits_no_slope():
    res = corrtree("hardness", "--n", "1", "--d", "4")
    assert res.returncode == 0 and "no growth rate to fit" in res.stdout
    assert "grow as n^" not in res.stdout


def test_extreme_rows_are_normalised_and_fire(rng):
    X = rng.standard_normal((60, 5))
    y = X @ rng.standard_normal(5)
    for dtype, scale in (("float32", 1e20), ("float32", 1e-23), ("float64", 1e200)):
        est = SparseReLURegressor(width=256, steps=5, dtype=dtype, random_state=0)
        ref = SparseReLURegressor(width=256, steps=5, dtype=dtype, random_state=0)
        Xs = (X * scale).astype(dtype)  # float32 rows of 1e20: their squares overflow
        got = est.fit(Xs, y).predict(Xs)
        want = ref.fit(X.astype(dtype), y).predict(X.astype(dtype))
        assert np.any(got != 0), (dtype, scale)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_train_with_workers_stops_the_ray_it_started():
    code = (
        "import os; os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'\n"
        "import numpy as np, ray, corrtree as ct\n"
        "X = np.random.default_rng(0).standard_normal((30, 4))\n"
        "ct.train(ct.ShiftedReLUNet(4, 64), ct.normalize_rows(X), X[:, 0], steps=2, workers=2)\n"
        "print('initialised' if ray.is_initialized() else 'stopped')\n"
    )
    start = time.time()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("stopped"), (res.stdout, time.time() - start)


def test_messages_name_the_seed_the_link_and_the_option(tmp_path):
    one_line_error(in_process("train", *SMALL, "--seed", "-1", "--out", tmp_path / "s"),
                   "seed must be an integer >= 0, got -1")  # fmt: skip
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    one_line_error(in_process("train", *SMALL, "--out", tmp_path / "link"), "symbolic link")
    # auto: an option of the engine auto picks here (dense, at this size) is taken
    res = corrtree("train", *SMALL, "--steps", "2", "--engine-opt", "buffer_bytes=1000000",
                   "--out", tmp_path / "o")  # fmt: skip
    assert res.returncode == 0, res.stderr
    one_line_error(in_process("train", *SMALL, "--engine-opt", "nope=1", "--out", tmp_path / "n"),
                   "no engine has an option 'nope'")  # fmt: skip


def test_a_run_killed_between_its_model_and_its_summary_is_finished_by_resume(
    tmp_path, monkeypatch
):
    """The model is written, the kill lands before metrics.json gets its summary: info
    describes the run, --resume writes the summary (the model as the straight run's), and
    the run then extends."""
    from corrtree import _io
    from corrtree.app.cli import main
    from corrtree.app.run import read_config

    args = [*SMALL, "--steps", "6", "--checkpoint-every", "2", "--dtype", "float64"]
    straight = _finished(tmp_path, "straight", *args[len(SMALL) :])
    cfg = read_config(str(straight))
    write_json = _io.write_json

    def killed_at_the_summary(path, obj):
        if "summary" in obj:
            raise KeyboardInterrupt  # what SIGKILL leaves: the writes before, none after
        write_json(path, obj)

    out = tmp_path / "cut"
    monkeypatch.setattr(_io, "write_json", killed_at_the_summary)
    from corrtree.app.run import run_training

    try:
        run_training(str(out), cfg, progress=False, log=lambda *a: None)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(_io, "write_json", write_json)
    assert (out / "model.npz").exists() and (out / "checkpoint.npz").exists()
    assert "summary" not in json.loads((out / "metrics.json").read_text())
    info = corrtree("info", out)
    assert info.returncode == 0 and "not a corrtree run folder" not in info.stdout, info.stdout
    res = corrtree("train", "--resume", out)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["steps"] == 6 and not (out / "checkpoint.npz").exists()
    with np.load(out / "model.npz") as got, np.load(straight / "model.npz") as want:
        np.testing.assert_array_equal(got["W"], want["W"])
    assert main(["train", "--resume", str(out), "--steps", "8", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["summary"]["steps"] == 8
