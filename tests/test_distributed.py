"""Neurons sharded over Ray workers: equal to the single-process run after every step, saved
as shards, within each worker's memory, and recovered after a lost worker."""

import os
import signal

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conftest import unit_rows  # noqa: E402

import corrtree as ct  # noqa: E402
import corrtree._io  # noqa: E402, F401
from corrtree.app.run import RunConfig, load_model, run_training  # noqa: E402
from corrtree.distributed import Cluster, ShardedNet, WorkerLostError, shard_ranges  # noqa: E402
from corrtree.nets.store import ShardedModel, read_rows  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(num_cpus=4)
    assert c.owned
    yield c
    c.shutdown()
    assert not ray.is_initialized()


def _data(rng, n=120, d=12, C=3):
    return unit_rows(rng, n, d), rng.standard_normal((n, C))


def _trajectory(net, X, Y, **kw):
    """Loss and gathered W after every step."""
    Ws = []

    def grab(t, net, info):
        Ws.append((net.gather() if isinstance(net, ShardedNet) else net).W.copy())

    hist = ct.train(net, X, Y, callback=grab, **kw)
    return np.array(hist.loss), Ws


def test_shard_ranges():
    assert shard_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_ranges(5, 5) == [(k, k + 1) for k in range(5)]
    with pytest.raises(ValueError, match="cannot split 3 neurons over 4 workers"):
        shard_ranges(3, 4)


@pytest.mark.parametrize("batch", [None, 32])
def test_sharded_equals_single_process_every_step(cluster, rng, batch):
    X, Y = _data(rng)
    kw = {"steps": 6, "lr": 0.05, "batch_size": batch, "engine": "certified", "seed": 3}
    ref_loss, ref_W = _trajectory(ct.ShiftedReLUNet(12, 301, seed=7, n_outputs=3), X, Y, **kw)
    assert ref_loss[-1] < ref_loss[0]
    for workers in (1, 3):  # 301 neurons: uneven shards (2 and 4 workers: the run folder test)
        snet = ShardedNet(12, 301, seed=7, n_outputs=3, workers=workers, cluster=cluster)
        try:
            loss, Ws = _trajectory(snet, X, Y, **kw)
        finally:
            snet.close()
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        for W, R in zip(Ws, ref_W, strict=True):
            np.testing.assert_allclose(W, R, rtol=1e-12, atol=1e-13)


def test_workers_argument_trains_the_callers_network_and_is_deterministic(cluster, rng):
    X, Y = _data(rng)
    kw = {"steps": 4, "lr": 0.05, "batch_size": 40, "engine": "dense"}
    nets = [ct.ShiftedReLUNet(12, 101, seed=1, n_outputs=3) for _ in range(3)]
    ct.train(nets[0], X, Y, **kw)
    h1 = ct.train(nets[1], X, Y, workers=3, cluster=cluster, **kw)
    h2 = ct.train(nets[2], X, Y, workers=3, cluster=cluster, **kw)
    assert h1.stats["workers"] == 3
    np.testing.assert_allclose(nets[1].W, nets[0].W, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(nets[1].W, nets[2].W)  # fixed reduction order
    assert h1.loss == h2.loss


def test_save_load_and_reshard(cluster, rng, tmp_path):
    X, Y = _data(rng)
    snet = ShardedNet(12, 50, seed=2, n_outputs=3, workers=3, cluster=cluster)
    try:
        ct.train(snet, X, Y, steps=2, lr=0.05)
        full = snet.gather()
        index = snet.save(str(tmp_path), "model", step=2)
        np.testing.assert_allclose(snet.outputs(X), full.outputs(X), rtol=1e-12)
        # a second save replaces the first set of shard files
        snet.save(str(tmp_path), "model", step=2)
        assert len(os.listdir(tmp_path / "model.shards")) == 3
    finally:
        snet.close()
    model = ShardedModel(index)
    assert model.shards == [(0, 17), (17, 34), (34, 50)]
    np.testing.assert_allclose(model.outputs(X), full.outputs(X), rtol=1e-12)
    np.testing.assert_array_equal(model.gather().W, full.W)
    W, A = read_rows(index, 10, 40)  # across three shards
    np.testing.assert_array_equal(W, full.W[10:40])
    np.testing.assert_array_equal(A, full.A[10:40])
    again = ShardedNet.load(index, workers=2, cluster=cluster)
    try:
        np.testing.assert_array_equal(again.gather().W, full.W)
    finally:
        again.close()
    with pytest.raises(MemoryError, match="gathering"):
        model.gather(max_memory=100)


def test_bad_shard_is_a_clear_error(cluster, rng, tmp_path):
    snet = ShardedNet(12, 20, workers=2, cluster=cluster)
    index = snet.save(str(tmp_path), "model")
    snet.close()
    shard = sorted((tmp_path / "model.shards").iterdir())[1]
    shard.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="model shard"):
        ShardedModel(index).gather()
    with pytest.raises(ValueError, match="model shard"):
        ShardedNet.load(index, workers=2, cluster=cluster)


