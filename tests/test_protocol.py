"""The engine protocol's seams: block initialisation, weights from outside, shards of neurons
summed by the step, declared options, engines written by users, memory estimates."""

import importlib.util
import itertools

import numpy as np
import pytest
from conftest import Stepper, unit_rows

import corrtree as ct
from corrtree.engines import ENGINES, engine_class, make_engine
from corrtree.engines.base import PairFiring, SparseEngine
from corrtree.nets import INIT_BLOCK, init_weights
from corrtree.training import DivergenceError, take_step

pytestmark = pytest.mark.boundscheck

EXACT = [e for e in ENGINES if e != "faiss" or importlib.util.find_spec("faiss")]


# --- initialisation by blocks ------------------------------------------------------------
def test_any_row_range_is_reproducible_on_its_own():
    d, m = 3, 2 * INIT_BLOCK + 37
    W, A = init_weights(d, (0, m), n_outputs=2, seed=5)
    for lo, hi in [(0, 1), (10, 20), (INIT_BLOCK - 3, INIT_BLOCK + 4), (m - 5, m), (7, 7)]:
        Wp, Ap = init_weights(d, (lo, hi), n_outputs=2, seed=5)
        np.testing.assert_array_equal(Wp, W[lo:hi])
        np.testing.assert_array_equal(Ap, A[lo:hi])
    cuts = [0, 5, INIT_BLOCK, INIT_BLOCK + 1, m]
    parts = [init_weights(d, (a, b), n_outputs=2, seed=5)[0] for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(np.concatenate(parts), W)
    W32, _ = init_weights(d, (0, m), n_outputs=2, seed=5, dtype=np.float32)
    np.testing.assert_array_equal(W32, W.astype(np.float32))
    assert set(np.unique(A)) == {-1.0, 1.0}
    assert abs(W.mean()) < 0.05 and abs(W.std() - 1) < 0.05
    assert not np.array_equal(init_weights(d, (0, 4), seed=6)[0], W[:4])
    net = ct.ShiftedReLUNet(d, m, seed=5, n_outputs=2)
    np.testing.assert_array_equal(net.W, W)
    np.testing.assert_array_equal(net.A, A)
    with pytest.raises(ValueError, match="rows must be a range"):
        init_weights(d, (5, 2))


def test_from_weights_and_public_second_layer(rng):
    W, A = rng.standard_normal((30, 4)), np.sign(rng.standard_normal((30, 2)))
    net = ct.ShiftedReLUNet.from_weights(W, A, threshold=0.5)
    assert (net.width, net.d, net.n_outputs, net.threshold) == (30, 4, 2, 0.5)
    assert net.W is W and net.A is A  # used as they are
    assert net.scale == pytest.approx(30**-0.5)
    X = unit_rows(rng, 7, 4)
    H = np.maximum(X @ W.T - 0.5, 0)
    np.testing.assert_allclose(net.predict(X), H @ A / np.sqrt(30), rtol=1e-12)
    one = ct.ShiftedReLUNet.from_weights(W, A[:, 0])
    assert one.A.shape == (30, 1) and one.a.shape == (30,)
    with pytest.raises(ValueError, match="A has 29 rows but W has 30"):
        ct.ShiftedReLUNet.from_weights(W, A[:29])
    back = ct.ShiftedReLUNet.from_state(net.state_dict())
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


def shards(net, cuts):
    """Networks over blocks of neurons of ``net``, each with the whole network's scale."""
    return [
        ct.ShiftedReLUNet.from_weights(
            net.W[a:b].copy(), net.A[a:b].copy(), net.threshold, scale=net.scale
        )
        for a, b in itertools.pairwise(cuts)
    ]


@pytest.mark.parametrize("engine", EXACT)
@pytest.mark.parametrize("batch", [None, 9])
def test_shards_summed_by_the_step_equal_one_engine(engine, batch, rng):
    """The step sums partial outputs over engines on disjoint blocks of neurons: uneven
    shards of any engine follow the single engine's trajectory, and dense's."""
    X = unit_rows(rng, 30, 5)
    Y = rng.standard_normal((30, 2))
    full = ct.ShiftedReLUNet(5, 301, seed=2, n_outputs=2)
    parts = shards(full, [0, 7, 150, 301])
    ref = Stepper("dense", full, X, Y)
    engines = [make_engine(engine, p, X) for p in parts]
    from corrtree.training import batch_schedule

    for t, rows in enumerate(batch_schedule(30, batch, 5, seed=1)):
        a = take_step(engines, Y, 0.7, rows)
        b = ref.step(0.7, rows)
        assert a.loss == pytest.approx(b.loss, rel=1e-12), t
        assert (a.fired_pairs, a.changed_neurons) == (b.fired_pairs, b.changed_neurons)
        np.testing.assert_allclose(a.outputs, b.outputs, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(
            np.concatenate([p.W for p in parts]), full.W, rtol=1e-12, atol=1e-14
        )


# --- options -----------------------------------------------------------------------------
def test_declared_options(rng):
    X = unit_rows(rng, 20, 3)
    net = ct.ShiftedReLUNet(3, 64)
    with pytest.raises(TypeError, match=r"unknown option slak for engine 'certified'; its "):
        make_engine("certified", net, X, {"slak": 0.3})
    with pytest.raises(TypeError, match=r"its options are: \(none\)"):
        make_engine("faiss" if "faiss" in EXACT else "wtree", net, X, {"x": 1})
    with pytest.raises(ValueError, match="option slack must be > 0, got 0"):
        make_engine("certified", net, X, {"slack": 0})
    with pytest.raises(TypeError, match="option slack must be float, got '0.3'"):
        make_engine("certified", net, X, {"slack": "0.3"})
    with pytest.raises(TypeError, match="mapping of names to values"):
        make_engine("certified", net, X, [("slack", 0.3)])
    eng = make_engine("certified", net, X, {"slack": 0.5, "blas_gradient": 0.0})
    assert eng.options.slack == 0.5 and eng.options.blas_gradient == 0.0
    cls = engine_class("certified", 1, 1)
    assert cls.parse_options(["slack=0.3", "blas-gradient=none", "block_bytes=4096"]) == {
        "slack": 0.3,
        "blas_gradient": None,
        "block_bytes": 4096,
    }
    with pytest.raises(ValueError, match=r"engine option block_bytes='x': expected int"):
        cls.parse_options(["block_bytes=x"])
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        cls.parse_options(["slack"])
    with pytest.raises(TypeError, match="unknown option nope"):
        cls.parse_options(["nope=1"])
    h = ct.train(
        net,
        X,
        np.ones(20),
        steps=2,
        lr=0.1,
        engine="certified",
        engine_options={"slack": 0.01, "rebuild_after": 0.0, "lazy": False},
    )
    assert h.stats["rebuilds"] >= 1
    with pytest.raises(TypeError, match="unknown option"):
        ct.train(
            net, X, np.ones(20), steps=1, lr=0.1, engine="dense", engine_options={"slack": 0.1}
        )


class BruteForceEngine(SparseEngine):
    """An engine as a user would write one: only ``find``; nothing to maintain."""

    name = "brute"

    def find(self, rows):
        Z = self.X[rows] @ self.net.W.T
        mask = Z > self.b
        ptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
        ids = np.nonzero(mask)[1].astype(np.int64)
        return ptr, ids, Z[mask]


def test_engine_class_written_by_a_user(rng):
    X = unit_rows(rng, 25, 4)
    y = rng.standard_normal(25)
    nets = [ct.ShiftedReLUNet(4, 150, seed=1) for _ in range(2)]
    h = ct.train(nets[0], X, y, steps=4, lr=0.5, engine=BruteForceEngine, batch_size=10)
    ref = ct.train(nets[1], X, y, steps=4, lr=0.5, engine="dense", batch_size=10)
    assert h.engine == "brute"
    np.testing.assert_allclose(nets[0].W, nets[1].W, rtol=1e-12)
    assert h.fired_pairs == ref.fired_pairs
    assert isinstance(make_engine(BruteForceEngine, nets[0], X).detect(None), PairFiring)
    with pytest.raises(TypeError, match="engine must be a name or an Engine subclass"):
        ct.train(nets[0], X, y, steps=1, lr=0.1, engine=3)


@pytest.mark.parametrize("engine", [*EXACT, "lsh"])
def test_every_engine_estimates_its_memory(engine, rng):
    X = unit_rows(rng, 60, 6)
    cls = engine_class(engine, 60, 500)
    est = cls.estimate_bytes(60, 500, 6, dtype=np.float64)
    eng = make_engine(engine, ct.ShiftedReLUNet(6, 500), X)
    take_step(eng, np.zeros((60, 1)), 0.1)
    assert est >= 0
    if eng.nbytes:  # the estimate is of the right order for what the engine holds
        assert eng.nbytes / 4 <= est <= 40 * eng.nbytes + 10**6, (est, eng.nbytes)


# --- blocked and chunked paths at tiny sizes ----------------------------------------------
@pytest.mark.parametrize("cls", [ct.CorrelationDTree, ct.CorrelationWTree])
def test_trees_built_in_tiny_chunks(cls, rng):
    """Leaf counts that are not powers of two, trees built a few at a time: padding is -inf
    (the invariant holds) and a negative threshold reports exactly the m (or n) real leaves."""
    W = rng.standard_normal((13, 3))
    X = unit_rows(rng, 11, 3)
    big = np.full((40, 40), 7.0)  # leave garbage in freed memory the trees may reuse
    del big
    tree = cls(W, X, chunk_bytes=1)
    assert tree.invariant_violations() == 0
    Z = X @ W.T if cls is ct.CorrelationDTree else W @ X.T
    for k in range(Z.shape[0]):
        np.testing.assert_array_equal(tree.query(k, -1e9), np.arange(Z.shape[1]))
        np.testing.assert_array_equal(tree.query(k, 0.1), np.flatnonzero(Z[k] > 0.1))
    tree.update_many(np.array([0, 5]), W[[0, 5]] * -1)
    assert tree.invariant_violations() == 0
    with pytest.raises(ValueError, match="chunk_bytes must be >= 1"):
        cls(W, X, chunk_bytes=0)


@pytest.mark.parametrize(
    "engine,options",
    [
        ("certified", {"block_bytes": 1}),
        ("dtree", {"chunk_bytes": 1}),
        ("wtree", {"chunk_bytes": 1}),
        ("dense", {"buffer_bytes": 1}),
    ],
)
def test_blocked_engines_match_dense(engine, options, rng):
    X = unit_rows(rng, 21, 4)
    y = 2 * rng.standard_normal(21)
    nets = [ct.ShiftedReLUNet(4, 77, seed=4) for _ in range(2)]
    a = ct.train(nets[0], X, y, steps=5, lr=0.8, engine=engine, engine_options=options)
    b = ct.train(nets[1], X, y, steps=5, lr=0.8, engine="dense")
    np.testing.assert_allclose(nets[0].W, nets[1].W, rtol=1e-10, atol=1e-13)
    assert a.fired_pairs == b.fired_pairs


# --- the network's weights are checked before any kernel runs -----------------------------
def test_train_validates_the_network(rng):
    X = unit_rows(rng, 10, 3)
    y = rng.standard_normal(10)
    net = ct.ShiftedReLUNet(3, 20)
    net.W[4, 1] = np.nan
    for engine in ("certified", "dense", "dtree"):
        with pytest.raises(ValueError, match=r"net.W contains 1 non-finite.*\(4, 1\)"):
            ct.train(net, X, y, steps=1, lr=0.1, engine=engine)
    net = ct.ShiftedReLUNet(3, 20)
    with pytest.raises(ValueError, match=r"W has shape \(10, 3\) but the network has width=20"):
        net.W = net.W[:10]
    net._W = net.W[:10]
    with pytest.raises(ValueError, match=r"net.W has shape \(10, 3\), expected \(20, 3\)"):
        ct.train(net, X, y, steps=1, lr=0.1)
    net = ct.ShiftedReLUNet(3, 20)
    net.W = net.W.astype(np.float32)  # converted to the network's dtype on assignment
    assert net.W.dtype == np.float64
    net._W = net.W.astype(np.float32)
    with pytest.raises(TypeError, match="net.W has dtype float32 but the network is float64"):
        ct.train(net, X, y, steps=1, lr=0.1)
    net = ct.ShiftedReLUNet(3, 20)
    ro = net.W.copy()
    ro.flags.writeable = False
    net.W = ro
    assert net.W.flags.writeable  # a read-only array is copied
    net._W = ro
    with pytest.raises(ValueError, match="C-contiguous, writable"):
        ct.train(net, X, y, steps=1, lr=0.1)


@pytest.mark.parametrize("engine", EXACT)
def test_divergence_is_caught(engine, rng):
    X = unit_rows(rng, 30, 4)
    y = rng.standard_normal(30)
    net = ct.ShiftedReLUNet(4, 200, seed=0)
    with pytest.raises(DivergenceError, match=r"training diverged at step \d+: .*lower the"):
        ct.train(net, X, y, steps=60, lr=1e30, engine=engine)
