"""Large matrix products on corrtree's own threads, with the BLAS library single-threaded.

Numba's kernels and OpenBLAS's threads take turns on the same cores. OpenBLAS's idle threads
spin for a long time after each call (unless ``OPENBLAS_THREAD_TIMEOUT`` was set before
numpy loaded it, which a script that imports numpy first cannot arrange), holding the cores
that numba's threads then wait for. While training, corrtree therefore runs BLAS with one
thread and splits each large product itself over a small pool of Python threads (BLAS
releases the GIL): threads that block, never spin, whatever the import order.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from ._validation import as_positive_int

_state = threading.local()
_pools: dict[int, ThreadPoolExecutor] = {}
_SMALL = 1 << 22  # multiply-adds below which one call on the calling thread is faster


def workers() -> int:
    """Threads for products inside ``split_products`` (1 outside: BLAS decides)."""
    return getattr(_state, "workers", 1)


@contextmanager
def split_products(n: int):
    """Inside the block, BLAS runs single-threaded and ``matmul`` splits products into ``n``
    pieces on corrtree's threads."""
    old = workers()
    _state.workers = max(1, int(n))
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _state.workers = old


def _pool(n: int) -> ThreadPoolExecutor:
    pool = _pools.get(n)
    if pool is None:
        pool = _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="corrtree-blas")
    return pool


def matmul(A: np.ndarray, B: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A @ B`` (into ``out``), split over the rows of A or the columns of B, whichever
    is larger, across ``workers()`` threads."""
    M, K = A.shape
    N = B.shape[1]
    if out is None:
        out = np.empty((M, N), dtype=np.result_type(A, B))
    k = workers()
    if k <= 1 or M * N * K < _SMALL:
        return np.matmul(A, B, out=out)
    if M >= N:
        cuts = np.linspace(0, M, k + 1).astype(int)
        jobs = [(A[a:b], B, out[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    else:
        cuts = np.linspace(0, N, k + 1).astype(int)
        jobs = [(A, B[:, a:b], out[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    for f in [_pool(k).submit(np.matmul, a, b, out=o) for a, b, o in jobs]:
        f.result()
    return out


@contextmanager
def thread_limit(threads: int | None):
    """Run corrtree's work on ``threads`` threads (None: numba's current count): numba's
    kernels, and large products split by corrtree over its own threads while the BLAS
    library runs single-threaded (``corrtree._blas``), so that idle BLAS threads never spin
    on the cores the kernels need, whatever the import order."""
    if threads is None:
        n = numba.get_num_threads()
    else:
        n = min(as_positive_int(threads, "threads"), numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with split_products(n):
            yield
    finally:
        numba.set_num_threads(old)
