"""Runs sharded over Ray workers end as single-process runs do: SIGTERM is exit 143 with one
line, a killed driver leaves no Ray process behind, a lost cluster is one line naming the
checkpoint, --quiet keeps Ray's notices off stderr, and a killed two-worker run resumes bit
for bit where the uninterrupted run ends."""

import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("ray")

from test_reliability import corrtree, started_until  # noqa: E402

from corrtree.nets.store import load_folder  # noqa: E402

ARGS = ["--dataset", "digits", "--workers", "2", "--width", "300", "--engine", "dense",
        "--dtype", "float64", "--steps", "200", "--batch-size", "64",
        "--checkpoint-every", "7", "--quiet"]  # fmt: skip


def _weights(out):
    net = load_folder(str(out)).gather()
    return net.W, net.A


def _tree(root: int) -> dict[int, str]:
    """The live descendants of ``root`` (pid -> start time), from /proc."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if rest[0] != "Z":
                procs[int(name)] = (int(rest[1]), rest[19])
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (pp, start) in procs.items():
            if pp == parent and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def _alive(seen: dict[int, str]) -> list[int]:
    out = []
    for pid, start in seen.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] != "Z" and rest[19] == start:
            out.append(pid)
    return out


def _interrupted(out, sig):
    """A two-worker run sent ``sig`` after its first checkpoint; (returncode, stderr, the
    driver's descendants just before the signal)."""
    proc = started_until(["train", *ARGS, "--out", out], out / "checkpoint.json")
    seen = _tree(proc.pid)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    return proc.returncode, err, seen


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    res = corrtree("train", *ARGS, "--out", out)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # --quiet: not even Ray's notices
    return _weights(out)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signalled_two_worker_run_ends_cleanly_and_resumes_exactly(sig, straight, tmp_path):
    out = tmp_path / "run"
    code, err, seen = _interrupted(out, sig)
    if code == 0:
        pytest.skip("the run ended before the signal")
    if sig == signal.SIGTERM:
        assert code == 143 and err.strip() == "corrtree: terminated", err
    else:
        assert code == -9
    assert seen, "no Ray process was seen under the driver"
    deadline = time.time() + 15  # Ray's own helpers alone outlived a killed driver by ~1 min
    while _alive(seen) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(seen), "Ray processes outlived the driver"
    if sig != signal.SIGKILL:  # (resuming after each signal is the single-process test's)
        return
    res = corrtree("train", "--resume", out, "--quiet")
    assert res.returncode == 0, res.stderr
    for got, want in zip(_weights(out), straight, strict=True):
        np.testing.assert_array_equal(got, want)
