"""Every engine must follow the dense float64 trajectory after every step."""

import importlib.util

import numpy as np
import pytest
from conftest import Stepper, unit_rows

import corrtree as ct
from corrtree.engines import choose_engine, make_engine
from corrtree.training import batch_schedule

pytestmark = pytest.mark.boundscheck

SPARSE_ENGINES = [
    e for e in ct.ENGINES if e != "dense" and (e != "faiss" or importlib.util.find_spec("faiss"))
]


def run(
    engine, X, y, *, width, steps, lr, threshold=None, seed=3, n_outputs=1, dtype=np.float64, **kw
):
    net = ct.ShiftedReLUNet(
        X.shape[1], width, threshold=threshold, seed=seed, n_outputs=n_outputs, dtype=dtype
    )
    weights = []
    hist = ct.train(
        net,
        X,
        y,
        steps=steps,
        lr=lr,
        engine=engine,
        callback=lambda t, net, info: weights.append(net.W.copy()),
        **kw,
    )
    return net, hist, weights


def assert_same_trajectory(engine, X, y, **kw):
    _, h_ref, w_ref = run("dense", X, y, **kw)
    _, h, w = run(engine, X, y, **kw)
    assert len(w) == len(w_ref) == kw["steps"]
    for t, (a, b) in enumerate(zip(w, w_ref, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
    np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-9, atol=1e-12)
    assert h.fired_pairs == h_ref.fired_pairs
    assert h.changed_neurons == h_ref.changed_neurons
    return h_ref


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
@pytest.mark.parametrize("n,d,width", [(1, 3, 40), (30, 8, 257), (64, 5, 1024), (20, 1, 33)])
def test_engines_match_dense_every_step(engine, n, d, width, rng):
    X = unit_rows(rng, n, d)
    y = rng.standard_normal(n)
    h = assert_same_trajectory(engine, X, y, width=width, steps=6, lr=0.7)
    assert h.loss[-1] < h.loss[0]


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
def test_no_neuron_fires(engine, rng):
    X = unit_rows(rng, 10, 4)
    y = rng.standard_normal(10)
    net0 = ct.ShiftedReLUNet(4, 50, threshold=100.0, seed=0)
    W0 = net0.W.copy()
    net, h, _ = run(engine, X, y, width=50, steps=3, lr=1.0, threshold=100.0, seed=0)
    assert h.fired_pairs == [0, 0, 0] and h.changed_neurons == [0, 0, 0]
    np.testing.assert_array_equal(net.W, W0)
    assert h.loss[0] == pytest.approx(0.5 * np.sum(y**2))


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
def test_every_neuron_fires(engine, rng):
    X = unit_rows(rng, 12, 3)
    y = rng.standard_normal(12)
    # threshold 0 with all-positive weights and data: every pair fires
    X = np.abs(X)
    net = ct.ShiftedReLUNet(3, 20, threshold=0.0, seed=0)
    net.W = np.abs(net.W) + 0.1
    ref = ct.ShiftedReLUNet(3, 20, threshold=0.0, seed=0)
    ref.W = net.W.copy()
    h = ct.train(net, X, y, steps=4, lr=0.05, engine=engine)
    h_ref = ct.train(ref, X, y, steps=4, lr=0.05, engine="dense")
    assert h.fired_pairs[0] == 12 * 20
    np.testing.assert_allclose(net.W, ref.W, rtol=1e-9)
    np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-9)


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
def test_small_integer_ties(engine, rng):
    # Integer data and weights: correlations land exactly on the threshold b = 1.
    X = rng.integers(-1, 2, size=(15, 4)).astype(float)
    y = rng.integers(-2, 3, size=15).astype(float)
    net = ct.ShiftedReLUNet(4, 30, threshold=1.0, seed=0)
    net.W = rng.integers(-2, 3, size=(30, 4)).astype(float)
    ref = ct.ShiftedReLUNet(4, 30, threshold=1.0, seed=0)
    ref.W = net.W.copy()
    h = ct.train(net, X, y, steps=1, lr=0.25, engine=engine)
    h_ref = ct.train(ref, X, y, steps=1, lr=0.25, engine="dense")
    assert h.fired_pairs == h_ref.fired_pairs
    np.testing.assert_allclose(net.W, ref.W, rtol=1e-12)


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
def test_multi_output_matches_dense(engine, rng):
    X = unit_rows(rng, 25, 6)
    Y = rng.standard_normal((25, 3))
    assert_same_trajectory(engine, X, Y, width=300, steps=5, lr=0.5, n_outputs=3)


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
def test_minibatch_sgd_matches_dense(engine, rng):
    X = unit_rows(rng, 37, 5)
    y = rng.standard_normal(37)
    h = assert_same_trajectory(engine, X, y, width=200, steps=9, lr=0.5, batch_size=8, seed=4)
    assert h.batch_size == 8


