"""The paper's lower bound made executable.

Dynamic Detection of Firing Neurons (DDFN): keep data x_1..x_n and neuron weights under weight
updates and answer which neurons fire, <w_r, x_i> > b. The paper shows that, under the
Orthogonal Vectors Conjecture, no structure has polynomial preprocessing and O(n^(1-delta))
time per update and query. The argument is a chain of reductions, each one here as code:

    Orthogonal Vectors (OV)  ->  Maximum Bichromatic Inner Product (MBIP)  ->  DDFN

* OV: given A, B in {0,1}^d, is there a in A, b in B with <a, b> = 0?
* MBIP: given A, B in {0,1}^d and t, is there a pair with <a, b> >= t?
* OV -> MBIP (one instance, dimension 2d, t = d):
  a' = (a, 1^(d - |a|) 0^(|a|)),  b' = (1 - b, 1^d),  so  <a', b'> = d - <a, b>.
  Hence <a, b> = 0  <=>  <a', b'> >= d, which is the maximum possible.
* MBIP -> DDFN: the data points are A; each b in B becomes a neuron weight by one ``update``;
  since inner products are integers, <w, x> >= t  <=>  <w, x> > t - 1/2, so queries use the
  threshold t - 1/2. The solvers below use only the public ``update`` and ``query`` methods.

Timing cannot prove a conditional lower bound; ``corrtree hardness`` shows the work that the
trees spend per update (Theta(n) inner products), which the theorem says no structure can
improve to n^(1 - delta) for any delta > 0 unless OVC fails.
"""

from __future__ import annotations

import time

import numpy as np

from .structures import CorrelationDTree, CorrelationWTree

__all__ = [
    "brute_mbip",
    "brute_ov",
    "mbip_via_firing",
    "ov_instance",
    "ov_to_mbip",
    "random_binary",
    "solve_mbip",
    "solve_ov",
]

STRUCTURES = ("dtree", "wtree")


def _binary(M, name: str) -> np.ndarray:
    arr = np.asarray(M)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"{name} must be an integer 0/1 array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (rows are vectors), got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])
        raise ValueError(f"{name} must hold only 0 and 1, found values {bad[:5].tolist()}")
    return arr.astype(np.int64)


def _pair(A, B):
    A = _binary(A, "A")
    B = _binary(B, "B")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A has dimension {A.shape[1]} but B has {B.shape[1]}")
    if A.shape[1] == 0:
        raise ValueError("vectors must have dimension d >= 1")
    return A, B


def random_binary(n: int, d: int, density: float = 0.5, seed=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, d)) < density).astype(np.int64)


def ov_instance(
    n_a: int, n_b: int, d: int, *, planted: bool | None = True, density: float = 0.5, seed=None
):
    """An OV instance (A, B). ``planted=True``: at least one orthogonal pair (at a random
    place); ``planted=False``: none (every vector has coordinate 0 set); None: plain random."""
    rng = np.random.default_rng(seed)
    A = random_binary(n_a, d, density, rng)
    B = random_binary(n_b, d, density, rng)
    if planted is None:
        return A, B
    A[:, 0] = 1
    B[:, 0] = 1
    if planted:
        i, j = rng.integers(n_a), rng.integers(n_b)
        B[j] = (rng.random(d) < density) & (A[i] == 0)
        if d == 1:
            A[i] = 0
    return A, B


def brute_ov(A, B):
    """First orthogonal pair (i, j) in row-major order, or None."""
    A, B = _pair(A, B)
    hits = np.argwhere(A @ B.T == 0)
    return None if hits.size == 0 else (int(hits[0, 0]), int(hits[0, 1]))


def brute_mbip(A, B, t):
    """First pair (i, j) with <a_i, b_j> >= t in row-major order, or None."""
    A, B = _pair(A, B)
    hits = np.argwhere(A @ B.T >= t)
    return None if hits.size == 0 else (int(hits[0, 0]), int(hits[0, 1]))


