"""Preprocessing is O(nmd): Init time of the Correlation DTree and WTree over sweeps of n, m
and d (one varied at a time around a base point), and the log-log slope of time against
n * m * d. Each structure built is checked against dense X W^T (every stored correlation).

Data: unit-norm Gaussian points and N(0, I) weights, float32.

    corrtree bench preprocessing --out benchmarks/results/preprocessing.json
"""

from __future__ import annotations

import numpy as np

from corrtree import _io
from corrtree.bench._common import header, loglog_slope, median_seconds, parse, parser
from corrtree.nets import normalize_rows
from corrtree.structures import CorrelationDTree, CorrelationWTree
from corrtree.training import thread_limit

STRUCTURES = {"dtree": CorrelationDTree, "wtree": CorrelationWTree}


def sweep(base: dict, values: dict) -> list[dict]:
    """Configurations that vary one of n, m, d at a time around ``base``."""
    configs = [dict(base)]
    for key, vals in values.items():
        configs += [{**base, key: v} for v in vals if v != base[key]]
    return configs


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--repeats", type=int, default=3, help="timed builds per point (median)")
    args = parse(p, argv)
    if args.quick:
        base = {"n": 64, "m": 512, "d": 16}
        values = {"n": [32, 128], "m": [256, 1024], "d": [8, 32]}
        args.repeats = 1
    else:
        base = {"n": 500, "m": 1 << 14, "d": 256}
        values = {
            "n": [125, 250, 1000, 2000],
            "m": [1 << 12, 1 << 13, 1 << 15, 1 << 16],
            "d": [32, 64, 128, 512, 784],
        }
    rng = np.random.default_rng(args.seed)
    rows = []
    with thread_limit(args.threads):
        for cfg in sweep(base, values):
            n, m, d = cfg["n"], cfg["m"], cfg["d"]
            X = normalize_rows(rng.standard_normal((n, d))).astype(np.float32)
            W = rng.standard_normal((m, d), dtype=np.float32)
            Z = X @ W.T
            for name, cls in STRUCTURES.items():
                secs = median_seconds(
                    lambda c=cls, W=W, X=X: c(W, X, dtype=np.float32), args.repeats
                )
                tree = cls(W, X, dtype=np.float32)
                exact = bool(np.allclose(tree.correlations(), Z, rtol=1e-5, atol=1e-5))
                rows.append(
                    {
                        **cfg,
                        "structure": name,
                        "nmd": n * m * d,
                        "seconds": secs,
                        "matches_dense": exact,
                        "bytes": int(tree.nbytes),
                    }
                )
                print(
                    f"{name:5s} n={n:5d} m={m:6d} d={d:4d}  {secs:8.3f} s  "
                    f"{n * m * d / secs / 1e9:6.2f} G nmd/s  exact {exact}",
                    flush=True,
                )
                del tree
    slopes = {
        s: loglog_slope(
            [r["nmd"] for r in rows if r["structure"] == s],
            [r["seconds"] for r in rows if r["structure"] == s],
        )
        for s in STRUCTURES
    }
    per_axis = {
        s: {
            key: loglog_slope(
                [
                    r[key]
                    for r in rows
                    if r["structure"] == s and all(r[k] == base[k] for k in base if k != key)
                ],
                [
                    r["seconds"]
                    for r in rows
                    if r["structure"] == s and all(r[k] == base[k] for k in base if k != key)
                ],
            )
            for key in base
        }
        for s in STRUCTURES
    }
    for s in STRUCTURES:
        print(
            f"{s}: time ~ (nmd)^{slopes[s]:.2f}; per axis "
            + ", ".join(f"{k}^{v:.2f}" for k, v in per_axis[s].items())
        )
    report = {
        **header("preprocessing", args.threads),
        "base": base,
        "rows": rows,
        "fitted_exponent_nmd": slopes,
        "fitted_exponent_per_axis": per_axis,
        "all_match_dense": all(r["matches_dense"] for r in rows),
    }
    if args.out:
        _io.write_json(args.out, report)
        print(f"wrote {args.out}")
    return report
