"""The training step over a ``ShardedNet`` (one round trip per step: see
``corrtree.distributed``), registered as its stepper, and ``train(..., workers=k)``'s
sharding of a two-layer network."""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from .._validation import as_positive_int, fmt_bytes
from ..engines import engine_class
from ..engines.base import PHASES, StepInfo
from ..nets import ShiftedReLUNet
from ..training.losses import Squared
from ..training.step import Plan, Stepper, shard, stepper_for
from .cluster import Cluster, _ray, call
from .net import ShardedNet

__all__ = ["DistributedStepper"]


class DistributedStepper(Stepper):
    """The training step of ``corrtree.training.train`` over a ``ShardedNet``: one round trip per
    step (see the module docstring)."""

    @classmethod
    def check(cls, net, plan: Plan) -> None:
        plan.refuse_beyond_paper("a sharded network", (Squared,))

    def __init__(self, snet: ShardedNet, X, Y, plan: Plan):
        ray = _ray()
        self.snet, self.Y, self.lr, self.loss = snet, Y, plan.lr, plan.loss
        lo, hi = snet.ranges[0]
        engine = plan.engine
        options = engine_class(engine, X.shape[0], hi - lo).make_options(plan.engine_options)
        threads, max_memory = plan.threads, plan.max_memory
        if threads is None:
            threads = max(1, snet.cluster.cpus // snet.workers)
        if max_memory is None and os.environ.get("CORRTREE_MAX_MEMORY"):
            # the driver's limit holds on every worker, whatever environment they started in
            max_memory = int(float(os.environ["CORRTREE_MAX_MEMORY"]))
        t0 = time.perf_counter()
        self.X_ref = ray.put(X)
        setup = call(
            [a.setup.remote(self.X_ref, engine, options, threads, max_memory) for a in snet.actors]
        )
        self.preprocess_seconds = time.perf_counter() - t0
        self.name = setup[0]["engine"]
        self.pending = None  # (rows, F, pairs, seconds) of the batch already detected
        self.communication_seconds = 0.0
        self._ahead_spent = 0.0  # detect + forward of the pending batch, done last call
        self.shard_nbytes = [s["nbytes"] for s in setup]

    def _sum(self, results):
        F = None if results[0][0] is None else results[0][0].copy()
        for r in results[1:]:  # fixed order: shard 0, 1, ...
            if F is not None:
                F += r[0]
        seconds = {p: max(r[3][p] for r in results) for p in PHASES}
        return F, sum(r[1] for r in results), sum(r[2] for r in results), seconds

    def step(self, t: int, rows, next_rows, has_next: bool) -> StepInfo:
        actors, lr = self.snet.actors, self.lr
        t0 = time.perf_counter()
        if self.pending is None or not _same(self.pending[0], rows):
            self._ahead_spent = 0.0
            F, pairs, _, sec = self._sum(
                call([a.advance.remote(None, lr, rows, True) for a in actors], t)
            )
        else:
            _, F, pairs, sec = self.pending
        loss, E = self.loss(F, self.Y if rows is None else self.Y[rows])
        F_next, next_pairs, moved, sec2 = self._sum(
            call([a.advance.remote(E, lr, next_rows, has_next) for a in actors], t)
        )
        wall = time.perf_counter() - t0
        # This step: its detect and forward (from the call before, or the first call above)
        # and its backward and maintenance; the next batch's detect and forward belong to
        # the next step.
        ahead = {p: sec2[p] if p in ("detect", "forward") else 0.0 for p in PHASES}
        seconds = {p: sec[p] if p in ("detect", "forward") else sec2[p] for p in PHASES}
        self.communication_seconds += max(
            0.0, wall - sum(seconds.values()) - sum(ahead.values()) + self._ahead_spent
        )
        self._ahead_spent = sum(ahead.values()) if has_next else 0.0
        self.pending = (next_rows, F_next, next_pairs, ahead) if has_next else None
        return StepInfo(loss, pairs, moved, seconds, F, rows)

    def finite(self) -> bool:
        return self.snet.finite()

    def stats(self) -> dict:
        per = call([a.stats.remote() for a in self.snet.actors])
        out: dict = {}
        for s in per:
            for k, v in s.items():
                out[k] = out.get(k, 0) + v
        out["steps"] = per[0].get("steps", 0)
        out["workers"] = self.snet.workers
        out["communication_us"] = int(1e6 * self.communication_seconds)
        return out

    def describe_memory(self) -> str:
        return ", ".join(fmt_bytes(b) for b in self.shard_nbytes)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


stepper_for.register(ShardedNet, lambda net: DistributedStepper)


@shard.register(ShiftedReLUNet)
@contextlib.contextmanager
def _shard_net(net, workers, cluster, plan: Plan):
    """``net`` split over ``workers`` workers for one training run; the trained weights come
    back into ``net.W`` and the workers stop."""
    DistributedStepper.check(net, plan)
    workers = as_positive_int(workers or 1, "workers")
    own = cluster is None
    cluster = Cluster() if own else cluster
    try:
        snet = ShardedNet.from_net(net, workers, cluster)
        try:
            yield snet
            net.W[...] = snet.gather().W
        finally:
            snet.close()
    finally:
        if own:  # a local Ray started for this run stops with it
            cluster.shutdown()


@shard.register(ShardedNet)
@contextlib.contextmanager
def _sharded_already(net, workers, cluster, plan: Plan):
    if workers is not None and workers != net.workers:
        raise ValueError(
            f"the ShardedNet has {net.workers} workers; workers={workers} cannot change it"
        )
    yield net