@pytest.mark.parametrize("engine", SPARSE_ENGINES)
def test_float32_close_to_float64(engine, rng):
    X = unit_rows(rng, 40, 6)
    y = rng.standard_normal(40)
    _, h64, _ = run("dense", X, y, width=500, steps=5, lr=0.5)
    net, h32, _ = run(engine, X, y, width=500, steps=5, lr=0.5, dtype=np.float32)
    assert net.W.dtype == np.float32
    np.testing.assert_allclose(h32.loss, h64.loss, rtol=1e-4)


def test_dense_engine_is_the_formula(rng):
    """The reference itself against the paper's gradient written out pair by pair."""
    n, d, m, b, lr = 6, 3, 9, 0.2, 0.3
    X = unit_rows(rng, n, d)
    y = rng.standard_normal(n)
    net = ct.ShiftedReLUNet(d, m, threshold=b, seed=1)
    W, a = net.W.copy(), net.a.copy()
    f = np.array([sum(a[r] * max(W[r] @ X[i] - b, 0) for r in range(m)) for i in range(n)])
    f /= np.sqrt(m)
    np.testing.assert_allclose(net.predict(X), f, rtol=1e-12)
    g = np.zeros_like(W)
    for r in range(m):
        for i in range(n):
            if W[r] @ X[i] > b:
                g[r] += (f[i] - y[i]) * X[i]
        g[r] *= a[r] / np.sqrt(m)
    h = ct.train(net, X, y, steps=1, lr=lr)
    assert h.loss[0] == pytest.approx(0.5 * np.sum((f - y) ** 2), rel=1e-12)
    np.testing.assert_allclose(net.W, W - lr * g, rtol=1e-12, atol=1e-15)
    assert net.loss(X, y) < h.loss[0]


