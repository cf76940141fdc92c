"""The deep engine's kernels against dense NumPy in float64: the sparse-input product of a
layer (``spmm``) and the one-pass back-propagation and update (``backprop_update``), which
must equal the two passes it fuses (errors from the weights as they were, then the update)."""

import numpy as np
import pytest

from corrtree._kernels import deep as K
from corrtree._kernels import sparse as S

pytestmark = pytest.mark.boundscheck


def _sparse_layer(rng, B, m_in, b):
    """A batch of pre-activations z (B, m_in) and its firing pairs above b, neuron-major."""
    Z = rng.standard_normal((B, m_in))
    ptr, idx, val = K.above(Z, b)
    col_ptr, prow, pval = S.transpose(ptr, idx, val, m_in)
    return Z, col_ptr, prow, pval


@pytest.mark.parametrize("m_out", [5, K.TILE + 3])  # one tile, and a partial second tile
def test_spmm_is_the_dense_product_of_the_firing_units(rng, m_out):
    B, m_in, b = 7, 40, 0.3
    Z, col_ptr, prow, pval = _sparse_layer(rng, B, m_in, b)
    Wt = rng.standard_normal((m_in, m_out))
    out = np.empty((B, m_out))
    K.spmm(col_ptr, prow, pval, b, Wt, out)
    H = np.maximum(Z - b, 0)
    np.testing.assert_allclose(out, H @ Wt, rtol=1e-12, atol=1e-12)


def test_backprop_update_equals_errors_then_update(rng):
    B, m_in, m_up, b, lr = 9, 30, 25, 0.2, 0.05
    Z, col_ptr, prow, pval = _sparse_layer(rng, B, m_in, b)
    Wt = rng.standard_normal((m_in, m_up))
    delta = rng.standard_normal((B, m_up)) * (rng.random((B, m_up)) < 0.3)
    dptr, didx, dval = K.above(np.abs(delta) + (delta != 0), 0.5)  # the nonzeros of delta
    dval = delta[np.repeat(np.arange(B), np.diff(dptr)), didx]
    H = np.maximum(Z - b, 0)
    errors_ref = (delta @ Wt.T)[prow, np.repeat(np.arange(m_in), np.diff(col_ptr))]
    Wt_ref = Wt - lr * H.T @ delta
    out = np.empty(prow.size)
    K.backprop_update(col_ptr, prow, pval, b, Wt, dptr, didx, dval, lr, out)
    np.testing.assert_allclose(out, errors_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Wt, Wt_ref, rtol=1e-12, atol=1e-12)
