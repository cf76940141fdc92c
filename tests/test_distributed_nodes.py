"""A simulated multi-node Ray cluster on this machine (loopback only): removing a node that
holds a worker mid-run is recovered from the last checkpoint, with the uninterrupted run's
weights."""

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster as RayCluster  # noqa: E402

from corrtree.app.run import RunConfig, load_model, run_training  # noqa: E402


@pytest.fixture
def nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = RayCluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    node = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, node
    ray.shutdown()
    cluster.shutdown()


def test_removed_node_recovers_from_checkpoint(nodes, tmp_path):
    cluster, node = nodes
    cfg = {"dataset": "synthetic", "n": 120, "d": 8, "width": 300, "lr": 0.02}
    cfg = RunConfig(**cfg, steps=8, batch_size=40, workers=2, checkpoint_every=2)
    quiet = {"progress": False, "log": lambda *a: None}
    run_training(str(tmp_path / "ref"), cfg, **quiet)
    removed, logs = [], []

    def remove(t, net, info):
        if t == 4 and not removed:
            assert node.node_id in {w["node"] for w in net.workers_info}  # SPREAD placed one
            cluster.remove_node(node)
            removed.append(t)

    out = str(tmp_path / "run")
    run_training(out, cfg, callback=remove, progress=False, log=logs.append)
    assert removed and any("restarting every worker from step 4" in m for m in logs)
    np.testing.assert_allclose(
        load_model(out).gather().W, load_model(str(tmp_path / "ref")).gather().W, rtol=1e-12
    )