def test_batch_schedule_covers_each_epoch():
    batches = list(batch_schedule(10, 4, steps=6, seed=0))
    assert [b.size for b in batches] == [4, 4, 2, 4, 4, 2]
    for e in range(2):
        np.testing.assert_array_equal(
            np.sort(np.concatenate(batches[3 * e : 3 * e + 3])), np.arange(10)
        )
    resumed = list(batch_schedule(10, 4, steps=6, seed=0, start=4))
    for a, b in zip(resumed, batches[4:], strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(batch_schedule(5, None, 3)) == [None] * 3


def test_epochs(rng):
    X = unit_rows(rng, 10, 3)
    y = rng.standard_normal(10)
    net = ct.ShiftedReLUNet(3, 30)
    assert ct.train(net, X, y, epochs=2, lr=0.1, batch_size=4).steps == 6
    assert ct.train(net, X, y, epochs=2, lr=0.1).steps == 2


def test_train_errors(rng):
    X = unit_rows(rng, 10, 3)
    y = rng.standard_normal(10)
    net = ct.ShiftedReLUNet(3, 30)
    with pytest.raises(ValueError, match="X has 4 features but the network was built for d=3"):
        ct.train(net, unit_rows(rng, 10, 4), y, steps=1, lr=0.1)
    with pytest.raises(ValueError, match=r"y has shape \(9, 1\)"):
        ct.train(net, X, y[:9], steps=1, lr=0.1)
    yn = y.copy()
    yn[2] = np.nan
    with pytest.raises(ValueError, match="y contains 1 non-finite"):
        ct.train(net, X, yn, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        ct.train(net, X, y, steps=1, lr=0.1, engine="fast")
    with pytest.raises(ValueError, match="lr must be > 0"):
        ct.train(net, X, y, steps=1, lr=-1)
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        ct.train(net, X, y, lr=0.1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ct.train(net, X, y, steps=1, lr=0.1, batch_size=0)
    with pytest.raises(MemoryError, match="CorrelationDTree"):
        ct.train(net, X, y, steps=1, lr=0.1, engine="dtree", max_memory=100)


@pytest.mark.parametrize(
    "rereference,rebuild_after,counter",
    [("rebuild", 0.0, "rebuilds"), ("neuron", 0.5, "rereferenced"), ("neuron", 1e9, "hot_checks")],
)
def test_certified_engine_hot_neurons_and_rebuilds(rereference, rebuild_after, counter, rng):
    """A tiny slack forces neurons hot (checked densely), then re-referenced one by one or
    all rebuilt; exact either way."""
    X = unit_rows(rng, 40, 5)
    y = 3 * rng.standard_normal(40)
    _, h_ref, w_ref = run("dense", X, y, width=300, steps=8, lr=2.0)
    net = ct.ShiftedReLUNet(5, 300, seed=3)
    weights = []
    eng = Stepper(
        "certified",
        net,
        X,
        y[:, None],
        slack=0.01,
        rebuild_after=rebuild_after,
        rereference=rereference,
    )
    for _ in range(8):
        eng.step(2.0)
        weights.append(net.W.copy())
    assert eng.stats()[counter] > 1
    for a, b in zip(weights, w_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_auto_engine_choice(rng):
    assert choose_engine(10, 100) == "dense"
    assert choose_engine(2000, 1 << 17) == "certified"
    X = unit_rows(rng, 10, 3)
    net = ct.ShiftedReLUNet(3, 30)
    assert ct.train(net, X, rng.standard_normal(10), steps=1, lr=0.1, engine="auto").engine == (
        "dense"
    )


def test_certified_memory_refusal(rng):
    X = unit_rows(rng, 50, 3)
    net = ct.ShiftedReLUNet(3, 1000)
    with pytest.raises(MemoryError, match="candidate index"):
        make_engine("certified", net, X, max_memory=1000)


@pytest.mark.parametrize("dense_fraction", [1.0, 1e-9])
def test_certified_dense_neurons(dense_fraction, rng):
    """Neurons with many candidates go through BLAS (all of them at a tiny fraction, none at
    1.0); the trajectory is dense's either way, in GD and in SGD."""
    X = unit_rows(rng, 40, 5)
    y = 3 * rng.standard_normal(40)
    for batch in (None, 8):
        _, h_ref, w_ref = run("dense", X, y, width=300, steps=6, lr=1.0, batch_size=batch)
        for lazy in (False, True):
            net = ct.ShiftedReLUNet(5, 300, seed=3)
            eng = Stepper("certified", net, X, y[:, None], dense_fraction=dense_fraction, lazy=lazy)
            rows = batch_schedule(40, batch, 6, seed=0)
            for t, r in enumerate(rows):
                eng.step(1.0, r)
                np.testing.assert_allclose(net.W, w_ref[t], rtol=1e-9, atol=1e-12)
                if t == 0 or not lazy:  # a lazy index decides at its first batch
                    dense = eng.stats()["dense_neurons"]
                    if not lazy:
                        with_candidates = np.unique(eng.index.ids).size
                        assert with_candidates > 100
                        assert dense == (0 if dense_fraction == 1.0 else with_candidates)
                    assert (dense == 0) == (dense_fraction == 1.0)


def test_dense_blocks_are_invisible(rng):
    """The dense reference processes points in blocks; one row per block changes nothing."""
    X = unit_rows(rng, 23, 4)
    y = rng.standard_normal(23)
    nets = [ct.ShiftedReLUNet(4, 200, seed=1) for _ in range(2)]
    engines = [
        Stepper("dense", nets[0], X, y[:, None]),
        Stepper("dense", nets[1], X, y[:, None], buffer_bytes=1),
    ]
    assert engines[1].block == 1
    for rows in (None, np.arange(3, 20, dtype=np.int64), None):
        a, b = (e.step(0.5, rows) for e in engines)
        assert a.loss == pytest.approx(b.loss, rel=1e-12)
        assert a.fired_pairs == b.fired_pairs and a.changed_neurons == b.changed_neurons
        np.testing.assert_allclose(a.outputs, b.outputs, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(nets[0].W, nets[1].W, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("rebuild_after,counter", [(1e9, "hot_neurons"), (0.3, "rereferenced")])
def test_certified_full_and_minibatch_steps_mixed(rebuild_after, counter, lazy, rng):
    """Full-batch steps read the neuron-major copy of the index, mini-batch steps the
    point-major one; drift accumulated in either kind of step must carry over to the other,
    with hot neurons kept hot or re-referenced one by one. The trajectory is dense's
    throughout."""
    X = unit_rows(rng, 40, 5)
    y = 3 * rng.standard_normal(40)
    plan = [None, None, np.arange(8), None, np.arange(8, 20), np.arange(20, 40), None, None]
    ref = ct.ShiftedReLUNet(5, 300, seed=3)
    dense = Stepper("dense", ref, X, y[:, None])
    net = ct.ShiftedReLUNet(5, 300, seed=3)
    eng = Stepper(
        "certified", net, X, y[:, None], slack=0.05, rebuild_after=rebuild_after, lazy=lazy
    )
    for t, rows in enumerate(plan):
        a, b = eng.step(0.8, rows), dense.step(0.8, rows)
        assert a.fired_pairs == b.fired_pairs, f"step {t}"
        np.testing.assert_allclose(net.W, ref.W, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
    assert eng.stats()[counter] > eng.stats()["dense_neurons"]
    assert eng.stats()["rebuilds"] == (0 if lazy else 1)  # then only re-references
    np.testing.assert_array_equal(eng._Wh[: eng.hot_ids.size], net.W[eng.hot_ids])


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hot_coefficient_matrix_is_the_masked_residual_product(C, dtype, rng):
    """The hot block's gradient coefficients, against the formula in NumPy: for hot neuron r
    and batch row k, scale * sum over c of A[r, c] * E[k, c] (each product in the network's
    precision, summed in float64 in the order of c) where z > b, else exactly 0."""
    from corrtree._kernels.sparse import hot_coefficient_matrix

    m, nh, R, b, scale = 50, 37, 129, dtype(0.3), 0.125
    Z = rng.standard_normal((nh, R)).astype(dtype)
    Z[0] = b  # equal to b is not above it: all zero
    A = rng.standard_normal((m, C)).astype(dtype)
    E = rng.standard_normal((R, C)).astype(dtype)
    hot = rng.choice(m, nh, replace=False)
    out = np.full((nh, R), np.nan, dtype=dtype)
    hot_coefficient_matrix(Z, b, A, hot, E, scale, out)
    s = np.zeros((nh, R))
    for c in range(C):
        s += A[hot, c][:, None] * E[:, c][None, :]  # products in dtype, added in float64
    np.testing.assert_array_equal(out, np.where(Z > b, scale * s, 0).astype(dtype))
    assert not out[0].any()


@pytest.mark.parametrize("dense_fraction", [1e-9, 0.2])
@pytest.mark.parametrize("batch", [None, 8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_certified_blas_gradient_of_hot_neurons(dense_fraction, batch, dtype, rng):
    """With blas_gradient=0 the hot neurons (all neurons with candidates at a tiny
    dense_fraction, some of them at 0.2) are one dense block: outputs and gradient through
    BLAS, beside the sparse pairs of the others; each step's weights equal dense's in
    float64, and stay within float32 rounding of them in float32. The hot neurons' kept
    copy of their weights follows W."""
    X = unit_rows(rng, 40, 5).astype(dtype)
    y = (3 * rng.standard_normal(40)).astype(dtype)
    ref = ct.ShiftedReLUNet(5, 300, seed=3, dtype=dtype)
    dense = Stepper("dense", ref, X, y[:, None])
    net = ct.ShiftedReLUNet(5, 300, seed=3, dtype=dtype)
    eng = Stepper(
        "certified",
        net,
        X,
        y[:, None],
        dense_fraction=dense_fraction,
        blas_gradient=0.0,
        lazy=False,  # every step through the hot block, the first too
    )
    assert 0 < eng.n_dense <= np.unique(eng.index.ids).size
    assert (eng.n_dense < np.unique(eng.index.ids).size) == (dense_fraction == 0.2)
    calls = []
    blas = eng._buffer
    eng.engine._buffer = lambda name, shape: (calls.append(name), blas(name, shape))[1]
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for t, rows in enumerate(batch_schedule(40, batch, 6, seed=0)):
        a, b = eng.step(1.0, rows), dense.step(1.0, rows)
        assert (a.fired_pairs, a.changed_neurons) == (b.fired_pairs, b.changed_neurons)
        np.testing.assert_allclose(a.loss, b.loss, rtol=tol["rtol"])
        np.testing.assert_allclose(a.outputs, b.outputs, **tol)
        np.testing.assert_allclose(net.W, ref.W, err_msg=f"step {t}", **tol)
    assert calls.count("Ghot") == 6
    np.testing.assert_array_equal(eng._Wh[: eng.hot_ids.size], net.W[eng.hot_ids])
    with pytest.raises(ValueError, match="option blas_gradient must be >= 0, got -1"):
        Stepper("certified", net, X, y[:, None], blas_gradient=-1)


def test_certified_scratch_stays_bounded_over_many_epochs(rng):
    """Batches of two sizes (an epoch's last is smaller) reuse the scratch buffers: their
    memory does not grow from epoch to epoch (it once grew by half at every change)."""
    X = unit_rows(rng, 37, 5)
    y = 3 * rng.standard_normal(37)
    net = ct.ShiftedReLUNet(5, 300, seed=3)
    eng = Stepper("certified", net, X, y[:, None], dense_fraction=1e-9)
    sizes = []
    for t, rows in enumerate(batch_schedule(37, 8, 5 * 40, seed=0)):
        eng.step(0.5, rows)
        if t in (9, 199):
            sizes.append(sum(a.nbytes for a in eng._scratch.values()))
    assert eng.hot_ids.size > 0
    assert sizes[1] <= 1.5 * sizes[0], sizes


@pytest.mark.parametrize("block_bytes", [128 << 20, 2048])
def test_certified_rereferenced_index_is_complete(block_bytes, rng):
    """After neurons are re-referenced one group at a time, the index is what a rebuild at
    each neuron's own reference would hold: every pair of a neuron that is not hot whose
    reference correlation (float64) clears b - slack with room for rounding is stored, with
    that correlation, and no stored pair belongs to an older reference. With 2048-byte
    blocks each index pass runs over chunks of 4 neurons, joined per point."""
    X = unit_rows(rng, 60, 6)
    y = 3 * rng.standard_normal((60, 1))
    ref = ct.ShiftedReLUNet(6, 400, seed=5)
    net = ct.ShiftedReLUNet(6, 400, seed=5)
    dense = Stepper("dense", ref, X, y)
    eng = Stepper(
        "certified", net, X, y, slack=0.05, rebuild_after=0.2, lazy=False, block_bytes=block_bytes
    )
    for rows in batch_schedule(60, 10, 30, seed=1):
        assert eng.step(1.0, rows).fired_pairs == dense.step(1.0, rows).fired_pairs
    np.testing.assert_allclose(net.W, ref.W, rtol=1e-9, atol=1e-12)
    assert eng.stats()["rereferenced"] > 0 and eng.stats()["rebuilds"] == 1
    e = eng.engine
    Z = X @ e.W_ref.T  # float64 reference correlations of every pair
    lo, hi, ids, val = e.index
    point = np.repeat(np.arange(60), hi - lo)  # the merged index is in point order
    cool = ~e.hot[ids]
    np.testing.assert_allclose(val[cool], Z[point[cool], ids[cool]], atol=1e-12)
    stored = np.zeros_like(Z, dtype=bool)
    stored[point, ids] = True
    must = (Z > e.b - e.slack + 1e-9) & ~e.hot[None, :]
    assert must.any() and not (must & ~stored).any()
    assert len(set(zip(point.tolist(), ids.tolist(), strict=True))) == ids.size  # no pair twice


@pytest.mark.parametrize("lazy", [True, False])
def test_certified_lazy_index_is_sound(lazy, rng):
    """With a lazy index each point is indexed at its first visit against weights that
    have already moved. The certificate must hold for every pair all the same: a stored
    pair's value plus the neuron's drift bounds its correlation now, and a pair left out
    cannot reach b - slack + drift. The trajectory is dense's; batches mixing new and
    indexed points, and a first full batch, are included."""
    X = unit_rows(rng, 80, 6)
    y = 3 * rng.standard_normal((80, 1))
    ref = ct.ShiftedReLUNet(6, 500, seed=2)
    net = ct.ShiftedReLUNet(6, 500, seed=2)
    dense = Stepper("dense", ref, X, y)
    eng = Stepper("certified", net, X, y, slack=0.1, lazy=lazy, rebuild_after=5.0)
    plan = [np.arange(0, 30), np.arange(20, 50), None, *batch_schedule(80, 16, 15, seed=3)]
    if lazy:
        plan = plan[:2] + plan[3:]  # the first full batch would index everything at once
    for t, rows in enumerate(plan):
        a, b = eng.step(1.0, rows), dense.step(1.0, rows)
        assert a.fired_pairs == b.fired_pairs, f"step {t}"
        np.testing.assert_allclose(net.W, ref.W, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
        if t == 0 and lazy:
            assert eng.candidates > 0 and eng.engine._n_indexed == 30
    e = eng.engine
    assert e._n_indexed == 80 and e.counters["rebuilds"] == (0 if lazy else 1)
    lo, hi, ids, val = e.index  # point i's pairs at [lo[i], hi[i]), points in any order
    at = np.concatenate([np.arange(lo[i], hi[i]) for i in range(80)])
    point = np.concatenate([np.full(hi[i] - lo[i], i) for i in range(80)])
    ids, val = ids[at], val[at]
    assert at.size == e.candidates
    Z = X @ net.W.T  # correlations now, float64
    slack = e.delta[None, :] * e.xnorm[:, None]
    cool = ~e.hot[ids]
    assert (Z[point, ids][cool] <= val[cool] + slack[point, ids][cool] + 1e-9).all()
    stored = np.zeros_like(Z, dtype=bool)
    stored[point, ids] = True
    left_out = ~stored & ~e.hot[None, :]
    assert (Z[left_out] <= (e.b - e.slack + slack)[left_out] + 1e-9).all()
    assert (Z > e.b).sum() > 0


def test_certified_lazy_full_batch_and_large_batch(rng):
    """A full first batch is a first visit (lazy) and gives dense's step; a batch whose
    correlations would exceed the block budget builds the whole index instead."""
    X = unit_rows(rng, 50, 5)
    y = 3 * rng.standard_normal((50, 1))
    for block_bytes, rebuilds in [(128 << 20, 0), (64, 1)]:
        ref = ct.ShiftedReLUNet(5, 300, seed=1)
        net = ct.ShiftedReLUNet(5, 300, seed=1)
        dense = Stepper("dense", ref, X, y)
        eng = Stepper("certified", net, X, y, slack=0.1, block_bytes=block_bytes, lazy=True)
        for t in range(4):
            a, b = eng.step(1.0), dense.step(1.0)
            assert a.fired_pairs == b.fired_pairs
            np.testing.assert_allclose(net.W, ref.W, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
        assert eng.stats()["rebuilds"] == rebuilds and eng.engine._n_indexed == 50
