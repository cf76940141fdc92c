"""Every tree query must equal brute force; every update must keep the tree invariants."""

import numpy as np
import pytest
from conftest import unit_rows

from corrtree import CorrelationDTree, CorrelationWTree

pytestmark = pytest.mark.boundscheck

STRUCTURES = [CorrelationDTree, CorrelationWTree]


# Brute force from the one product X W^T (a matrix-vector product may round differently
# by an ulp, which matters for thresholds placed exactly at a stored value).
def brute_dtree(W, X, i, tau):
    return np.flatnonzero((X @ W.T)[i] > tau)


def brute_wtree(W, X, r, tau):
    return np.flatnonzero((X @ W.T)[:, r] > tau)


def assert_queries_match(tree, W, X, tau):
    dtree = isinstance(tree, CorrelationDTree)
    brute = brute_dtree if dtree else brute_wtree
    rows = X.shape[0] if dtree else W.shape[0]
    indptr, indices = tree.query_all(tau)
    assert indptr.shape == (rows + 1,)
    for k in range(rows):
        want = brute(W, X, k, tau)
        got = tree.query(k, tau)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(indices[indptr[k] : indptr[k + 1]], want)


def assert_consistent(tree, W, X):
    assert tree.invariant_violations() == 0
    np.testing.assert_allclose(tree.correlations(), X @ W.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", STRUCTURES)
@pytest.mark.parametrize(
    "n,m,d", [(1, 1, 1), (1, 7, 3), (5, 1, 2), (6, 13, 1), (9, 16, 4), (17, 33, 5), (3, 100, 8)]
)
def test_query_matches_brute_force_random(cls, n, m, d, rng):
    W = rng.standard_normal((m, d))
    X = unit_rows(rng, n, d)
    tree = cls(W, X)
    assert (tree.n, tree.m, tree.d) == (n, m, d)
    assert_consistent(tree, W, X)
    Z = X @ W.T
    for tau in [Z.min() - 1, -0.3, 0.0, 0.5, 1.2, Z.max(), Z.max() + 1]:
        assert_queries_match(tree, W, X, tau)


@pytest.mark.parametrize("cls", STRUCTURES)
def test_ties_exactly_at_threshold_and_duplicates(cls, rng):
    # Small integers make every product exact, so values land exactly on the threshold.
    W = rng.integers(-2, 3, size=(11, 3)).astype(float)
    W[5] = W[2]  # duplicated neurons
    X = rng.integers(-2, 3, size=(7, 3)).astype(float)
    X[3] = 0.0  # an all-zero data row
    tree = cls(W, X)
    Z = X @ W.T
    for tau in np.unique(Z):
        assert_queries_match(tree, W, X, tau)
    # strictly greater: at tau = max nothing is reported
    indptr, _ = tree.query_all(Z.max())
    assert indptr[-1] == 0


@pytest.mark.parametrize("cls", STRUCTURES)
def test_all_zero_weights(cls, rng):
    W = np.zeros((6, 4))
    X = unit_rows(rng, 5, 4)
    tree = cls(W, X)
    assert_queries_match(tree, W, X, 0.0)
    assert_queries_match(tree, W, X, -1e-9)


@pytest.mark.parametrize("cls", STRUCTURES)
@pytest.mark.parametrize("n,m", [(1, 1), (4, 5), (13, 37), (8, 64)])
def test_random_updates_keep_invariants(cls, n, m, rng):
    d = 4
    W = rng.standard_normal((m, d))
    X = unit_rows(rng, n, d)
    tree = cls(W, X)
    for _ in range(40):
        kind = rng.integers(3)
        if kind == 0:
            r = rng.integers(m)
            W[r] = rng.standard_normal(d)
            tree.update(r, W[r])
        elif kind == 1:
            i = rng.integers(n)
            X[i] = unit_rows(rng, 1, d)[0]
            tree.update_data(i, X[i])
        else:
            k = rng.integers(1, m + 1)
            rs = rng.choice(m, size=k, replace=False)
            W[rs] = rng.standard_normal((k, d))
            tree.update_many(rs, W[rs])
        assert_consistent(tree, W, X)
    for tau in [-0.5, 0.0, 0.7]:
        assert_queries_match(tree, W, X, tau)
    for i in range(n):
        for r in range(m):
            assert tree.value(i, r) == pytest.approx(X[i] @ W[r], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("cls", STRUCTURES)
def test_update_can_lower_the_maximum(cls):
    # Lowering the leaf that held the max must propagate to the root.
    W = np.array([[3.0], [1.0], [2.0]])
    X = np.array([[1.0], [0.5]])
    tree = cls(W, X)
    W[0] = -5.0
    tree.update(0, W[0])
    assert_consistent(tree, W, X)
    assert_queries_match(tree, W, X, 1.5)


@pytest.mark.parametrize("cls", STRUCTURES)
def test_float32_structure(cls, rng):
    W = rng.standard_normal((20, 6)).astype(np.float32)
    X = unit_rows(rng, 8, 6).astype(np.float32)
    tree = cls(W, X)
    assert tree.dtype == np.float32
    Z = X @ W.T  # float32 products, as the tree computes them
    np.testing.assert_allclose(tree.correlations(), Z, rtol=1e-6, atol=1e-6)
    assert tree.invariant_violations() == 0


def test_stats_count_work(rng):
    W = rng.standard_normal((64, 3))
    X = unit_rows(rng, 4, 3)
    tree = CorrelationDTree(W, X)
    s = tree.stats()
    assert s["inner_products"] == 64 * 4
    tree.reset_stats()
    tree.query(0, 10.0)  # above everything: only the root is looked at
    assert tree.stats()["nodes_visited"] == 1
    tree.update(3, W[3] * 2)
    s = tree.stats()
    assert s["inner_products"] == 4 and s["leaves_updated"] == 4


# --- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", STRUCTURES)
def test_errors(cls, rng):
    W = rng.standard_normal((5, 3))
    X = unit_rows(rng, 4, 3)
    with pytest.raises(ValueError, match="W has 3 columns but X has 2"):
        cls(W, X[:, :2])
    bad = W.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"W contains 1 non-finite.*\(1, 2\)"):
        cls(bad, X)
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(ValueError, match="X contains 1 non-finite"):
        cls(W, Xi)
    with pytest.raises(ValueError, match="must be 2-dimensional"):
        cls(W[0], X)
    with pytest.raises(TypeError, match="real numbers"):
        cls(W.astype(complex), X)
    with pytest.raises(TypeError, match="must be an array"):
        cls("W", X)
    with pytest.raises(ValueError, match="at least one row"):
        cls(W[:0], X)
    tree = cls(W, X)
    rows = 4 if cls is CorrelationDTree else 5
    with pytest.raises(IndexError, match=f"out of range for size {rows}"):
        tree.query(rows, 0.0)
    with pytest.raises(IndexError, match="out of range"):
        tree.query(-1, 0.0)
    with pytest.raises(ValueError, match="threshold must be finite"):
        tree.query(0, np.nan)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        tree.query_all("0.5")
    with pytest.raises(IndexError, match="r=5 is out of range"):
        tree.update(5, W[0])
    with pytest.raises(ValueError, match="w has 2 entries but the structure has d=3"):
        tree.update(0, W[0, :2])
    with pytest.raises(ValueError, match="w contains"):
        tree.update(0, [np.nan, 0, 0])
    with pytest.raises(IndexError, match="i=9 is out of range"):
        tree.update_data(9, X[0])
    with pytest.raises(TypeError, match="i must be an integer"):
        tree.value(0.5, 0)
    with pytest.raises(IndexError, match=r"neuron ids must be in \[0, 5\)"):
        tree.update_many([0, 7], W[:2])
    with pytest.raises(ValueError, match="duplicates"):
        tree.update_many([1, 1], W[:2])
    with pytest.raises(ValueError, match=r"W_new has shape \(1, 3\)"):
        tree.update_many([1, 2], W[:1])


def test_memory_estimate_refuses_huge_structures(rng):
    W = rng.standard_normal((1000, 2))
    X = unit_rows(rng, 100, 2)
    with pytest.raises(MemoryError, match=r"needs about 1\.6 MiB but only 1\.0 KiB"):
        CorrelationDTree(W, X, max_memory=1024)
    with pytest.raises(MemoryError, match="CorrelationWTree with n=100, m=1000"):
        CorrelationWTree(W, X, max_memory=1024)
