"""Correlation blocks on bfloat16 matrix units, with a certified error bound.

The certified engine's index needs, for each pair, only an *upper bound* on <w_r, x_i>: its
candidates are the pairs whose bound reaches b - slack, and every candidate that may fire is
checked again exactly in the network's precision. CPUs with bfloat16 matrix units (Intel
AMX) multiply bfloat16 matrices several times faster than BLAS multiplies float32 ones, so
the index pass (rebuilds and re-references) can run there, on a three-term split that keeps
the error near float32's:

    x = x_hi + x_lo + r_x,   x_hi = bf16(x),  x_lo = bf16(x - x_hi),  |r_x| <= u^2 |x|

and likewise for w, so that <w, x> is one product with K = 3 d:

    z = <[x_hi, x_hi, x_lo], [w_hi, w_lo, w_hi]>      (accumulated in float32, output bf16)

With u = 2^-8 (bfloat16's unit roundoff) and gamma_K = K 2^-24 / (1 - K 2^-24) (float32
accumulation in any order), every entry satisfies

    |<w, x> - z| <= (4.1 u^2 + 1.02 gamma_3d) ||w|| ||x|| + 2u / (1 - 2u) |z|,

the terms being the dropped parts of the split (x_hi r_w + x_lo w_lo + x_lo r_w + r_x w), the
float32 sums, and the bfloat16 output (2u allows any faithful rounding). ``bound`` gives the
two constants; the extraction kernel turns each z into z + c_abs + c_rel |z|, an upper bound.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ._blas import _pool, workers

U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
_MIN_MADDS = 1 << 30  # products smaller than this gain too little to leave BLAS


@cache
def available() -> bool:
    """PyTorch is installed and the CPU has bfloat16 matrix units."""
    try:
        import llvmlite.binding as llvm
        import torch  # noqa: F401
    except ImportError:
        return False
    return bool(llvm.get_host_cpu_features().get("amx-bf16", False))


def worth_it(n: int, k: int, d: int) -> bool:
    """Whether an n x k x d correlation pass should run on the matrix units by default."""
    return available() and n * k * d >= _MIN_MADDS


def bound(d: int, xmax: float, wmax: float) -> tuple[float, float]:
    """(c_abs, c_rel): |<w, x> - z| <= c_abs + c_rel |z| for every entry z of a split
    product of vectors with ||x|| <= xmax, ||w|| <= wmax (see the module docstring; 1e-30
    covers the matrix units' flushing of subnormal numbers)."""
    K = 3 * d
    gamma = K * 2.0**-24 / (1 - K * 2.0**-24)
    c_abs = (4.1 * U * U + 1.02 * gamma) * xmax * wmax + 1e-30
    return c_abs, 2 * U / (1 - 2 * U)


def threshold_bits(b_low: float, c_abs: float, c_rel: float) -> int | None:
    """The bit pattern (as int16) of the largest bfloat16 number t with
    t (1 + c_rel) + c_abs <= b_low: an entry z has z + c_abs + c_rel |z| > b_low exactly
    when its int16 pattern is greater than this one. None when t would not be positive
    (signed-integer order matches float order only for positive numbers)."""
    t0 = (b_low - c_abs) / (1 + c_rel) * (1 - 1e-12)  # below float64's rounding of it
    if not t0 > 0:
        return None
    t = np.float32(t0)
    if t > t0:  # round down to float32, then to bfloat16 (dropping low bits rounds down)
        t = np.nextafter(t, np.float32(0))
    bits = int(np.array(t, dtype=np.float32).view(np.uint32)) >> 16
    return bits if bits > 0 else None


def _split(A, parts):
    import torch

    hi = A.to(torch.bfloat16)
    lo = (A - hi.to(A.dtype)).to(torch.bfloat16)
    return torch.cat([{"hi": hi, "lo": lo}[p] for p in parts], dim=1).contiguous()


class SplitProduct:
    """X (float32, n x d) split once as [x_hi, x_hi, x_lo]; ``block`` multiplies a range of
    its rows with weights split by ``weights`` into bfloat16 correlations."""

    def __init__(self, X: np.ndarray):
        import torch

        if X.dtype != np.float32:
            raise TypeError(f"the bfloat16 index pass needs float32 data, got {X.dtype}")
        self.X3 = _split(torch.from_numpy(X), ("hi", "hi", "lo"))

    @property
    def nbytes(self) -> int:
        return self.X3.numel() * 2

    @staticmethod
    def buffer(size: int):
        """Flat bfloat16 storage for ``block``'s outputs (a block is a reshaped prefix)."""
        import torch

        return torch.empty(size, dtype=torch.bfloat16)

    @staticmethod
    def weights(W: np.ndarray):
        """W (float32, k x d) split as [w_hi, w_lo, w_hi], transposed (3d x k, a view)."""
        import torch

        return _split(torch.from_numpy(np.ascontiguousarray(W)), ("hi", "lo", "hi")).T

    def block(self, lo: int, hi: int, W3T, out):
        """Correlations of X[lo:hi] with the split weights into ``out`` (a bfloat16 tensor of
        hi - lo rows), returned as a NumPy int16 array of their bit patterns. On corrtree's
        threads (``_blas.workers``), PyTorch single-threaded, split by rows like ``matmul``."""
        import torch

        k = workers()
        if k <= 1:
            torch.matmul(self.X3[lo:hi], W3T, out=out)
        else:
            old = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                cuts = np.linspace(lo, hi, k + 1).astype(int)
                jobs = [
                    _pool(k).submit(torch.matmul, self.X3[a:b], W3T, out=out[a - lo : b - lo])
                    for a, b in zip(cuts[:-1], cuts[1:], strict=True)
                ]
                for f in jobs:
                    f.result()
            finally:
                torch.set_num_threads(old)
        return out.view(torch.int16).numpy()
