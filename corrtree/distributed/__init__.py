"""Exact training with the neurons of one network sharded across a Ray cluster (see
``corrtree.distributed.net``). Ray is an optional extra: ``pip install 'corrtree[ray]'``;
nothing here imports it before it is used."""

from .cluster import Cluster, WorkerLostError, shard_ranges
from .net import ShardedNet
from .stepper import DistributedStepper

__all__ = ["Cluster", "DistributedStepper", "ShardedNet", "WorkerLostError", "shard_ranges"]
