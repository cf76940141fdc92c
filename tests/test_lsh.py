"""The approximate LSH engine (SLIDE-style) and the FAISS detector's packaging."""

import sys

import numpy as np
import pytest
from conftest import Stepper, unit_rows

import corrtree as ct
from corrtree._kernels import lsh as H
from corrtree.engines import ENGINES

pytestmark = pytest.mark.boundscheck


def setup(rng, n=30, d=6, m=400, **kw):
    X = unit_rows(rng, n, d)
    net = ct.ShiftedReLUNet(d, m, seed=1)
    return net, X, Stepper("lsh", net, X, np.zeros((n, 1)), **kw)


@pytest.mark.parametrize("hash", ["simhash", "dwta"])
def test_found_pairs_are_true_pairs_with_exact_values(hash, rng):
    net, X, eng = setup(rng, hash=hash, K=6, L=3, bin_size=4)
    ptr, ids, val = eng.find(np.arange(30, dtype=np.int64))
    Z = X @ net.W.T
    found = 0
    for i in range(30):
        got = ids[ptr[i] : ptr[i + 1]]
        assert (np.diff(got) > 0).all()
        assert set(got) <= set(np.flatnonzero(Z[i] > net.threshold))
        np.testing.assert_allclose(val[ptr[i] : ptr[i + 1]], Z[i, got], rtol=1e-12)
        found += got.size
    assert 0 < found < np.count_nonzero(Z > net.threshold)  # approximate: some are missed


def test_candidates_are_the_union_of_buckets(rng):
    net, X, eng = setup(rng, K=4, L=5)
    ptr, cand = H.candidates(eng.Xcodes, eng.table_codes, eng.table_ids, 2)
    Wcodes = eng.codes(net.W)
    for i in range(30):
        expected = {r for t in range(5) for r in np.flatnonzero(Wcodes[:, t] == eng.Xcodes[i, t])}
        got = cand[ptr[i] : ptr[i + 1]]
        assert len(got) == len(set(got)) and set(got) == expected


def test_dwta_codes_are_argmax_digits(rng):
    net, X, eng = setup(rng, hash="dwta", K=3, L=2, bin_size=4)
    codes = eng.codes(X)
    for i in range(5):
        for t in range(2):
            digits = [int(np.argmax(X[i, eng.bins[t, k]])) for k in range(3)]
            assert codes[i, t] == sum(dg * 4**k for k, dg in enumerate(digits))


def test_many_tables_recover_dense_training(rng):
    """K = 1 and many tables: every firing neuron shares a bucket with its point (a miss has
    probability < 2^-64 per pair here), so the trajectory is dense's."""
    X = unit_rows(rng, 20, 5)
    y = rng.standard_normal(20)
    nets = [ct.ShiftedReLUNet(5, 150, seed=2) for _ in range(2)]
    lsh = Stepper("lsh", nets[0], X, y[:, None], K=1, L=64, rebuild_every=1)
    dense = Stepper("dense", nets[1], X, y[:, None])
    for _ in range(4):
        a, b = lsh.step(0.5), dense.step(0.5)
        assert a.fired_pairs == b.fired_pairs
        np.testing.assert_allclose(nets[0].W, nets[1].W, rtol=1e-9, atol=1e-12)
    assert lsh.stats()["rebuilds"] == 5


def test_lsh_is_not_an_exact_engine_and_errors(rng):
    assert "lsh" not in ENGINES
    X = unit_rows(rng, 5, 4)
    net = ct.ShiftedReLUNet(4, 20)
    Y = np.zeros((5, 1))
    with pytest.raises(ValueError, match="option hash must be 'simhash' or 'dwta', got 'md5'"):
        Stepper("lsh", net, X, Y, hash="md5")
    with pytest.raises(ValueError, match="option K must be >= 1, got 0"):
        Stepper("lsh", net, X, Y, K=0)
    with pytest.raises(ValueError, match="hash codes of 64 bits"):
        Stepper("lsh", net, X, Y, K=64)


def test_faiss_missing_is_a_clear_error(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "faiss", None)
    net = ct.ShiftedReLUNet(4, 20)
    with pytest.raises(ImportError, match=r"pip install 'corrtree\[faiss\]'"):
        Stepper("faiss", net, unit_rows(rng, 5, 4), np.zeros((5, 1)))
