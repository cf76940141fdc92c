"""Property-based tests (Hypothesis): every exact engine against the dense reference after
every step on random problems (sizes, thresholds, integer data with ties exactly at b,
duplicated points and neurons, batch sizes, outputs); the loaders against malformed files."""

import gzip
import importlib.util
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corrtree as ct
from corrtree import _io
from corrtree.datasets import load_dataset, read_idx
from corrtree.engines import make_engine
from corrtree.training import batch_schedule, take_step

EXACT = [e for e in ct.ENGINES if e != "faiss" or importlib.util.find_spec("faiss")]
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 5))
    m = draw(st.integers(1, 60))
    C = draw(st.integers(1, 3))
    ints = st.integers(-2, 2)
    X = np.array(
        draw(st.lists(st.lists(ints, min_size=d, max_size=d), min_size=n, max_size=n)),
        dtype=np.float64,
    )
    W = np.array(
        draw(st.lists(st.lists(ints, min_size=d, max_size=d), min_size=m, max_size=m)),
        dtype=np.float64,
    )
    if draw(st.booleans()) and n > 1:  # duplicated points
        X[n // 2] = X[0]
    if draw(st.booleans()) and m > 1:  # duplicated neurons
        W[m // 2] = W[0]
    Y = draw(st.lists(st.floats(-3, 3), min_size=n * C, max_size=n * C))
    b = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 50.0]))  # integers: exact ties at b
    batch = draw(st.one_of(st.none(), st.integers(1, n)))
    return X, W, np.array(Y).reshape(n, C), b, batch


@FAST
@given(problem=problems(), engine=st.sampled_from(EXACT), seed=st.integers(0, 3))
def test_every_exact_engine_follows_dense(problem, engine, seed):
    X, W, Y, b, batch = problem
    A = np.where(np.random.default_rng(seed).random((W.shape[0], Y.shape[1])) < 0.5, -1.0, 1.0)
    nets = [ct.ShiftedReLUNet.from_weights(W.copy(), A.copy(), b) for _ in range(2)]
    eng = make_engine(engine, nets[0], X)
    ref = make_engine("dense", nets[1], X)
    for t, rows in enumerate(batch_schedule(X.shape[0], batch, 4, seed)):
        # Neurons that have not moved have integer products, compared with b exactly. A moved
        # neuron's products are rounded: one that lands within rounding of b (on it
        # included) fires in one summation order and not in another (the ReLU's gradient
        # jumps there), so the comparison stops at such a step.
        Z = (X if rows is None else X[rows]) @ nets[1].W.T
        moved = np.any(nets[1].W != W, axis=1)
        if np.any(np.abs(Z[:, moved] - b) < 1e-9 * (1 + abs(b))):
            break
        a, r = take_step(eng, Y, 0.05, rows), take_step(ref, Y, 0.05, rows)
        assert a.fired_pairs == r.fired_pairs, t
        assert a.changed_neurons == r.changed_neurons, t
        np.testing.assert_allclose(a.loss, r.loss, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
        np.testing.assert_allclose(nets[0].W, nets[1].W, rtol=1e-9, atol=1e-12)


@FAST
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 8),
    m=st.integers(1, 200),
    seed=st.integers(0, 10**6),
    batch=st.integers(1, 30),
)
def test_float32_engines_stay_within_rounding_of_float64(n, d, m, seed, batch):
    rng = np.random.default_rng(seed)
    X = ct.normalize_rows(rng.standard_normal((n, d)))
    y = rng.standard_normal(n)
    net32 = ct.ShiftedReLUNet(d, m, seed=seed, dtype=np.float32)
    net64 = ct.ShiftedReLUNet(d, m, seed=seed)
    h32 = ct.train(net32, X, y, steps=3, lr=0.1, engine="certified", batch_size=batch)
    h64 = ct.train(net64, X, y, steps=3, lr=0.1, engine="dense", batch_size=batch)
    np.testing.assert_allclose(h32.loss, h64.loss, rtol=1e-3, atol=1e-5)


ERRORS = (ValueError, _io.PathError, FileNotFoundError)


@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=400), gz=st.booleans())
def test_idx_reader_never_crashes(blob, gz):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f-idx3-ubyte" + (".gz" if gz else ""))
        if gz and blob[:1] != b"\x1f":
            with gzip.open(path, "wb") as fh:
                fh.write(blob)
        else:
            with open(path, "wb") as fh:
                fh.write(blob)
        try:
            out = read_idx(path)
        except ERRORS:
            return
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=600), kind=st.sampled_from(["npz", "svmlight"]))
def test_user_file_loaders_never_crash_or_unpickle(blob, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data")
        with open(path, "wb") as fh:
            fh.write(blob)
        try:
            data = load_dataset(f"{kind}:{path}")
        except ERRORS:
            return
        assert np.isfinite(data.X).all() and data.n >= 1


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "p.npz", X=np.ones((2, 2)), y=np.array([object(), 1], dtype=object))
    with pytest.raises(ValueError, match="not a readable"):
        load_dataset(f"npz:{tmp_path / 'p.npz'}")
