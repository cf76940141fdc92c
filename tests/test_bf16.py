"""The certified engine's index pass on bfloat16 matrix units: the split product's error
bound against float64, the integer threshold test, and training that follows dense."""

import numpy as np
import pytest
from conftest import Stepper, unit_rows

import corrtree as ct
from corrtree import _bf16
from corrtree._blas import split_products
from corrtree.training import batch_schedule

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.boundscheck


def as_float(bits):
    """bfloat16 bit patterns (int16) -> their values (float64)."""
    return (bits.astype(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@pytest.mark.parametrize("d", [97, 784])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 40.0])
def test_split_product_stays_within_its_bound(scale, d, rng):
    """Every entry of the three-term bfloat16 product is within c_abs + c_rel |z| of the
    float64 inner product, for rows of mixed sizes and signs; the bound is far tighter
    than one bfloat16 product's (2^-8 ||w|| ||x||); the same with the rows split over
    corrtree's threads (the summation order may differ, the bound may not). d = 784
    (K = 2352) makes the units accumulate over many blocks."""
    X = (rng.standard_normal((300, d)) * rng.random((300, 1)) * scale).astype(np.float32)
    W = (rng.standard_normal((200, d)) * scale).astype(np.float32)
    W[:3] *= 1e-4  # tiny rows beside large ones
    split = _bf16.SplitProduct(X)
    W3T = split.weights(W)
    bits = split.block(0, 300, W3T, split.buffer(300 * 200).reshape(300, 200)).copy()
    Z = X.astype(np.float64) @ W.astype(np.float64).T
    xmax = np.linalg.norm(X.astype(np.float64), axis=1).max()
    wmax = np.linalg.norm(W.astype(np.float64), axis=1).max()
    c_abs, c_rel = _bf16.bound(d, xmax, wmax)
    z = as_float(bits)
    err = np.abs(Z - z)
    assert (err <= c_abs + c_rel * np.abs(z)).all()
    assert 0 < err.max() and c_abs < 2**-8 * xmax * wmax / 10
    with split_products(2):
        z2 = as_float(split.block(0, 300, W3T, split.buffer(300 * 200).reshape(300, 200)))
    assert (np.abs(Z - z2) <= c_abs + c_rel * np.abs(z2)).all()


def test_threshold_bits_is_the_integer_form_of_the_bound_test():
    """For every positive finite bfloat16 z: its pattern is above ``threshold_bits`` when
    z + c_abs + c_rel z > b_low (no pair the bound keeps is dropped), and otherwise only
    on the boundary itself."""
    bits = np.arange(1, 0x7F80, dtype=np.int16)
    z = as_float(bits)
    for b_low, c_abs, c_rel in [(1.85, 0.01, 2**-7), (0.3, 0.2, 2**-7), (1e-3, 0.0, 2**-7)]:
        above = _bf16.threshold_bits(b_low, c_abs, c_rel)
        want = z + c_abs + c_rel * z > b_low
        got = bits > above
        assert not (want & ~got).any() and (got & ~want).sum() <= 1
    assert _bf16.threshold_bits(0.1, 0.2, 2**-7) is None  # no positive threshold: BLAS


@pytest.mark.parametrize("block_bytes", [128 << 20, 2048])
def test_certified_on_bf16_index_follows_dense_and_its_index_is_sound(block_bytes, rng):
    """float32 training with the index passes on bfloat16 units (a rebuild and many
    re-references) follows dense float32 after every step, full and mini batches; at the
    end every pair of a neuron that is not hot whose float64 reference correlation clears
    b - slack - margin is stored, with a value that bounds it from above. With 2048-byte
    blocks each pass runs over chunks of 17 neurons, joined per point."""
    X = unit_rows(rng, 60, 6).astype(np.float32)
    y = (3 * rng.standard_normal((60, 1))).astype(np.float32)
    ref = ct.ShiftedReLUNet(6, 400, seed=5, dtype=np.float32)
    net = ct.ShiftedReLUNet(6, 400, seed=5, dtype=np.float32)
    dense = Stepper("dense", ref, X, y)
    eng = Stepper(
        "certified",
        net,
        X,
        y,
        slack=0.05,
        rebuild_after=0.2,
        index_bf16=True,
        block_bytes=block_bytes,
    )
    e = eng.engine
    assert e._split is not None  # the rebuild ran on the split product
    plan = [None, *batch_schedule(60, 10, 30, seed=1), None]
    for t, rows in enumerate(plan):
        a, b = eng.step(1.0, rows), dense.step(1.0, rows)
        assert (a.fired_pairs, a.changed_neurons) == (b.fired_pairs, b.changed_neurons), t
        np.testing.assert_allclose(net.W, ref.W, rtol=2e-5, atol=2e-6, err_msg=f"step {t}")
    assert e.stats()["rereferenced"] > 0
    Z = X.astype(np.float64) @ e.W_ref.astype(np.float64).T
    lo, hi, ids, val = e.index
    point = np.repeat(np.arange(60), hi - lo)
    cool = ~e.hot[ids]
    assert (val[cool] >= Z[point[cool], ids[cool]]).all()
    stored = np.zeros_like(Z, dtype=bool)
    stored[point, ids] = True
    must = (Z > float(e._b_low())) & ~e.hot[None, :]
    assert must.any() and not (must & ~stored).any()


def test_bf16_option_errors(rng):
    X, y, net = unit_rows(rng, 10, 4), np.zeros((10, 1)), ct.ShiftedReLUNet(4, 50, seed=0)
    with pytest.raises(ValueError, match="index_bf16 needs a float32 network, got float64"):
        Stepper("certified", net, X, y, index_bf16=True)
    with pytest.raises(TypeError, match="index_bf16 must be None, True or False, got 'yes'"):
        Stepper("certified", net, X, y, index_bf16="yes")
