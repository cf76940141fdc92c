"""Exact checks over dense rows of X against rows stored sparse (products over the nonzeros
only), on the rows of the GD configuration.

    python benchmarks/ab_sparse_x.py --out benchmarks/results/ab_sparse_x.json

Fashion-MNIST's images are about half zeros, so a check <w, x> over x's nonzeros does half
the multiply-adds, reading 8 bytes per nonzero (value and 32-bit index, about as many bytes
as the dense row) and w at those indices. The first 2000 images (the rows of ``corrtree
bench gd``), m neurons with N(0, 1) weights, ``--per-neuron`` random candidate points each, checked
neuron-major as ``certified``'s exact checks are (``rows_dots``: eight rows per pass), in
parallel over neurons on 2 threads; both variants alternate, best and median of
``--repeats``. The values must agree to float32 rounding.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

from corrtree._kernels.sparse import rows_dots
from corrtree.bench._common import header, save
from corrtree.bench.gd import load


@njit(parallel=True, nogil=True)
def dense_checks(W, X, rows, ptr, cand, out):
    for r in prange(W.shape[0]):
        rows_dots(W[r], X, rows, cand, ptr[r], ptr[r + 1], out)


@njit(nogil=True, fastmath={"reassoc", "contract"})
def sparse_dot(w, xind, xval, lo, hi):
    s = w.dtype.type(0)
    for j in range(lo, hi):
        s += w[xind[j]] * xval[j]
    return s


@njit(parallel=True, nogil=True)
def sparse_checks(W, xptr, xind, xval, ptr, cand, out):
    for r in prange(W.shape[0]):
        w = W[r]
        for q in range(ptr[r], ptr[r + 1]):
            i = cand[q]
            out[q] = sparse_dot(w, xind, xval, xptr[i], xptr[i + 1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m-log2", type=int, default=17)
    p.add_argument("--per-neuron", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="m = 2^10, 2 repeats")
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    if args.quick:
        args.m_log2, args.repeats = 10, 2
    _, X, _ = load(False)
    X = X.astype(np.float32)
    n, d = X.shape
    m, k = 1 << args.m_log2, args.per_neuron
    rng = np.random.default_rng(0)
    W = rng.standard_normal((m, d), dtype=np.float32)
    cand = np.sort(rng.integers(0, n, size=(m, k)), axis=1).ravel()
    ptr = np.arange(0, m * k + 1, k, dtype=np.int64)
    rows = np.arange(n, dtype=np.int64)
    nonzero = X != 0
    xptr = np.zeros(n + 1, dtype=np.int64)
    xptr[1:] = np.cumsum(nonzero.sum(axis=1))
    xind = np.nonzero(nonzero)[1].astype(np.int32)
    xval = X[nonzero]
    dense_out = np.empty(m * k, dtype=np.float32)
    sparse_out = np.empty(m * k, dtype=np.float32)
    numba.set_num_threads(args.threads)
    dense_checks(W, X, rows, ptr, cand, dense_out)  # compile
    sparse_checks(W, xptr, xind, xval, ptr, cand, sparse_out)
    scale = np.abs(W).max() * np.abs(X).sum(axis=1).max()
    gap = float(np.abs(dense_out - sparse_out).max() / scale)
    assert gap < 1e-5, f"the two checks disagree: {gap:.1e} of the largest possible value"
    times = {"dense": [], "sparse": []}
    for _ in range(args.repeats):
        for name, run in (
            ("dense", lambda: dense_checks(W, X, rows, ptr, cand, dense_out)),
            ("sparse", lambda: sparse_checks(W, xptr, xind, xval, ptr, cand, sparse_out)),
        ):
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    madds = m * k * d
    for name, ts in times.items():
        print(
            f"{name:>6}: best {min(ts) * 1e3:.1f} ms, median {np.median(ts) * 1e3:.1f} ms "
            f"({madds / min(ts) / 1e9:.1f} G dense-equivalent multiply-adds/s)"
        )
    print(f"nonzeros {nonzero.mean():.1%} of X; values agree to {gap:.1e} of the largest")
    if args.out:
        save(
            {
                **header("ab_sparse_x", args.threads),
                "m": m,
                "per_neuron": k,
                "nonzero_fraction": float(nonzero.mean()),
                "seconds": times,
                "max_relative_gap": gap,
            },
            args.out,
        )


if __name__ == "__main__":
    main()