def ov_to_mbip(A, B):
    """Map an OV instance to an MBIP instance (A', B', t) with <a', b'> = d - <a, b>."""
    A, B = _pair(A, B)
    d = A.shape[1]
    weight = A.sum(axis=1)
    pad = (np.arange(d)[None, :] < (d - weight)[:, None]).astype(np.int64)
    A2 = np.hstack([A, pad])
    B2 = np.hstack([1 - B, np.ones_like(B)])
    return A2, B2, d


def mbip_via_firing(A, B, t, structure: str = "wtree", stats: dict | None = None):
    """Solve MBIP with dynamic firing detection on a correlation structure.

    ``wtree``: one neuron over the data A; for each b_j, ``update(0, b_j)`` then one
    ``query(0, t - 1/2)``. ``dtree``: |B| neurons; ``update(j, b_j)`` for every j, then one
    ``query(i, t - 1/2)`` per data point. ``stats`` (a dict) receives the operation counts.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    A, B = _pair(A, B)
    if isinstance(t, bool) or not np.isscalar(t) or not np.isfinite(t):
        raise ValueError(f"t must be a finite number, got {t!r}")
    tau = float(np.ceil(t)) - 0.5  # integer inner products: >= t  <=>  > ceil(t) - 1/2
    n_a, d = A.shape
    n_b = B.shape[0]
    ops = {"updates": 0, "queries": 0}
    answer = None
    t0 = time.perf_counter()
    if n_a and n_b:
        X = A.astype(np.float64)
        if structure == "wtree":
            tree = CorrelationWTree(np.zeros((1, d)), X)
            tree.reset_stats()  # count the dynamic work only
            for j in range(n_b):
                tree.update(0, B[j])
                hits = tree.query(0, tau)
                ops["updates"] += 1
                ops["queries"] += 1
                if hits.size:
                    answer = (int(hits[0]), j)
                    break
        else:
            tree = CorrelationDTree(np.zeros((n_b, d)), X)
            tree.reset_stats()
            for j in range(n_b):
                tree.update(j, B[j])
                ops["updates"] += 1
            for i in range(n_a):
                hits = tree.query(i, tau)
                ops["queries"] += 1
                if hits.size:
                    answer = (i, int(hits[0]))
                    break
        ops.update(tree.stats())
    ops["seconds"] = time.perf_counter() - t0
    if stats is not None:
        stats.update(ops)
    return answer


def solve_mbip(A, B, t, structure: str = "wtree", stats: dict | None = None):
    """A pair (index in A, index in B) with <a, b> >= t, found through firing detection on the
    named correlation structure, or None when no pair reaches t."""
    return mbip_via_firing(A, B, t, structure, stats)


def solve_ov(A, B, structure: str = "wtree", stats: dict | None = None):
    """A pair (index in A, index in B) of orthogonal vectors, or None: OV -> MBIP -> firing
    detection on the named correlation structure."""
    A2, B2, t = ov_to_mbip(A, B)
    return mbip_via_firing(A2, B2, t, structure, stats)


def scaling_experiment(sizes, d: int, structure: str, seed: int = 0) -> list[dict]:
    """For each n: a planted instance with |A| = |B| = n solved through ``structure``; the
    work per update (inner products, seconds) is what the bound says stays Theta(n)."""
    rows = []
    for n in sizes:
        A, B = ov_instance(n, n, d, planted=False, seed=seed)  # no answer: every update runs
        st: dict = {}
        ans = solve_ov(A, B, structure, st)
        assert ans is None
        rows.append(
            {
                "n": n,
                "structure": structure,
                "updates": st["updates"],
                "queries": st["queries"],
                "inner_products": st["inner_products"],
                "nodes_visited": st["nodes_visited"],
                "seconds": st["seconds"],
                "inner_products_per_update": st["inner_products"] / st["updates"],
                "microseconds_per_update": 1e6 * st["seconds"] / st["updates"],
            }
        )
    return rows
