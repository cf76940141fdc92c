import math

import numpy as np
import pytest
from conftest import unit_rows

import corrtree as ct


def test_default_threshold_matches_paper():
    for m, b in [(2**10, 1.665), (2**14, 1.970), (2**17, 2.171), (2**20, 2.355)]:
        assert ct.default_threshold(m) == pytest.approx(b, abs=1e-3)
        # exp(-b^2 / 2) = m^(-1/5)
        assert math.exp(-(ct.default_threshold(m) ** 2) / 2) == pytest.approx(m**-0.2)
    assert ct.firing_probability(ct.default_threshold(2**10)) == pytest.approx(0.0479, abs=1e-4)


def test_init_and_predict(rng):
    net = ct.ShiftedReLUNet(5, 64, seed=7)
    assert net.W.shape == (64, 5) and net.a.shape == (64,)
    assert set(np.unique(net.a)) <= {-1.0, 1.0}
    assert net.threshold == pytest.approx(math.sqrt(0.4 * math.log(64)))
    X = unit_rows(rng, 11, 5)
    H = np.maximum(X @ net.W.T - net.threshold, 0)
    np.testing.assert_allclose(net.predict(X), H @ net.a / 8, rtol=1e-12)
    np.testing.assert_allclose(net.hidden(X), H)
    same = ct.ShiftedReLUNet(5, 64, seed=7)
    np.testing.assert_array_equal(same.W, net.W)
    multi = ct.ShiftedReLUNet(5, 64, seed=7, n_outputs=3)
    assert multi.a.shape == (64, 3) and multi.predict(X).shape == (11, 3)


def test_state_roundtrip(rng):
    net = ct.ShiftedReLUNet(4, 10, n_outputs=2, dtype=np.float32)
    back = ct.ShiftedReLUNet.from_state(net.state_dict())
    X = unit_rows(rng, 3, 4)
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    assert back.dtype == np.float32


def test_normalize_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(ct.normalize_rows(X), [[0.6, 0.8], [0.0, 0.0]])


def test_model_errors():
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        ct.ShiftedReLUNet(3, 0)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        ct.ShiftedReLUNet(3, 8, threshold=-1)
    with pytest.raises(ValueError, match="threshold must be finite"):
        ct.ShiftedReLUNet(3, 8, threshold=float("nan"))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        ct.ShiftedReLUNet(3, 8, dtype=np.int32)
    net = ct.ShiftedReLUNet(3, 8)
    with pytest.raises(ValueError, match="X has 2 features"):
        net.predict(np.ones((4, 2)))
