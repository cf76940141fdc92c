"""Layer 2's sparse-input product (the deep engine's `spmm`) against a plain read of W_2 and
against the same product over a column-tiled copy of W_2, side by side in one process.

The batch is real: 256 Fashion-MNIST images through a freshly initialised
`ShiftedReLUMLP(784, widths)`; layer 1's firing pairs feed layer 2. Every variant sums each
output in the same order as `spmm` (bit-identical results, checked). Reported per variant:
the best and the median of ``--repeats`` calls, interleaved, at 1 and 2 threads.

* ``read``: a parallel sum over W_2, the memory floor of any method that reads all of it.
* ``spmm``: the kernel in use (input-major W_2, tiles of 1024 output columns whose
  (batch, tile) sums stay in cache).
* ``tiled-T``: W_2 copied to (m_2 / T, m_1, T), each tile's columns contiguous, so a task
  streams its block and its sums are (batch, T).

    python benchmarks/ab_spmm.py --widths 16384,16384 --out benchmarks/results/ab_spmm.json
"""

import time

import numba
import numpy as np
from numba import njit, prange

from corrtree._kernels import deep as K
from corrtree._kernels import sparse as S
from corrtree.bench._common import header, parse, parser, save
from corrtree.datasets import load_dataset
from corrtree.nets import ShiftedReLUMLP

p = parser("ab_spmm", __doc__)
p.add_argument("--widths", default="16384,16384")
p.add_argument("--tiles", default="64,128,256")
p.add_argument("--repeats", type=int, default=7)
args = parse(p, None)


@njit(parallel=True, nogil=True, fastmath=True)
def read(Wt):
    s = np.zeros(Wt.shape[0])
    for k in prange(Wt.shape[0]):
        t = 0.0
        for j in range(Wt.shape[1]):
            t += Wt[k, j]
        s[k] = t
    return s.sum()


@njit(parallel=True, nogil=True, fastmath=True)
def spmm_tiled(col_ptr, rows, vals, b, Wtl, out):
    """``spmm`` over Wtl (tiles, m_in, T): out[:, t T:(t+1) T] from tile t's block."""
    tiles, m_in, T = Wtl.shape
    for t in prange(tiles):
        acc = np.zeros((out.shape[0], T), dtype=out.dtype)
        for k in range(m_in):
            w = Wtl[t, k]
            for q in range(col_ptr[k], col_ptr[k + 1]):
                h = vals[q] - b
                a = acc[rows[q]]
                for j in range(T):
                    a[j] += h * w[j]
        out[:, t * T : (t + 1) * T] = acc


widths = (1024, 1024) if args.quick else tuple(int(w) for w in args.widths.split(","))
data = load_dataset("fashion-mnist", n=256)
X = np.ascontiguousarray(data.X, dtype=np.float32)
net = ShiftedReLUMLP(X.shape[1], widths, n_outputs=10, dtype=np.float32)
b1 = np.float32(net.thresholds[0])
ptr, idx, val = K.above(X @ net.W1.T, b1)
col_ptr, rows, vals = S.transpose(ptr, idx, val, widths[0])
Wt = net.Wt[2]
ref = np.empty((X.shape[0], widths[1]), dtype=np.float32)
K.spmm(col_ptr, rows, vals, b1, Wt, ref)

calls = {"read": lambda: read(Wt), "spmm": lambda: K.spmm(col_ptr, rows, vals, b1, Wt, ref)}
for T in (int(t) for t in args.tiles.split(",")):
    if widths[1] % T:
        continue
    Wtl = np.ascontiguousarray(Wt.reshape(widths[0], widths[1] // T, T).transpose(1, 0, 2))
    out = np.empty_like(ref)
    spmm_tiled(col_ptr, rows, vals, b1, Wtl, out)
    if not np.array_equal(out, ref):
        raise AssertionError(f"tiled-{T} differs from spmm")
    calls[f"tiled-{T}"] = lambda W=Wtl, out=out: spmm_tiled(col_ptr, rows, vals, b1, W, out)

report = {
    **header("ab_spmm", args.threads),
    "widths": widths,
    "batch": int(X.shape[0]),
    "pairs": int(rows.size),
    "multiply_adds": int(rows.size) * widths[1],
    "W2_bytes": int(Wt.nbytes),
    "threads": {},
}
for threads in (1, 2):
    numba.set_num_threads(threads)
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    report["threads"][threads] = {
        name: {"best_ms": 1e3 * min(t), "median_ms": 1e3 * float(np.median(t))}
        for name, t in times.items()
    }
    print(f"{threads} thread(s), {rows.size} pairs, W_2 {Wt.nbytes / 2**30:.2f} GiB:")
    for name, r in report["threads"][threads].items():
        print(f"  {name:12s} best {r['best_ms']:7.1f} ms  median {r['median_ms']:7.1f} ms")
save(report, args.out)
