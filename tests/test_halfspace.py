"""The SYZ21-style ball tree: half-space queries against brute force, balls that keep
containing moved neurons, and pruning that works in low dimension and fails in high."""

import numpy as np
import pytest
from conftest import Stepper, unit_rows

import corrtree as ct
from corrtree._kernels import balltree as B
from corrtree.engines import make_engine

pytestmark = pytest.mark.boundscheck


def brute(W, X, b):
    Z = X @ W.T
    return [np.flatnonzero(z > b) for z in Z], Z


@pytest.mark.parametrize("m,d,leaf", [(1, 3, 4), (7, 2, 1), (300, 2, 8), (1000, 16, 32)])
def test_ball_tree_queries_match_brute_force(m, d, leaf, rng):
    W = rng.standard_normal((m, d))
    X = unit_rows(rng, 40, d)
    net = ct.ShiftedReLUNet(d, m, threshold=0.8, seed=0)
    net.W = W
    eng = make_engine("halfspace", net, X, {"leaf_size": leaf})
    for b in (-10.0, 0.0, 0.8, 2.0, 100.0):
        eng.b = np.float64(b)
        ptr, ids, val = eng.find(np.arange(40, dtype=np.int64))
        ref, Z = brute(W, X, b)
        for i in range(40):
            np.testing.assert_array_equal(ids[ptr[i] : ptr[i + 1]], ref[i])
            np.testing.assert_allclose(
                val[ptr[i] : ptr[i + 1]], Z[i, ref[i]], rtol=1e-12, atol=1e-12
            )


def test_every_ball_contains_its_neurons_after_moves(rng):
    W = rng.standard_normal((500, 5))
    tree = B.BallTree(*B.build(W, 16))
    perm, lo, hi, left, right, parent, center, radius, leaf_of = tree
    moved = rng.choice(500, 100, replace=False).astype(np.int64)
    W[moved] += 0.5 * rng.standard_normal((100, 5))
    B.grow_balls(W, moved, tree)
    for node in range(lo.size):
        members = W[perm[lo[node] : hi[node]]]
        dist = np.linalg.norm(members - center[node], axis=1)
        assert dist.max() <= radius[node] * (1 + 1e-12), node
    assert (np.sort(perm) == np.arange(500)).all()
    assert all(perm[k] in perm[lo[leaf_of[r]] : hi[leaf_of[r]]] for k, r in enumerate(perm))


def test_pruning_in_low_dimension_only(rng):
    """Low d: a query visits a small part of the tree. High d: nearly all of it."""
    visited = {}
    for d in (2, 256):
        X = unit_rows(rng, 20, d)
        net = ct.ShiftedReLUNet(d, 4096, seed=0)
        eng = Stepper("halfspace", net, X, np.zeros((20, 1)))
        eng.detect(np.arange(20, dtype=np.int64))
        visited[d] = eng.counters["nodes_visited"] / (20 * eng.tree.lo.size)
    assert visited[2] < 0.4 and visited[256] > 0.9, visited


def test_rebuild_after_m_moves(rng):
    X = unit_rows(rng, 30, 3)
    y = 3 * rng.standard_normal(30)
    net = ct.ShiftedReLUNet(3, 50, threshold=0.3, seed=0)
    h = ct.train(net, X, y, steps=12, lr=1.0, engine="halfspace")
    assert h.stats["rebuilds"] > 1


def test_leaf_size_error(rng):
    net = ct.ShiftedReLUNet(3, 10)
    with pytest.raises(ValueError, match="option leaf_size must be >= 1, got 0"):
        Stepper("halfspace", net, unit_rows(rng, 5, 3), np.zeros((5, 1)), leaf_size=0)