def test_unreachable_address_is_one_line():
    if ray.is_initialized():  # Cluster() reuses a running Ray: test the check alone
        from corrtree.distributed.cluster import _check_reachable

        with pytest.raises(ConnectionError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
            _check_reachable("127.0.0.1:9")
    with pytest.raises(ValueError, match="HOST:PORT"):
        from corrtree.distributed.cluster import _check_reachable

        _check_reachable("nohostport")


def _cfg(**kw):
    base = {"dataset": "synthetic", "n": 150, "d": 10, "width": 400, "steps": 8, "lr": 0.02}
    return RunConfig(**{**base, **kw})


def test_run_folder_sharded_resume_and_memory_limit(cluster, tmp_path, monkeypatch):
    single = run_training(str(tmp_path / "one"), _cfg(), progress=False, log=lambda *a: None)
    out = str(tmp_path / "four")
    summary = run_training(out, _cfg(workers=4), progress=False, log=lambda *a: None)
    assert summary["sharded"] and os.path.exists(os.path.join(out, "model.json"))
    assert not os.path.exists(os.path.join(out, "model.npz"))
    assert summary["final_loss"] == pytest.approx(single["final_loss"], rel=1e-12)
    model = load_model(out)
    assert isinstance(model, ShardedModel) and model.width == 400
    # extend on 2 workers (re-sharded from the 4 files) == 10 steps in one process
    run_training(out, resume=True, steps=10, workers=2, progress=False, log=lambda *a: None)
    ten = run_training(str(tmp_path / "ten"), _cfg(steps=10), progress=False, log=lambda *a: None)
    np.testing.assert_allclose(
        load_model(out).gather().W, load_model(str(tmp_path / "ten")).W, rtol=1e-12, atol=1e-13
    )
    assert ten["steps"] == 10
    # a width one process refuses is trained by 4 workers under the same limit
    wide = _cfg(width=4000, d=10, n=150, steps=2, engine="dense")
    from corrtree.app.run import _estimate_bytes

    full = _estimate_bytes(wide, 150, 10, 1)
    quarter = _estimate_bytes(_cfg(width=4000, workers=4, steps=2, engine="dense"), 150, 10, 1)
    assert quarter < full / 2
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", str((full + quarter) // 2))
    with pytest.raises(MemoryError, match="width=4000"):
        run_training(str(tmp_path / "w1"), wide, progress=False, log=lambda *a: None)
    wide.workers = 4
    run_training(str(tmp_path / "w4"), wide, progress=False, log=lambda *a: None)
    # ... and each worker enforces it too
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", "1000")
    snet = ShardedNet(10, 4000, workers=4, cluster=cluster)
    try:
        with pytest.raises(MemoryError, match="worker for neurons"):
            ct.train(snet, np.eye(10)[:5], np.zeros(5), steps=1, lr=0.1, engine="dense")
    finally:
        snet.close()


def test_killed_worker_recovers_from_checkpoint(cluster, tmp_path):
    cfg = _cfg(workers=3, checkpoint_every=3, steps=9, batch_size=50)
    ref = run_training(str(tmp_path / "ref"), cfg, progress=False, log=lambda *a: None)
    killed, logs = [], []

    def kill_one(t, net, info):
        if t == 4 and not killed:  # after the checkpoint at step 3
            killed.append(net.worker_pids()[1])
            os.kill(killed[0], signal.SIGKILL)

    out = str(tmp_path / "run")
    summary = run_training(out, cfg, callback=kill_one, progress=False, log=logs.append)
    assert killed and any("restarting every worker from step 3" in m for m in logs)
    metrics = ct._io.read_json(os.path.join(out, "metrics.json"))
    assert metrics["restarts"] == 1 and [s["step"] for s in metrics["steps"]] == list(range(9))
    assert summary["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-12)
    np.testing.assert_allclose(
        load_model(out).gather().W, load_model(str(tmp_path / "ref")).gather().W, rtol=1e-12
    )
    assert not os.path.exists(os.path.join(out, "checkpoint.json"))


def test_lost_worker_without_restarts_is_an_error(cluster, tmp_path):
    def kill(t, net, info):
        if t == 1:
            os.kill(net.worker_pids()[0], signal.SIGKILL)

    with pytest.raises(WorkerLostError, match="gave up after 0 restarts"):
        run_training(
            str(tmp_path / "r"),
            _cfg(workers=2, steps=4),
            max_restarts=0,
            callback=kill,
            progress=False,
            log=lambda *a: None,
        )
