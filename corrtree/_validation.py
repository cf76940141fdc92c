"""Input checks shared by the public API. Every message names the argument and the values."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def as_float_array(a, name: str, ndim: int, dtype=None) -> np.ndarray:
    """Return ``a`` as a C-contiguous float array of ``ndim`` dims with finite values."""
    if not (hasattr(a, "__array__") or isinstance(a, list | tuple)):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in FLOAT_DTYPES else np.float64
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))
        where = tuple(int(v) for v in bad[0])
        raise ValueError(
            f"{name} contains {len(bad)} non-finite value(s) (NaN or inf), "
            f"first at index {where}: {arr[where]}"
        )


def as_scalar(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def as_index(i, name: str, size: int) -> int:
    if isinstance(i, bool) or not isinstance(i, numbers.Integral | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(i).__name__}")
    i = int(i)
    if not 0 <= i < size:
        raise IndexError(f"{name}={i} is out of range for size {size}")
    return i


def as_positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(nbytes: int, what: str, limit: int | None = None) -> None:
    """Refuse an allocation of ``nbytes`` that would not fit: more than ``limit`` (default:
    the memory available now), or than the CORRTREE_MAX_MEMORY environment variable (bytes),
    which can only lower the limit, never raise it above what the machine has."""
    available = available_memory()
    limit = available if limit is None else min(int(limit), available)
    env = os.environ.get("CORRTREE_MAX_MEMORY")
    if env:
        try:
            cap = float(env)
        except ValueError:
            cap = math.nan
        if not (math.isfinite(cap) and cap >= 0):
            raise ValueError(
                f"CORRTREE_MAX_MEMORY must be a finite number of bytes >= 0, got {env!r}"
            )
        limit = min(limit, int(cap))
    if nbytes > limit:
        raise MemoryError(
            f"{what} needs about {fmt_bytes(nbytes)} but only {fmt_bytes(limit)} is available; "
            "use fewer data points, a smaller width, float32, or an engine with O(candidates) "
            "memory"
        )


def max_row_norm(W: np.ndarray) -> float:
    """The largest Euclidean norm of a row of W, in float64 (0 for no rows)."""
    if W.shape[0] == 0:
        return 0.0
    return float(np.sqrt(np.max(np.einsum("ij,ij->i", W, W, dtype=np.float64))))


def dot_margin(d: int, dtype, wmax: float, xmax: float) -> float:
    """A rigorous bound on the rounding error of an inner product <w, x> of length d computed
    in ``dtype`` in any summation order, fused or not: gamma_d ||w|| ||x|| with
    gamma_d = d u / (1 - d u), u = eps / 2 (Higham, Accuracy and Stability of Numerical
    Algorithms, 3.1), taken as (d + 2) eps (1 + wmax xmax), twice that with room for values
    near zero. A detector whose test meets two such roundings (a stored or bounded value, and
    the exact check) widens it by twice this, so no pair the exact check finds above b is
    missed."""
    eps = float(np.finfo(dtype).eps)
    return (d + 2) * eps * (1.0 + wmax * xmax)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # pragma: no cover
