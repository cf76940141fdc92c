"""The reductions must answer exactly as brute force."""

import numpy as np
import pytest

from corrtree import hardness as H

STRUCTURES = ["dtree", "wtree"]


def assert_ov_answer(A, B, got):
    want = H.brute_ov(A, B)
    if want is None:
        assert got is None
    else:
        assert got is not None
        i, j = got
        assert np.dot(A[i], B[j]) == 0


def assert_mbip_answer(A, B, t, got):
    want = H.brute_mbip(A, B, t)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert np.dot(A[got[0]], B[got[1]]) >= t


@pytest.mark.parametrize("structure", STRUCTURES)
def test_ov_random_and_planted(structure):
    rng = np.random.default_rng(0)
    for trial in range(60):
        n_a, n_b, d = rng.integers(1, 12), rng.integers(1, 12), rng.integers(1, 9)
        planted = [True, False, None][trial % 3]
        A, B = H.ov_instance(
            n_a, n_b, d, planted=planted, density=rng.uniform(0.2, 0.8), seed=trial
        )
        got = H.solve_ov(A, B, structure)
        assert_ov_answer(A, B, got)
        if planted is True:
            assert got is not None
        if planted is False:
            assert got is None


@pytest.mark.parametrize("structure", STRUCTURES)
def test_mbip_random(structure):
    rng = np.random.default_rng(1)
    for trial in range(60):
        A = H.random_binary(rng.integers(1, 10), 6, seed=trial)
        B = H.random_binary(rng.integers(1, 10), 6, seed=trial + 1000)
        for t in range(0, 8):
            assert_mbip_answer(A, B, t, H.solve_mbip(A, B, t, structure))
        assert_mbip_answer(A, B, 2.5, H.solve_mbip(A, B, 2.5, structure))


def test_ov_to_mbip_identity():
    A, B = H.ov_instance(7, 5, 6, planted=None, seed=3)
    A2, B2, t = H.ov_to_mbip(A, B)
    assert t == 6 and A2.shape == (7, 12) and B2.shape == (5, 12)
    np.testing.assert_array_equal(A2 @ B2.T, 6 - A @ B.T)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_edge_cases(structure):
    ones = np.ones((3, 4), dtype=int)
    zeros = np.zeros((2, 4), dtype=int)
    assert H.solve_ov(ones, ones, structure) is None  # none orthogonal
    assert H.solve_ov(zeros, ones, structure) in {(0, j) for j in range(3)}  # zero vector
    eye = np.eye(4, dtype=int)
    got = H.solve_ov(eye, eye, structure)  # every off-diagonal pair orthogonal
    assert got is not None and got[0] != got[1]
    d1 = np.array([[1], [0]])
    assert H.solve_ov(d1, np.array([[1]]), structure) == (1, 0)
    assert H.solve_ov(np.array([[1]]), np.array([[1]]), structure) is None
    assert H.solve_mbip(ones, ones, 4, structure) is not None
    assert H.solve_mbip(ones, ones, 5, structure) is None
    assert H.solve_ov(ones[:0], ones, structure) is None


def test_stats_count_updates_and_queries():
    A, B = H.ov_instance(20, 20, 8, planted=False, seed=0)
    st = {}
    assert H.solve_ov(A, B, "wtree", st) is None
    assert st["updates"] == 20 and st["queries"] == 20
    assert st["inner_products"] == 20 * 20  # n per update
    for s in ("wtree", "dtree"):
        rows = H.scaling_experiment([8, 16, 32], 6, s)
        assert [r["inner_products_per_update"] for r in rows] == [8, 16, 32]


def test_errors():
    A = np.array([[0, 1], [1, 1]])
    with pytest.raises(TypeError, match="integer 0/1 array, got dtype float64"):
        H.solve_ov(A.astype(float), A)
    with pytest.raises(ValueError, match=r"B must hold only 0 and 1, found values \[2\]"):
        H.solve_ov(A, A + A)
    with pytest.raises(ValueError, match="A has dimension 2 but B has 3"):
        H.solve_ov(A, np.ones((1, 3), dtype=int))
    with pytest.raises(ValueError, match="2-dimensional"):
        H.solve_mbip(A[0], A, 1)
    with pytest.raises(ValueError, match="structure must be one of"):
        H.solve_ov(A, A, structure="kdtree")
    with pytest.raises(ValueError, match="t must be a finite number"):
        H.solve_mbip(A, A, float("nan"))
