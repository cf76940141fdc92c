"""Where `certified`'s steps go, term by term, next to the tight dense step timed in the same
process: the bound on the ratio each term sets.

    python benchmarks/step_terms.py --m-log2 17 --out benchmarks/results/gd_terms_m17.json
    python benchmarks/step_terms.py --sgd --m-log2 16 --epochs 3 \\
        --out benchmarks/results/sgd_terms_m16.json
    python benchmarks/step_terms.py --adam --m-log2 16 --epochs 2 \\
        --out benchmarks/results/adam_terms_m16.json

GD: the configuration of ``corrtree bench gd`` (first 2000 Fashion-MNIST images, binary
labels, lr 0.2), ``--steps`` steps after 3 warm-up steps. SGD (``--sgd``): that of
``corrtree bench epochs`` (all 60000 images, one-hot 10 outputs, batch 256, lr 400/256),
``--epochs`` epochs from the index build, re-references included. The steps run under
cProfile: the BLAS products (``_blas.matmul``: the hot neurons' check and gradient, index
passes in float32) and the bfloat16 index products (``SplitProduct.block``) are taken by
their cumulative time, every numba kernel by its own; ``other`` is the rest. Then
``--dense-steps`` steps of ``torch-tight`` (the tight PyTorch baseline) from the same initial
weights and batches. A term of t seconds per step caps the ratio to the dense step at
dense / t, however fast the rest is. ``--adam``: the SGD configuration with the Adam recipe
(cross-entropy, trained output layer, lazy Adam lr 1e-3, certified with the options ``auto``
plans for it: a lazy index, ``rebuild_after=8``), against the tight dense Adam step of
``corrtree bench tta`` (``DenseAdam``).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import time

import numpy as np
import torch

import corrtree as ct
from corrtree.bench._common import compile_certified, header, reference_lr, save
from corrtree.bench._methods import make_method
from corrtree.bench.gd import load
from corrtree.bench.tta import DenseAdam
from corrtree.datasets import load_dataset
from corrtree.engines import make_engine
from corrtree.nets import init_weights
from corrtree.training import batch_schedule, take_step, thread_limit
from corrtree.training.losses import CrossEntropy
from corrtree.training.optim import Adam

PRODUCTS = {("_blas.py", "matmul"): "blas", ("_bf16.py", "block"): "bf16 index product"}


def term_seconds(profile: cProfile.Profile, steps: int) -> dict[str, float]:
    """Seconds per step of each product (cumulative) and corrtree kernel (own time), and
    ``other``: the rest of the profiled time."""
    stats = pstats.Stats(profile).stats
    total = max(cum for (_, _, _, cum, _) in stats.values())  # the outermost call
    terms = dict.fromkeys(PRODUCTS.values(), 0.0)
    for (path, _, name), (_, _, own, cum, _) in stats.items():
        product = PRODUCTS.get((path.rsplit("/", 1)[-1], name))
        if product:
            terms[product] += cum
        elif "_kernels" in path:
            terms[name] = terms.get(name, 0.0) + own
    terms["other"] = total - sum(terms.values())
    return {k: v / steps for k, v in sorted(terms.items(), key=lambda kv: -kv[1]) if v > 0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sgd", action="store_true", help="SGD epochs instead of full-batch GD")
    p.add_argument("--adam", action="store_true", help="SGD epochs with the Adam recipe")
    p.add_argument("--m-log2", type=int, default=None, help="default 17 (GD), 16 (SGD)")
    p.add_argument("--steps", type=int, default=20, help="GD steps profiled")
    p.add_argument("--epochs", type=int, default=3, help="SGD epochs profiled")
    p.add_argument("--dense-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="m = 2^12, a few steps (a smoke test)")
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    args.sgd = args.sgd or args.adam
    if args.m_log2 is None:
        args.m_log2 = 16 if args.sgd else 17
    if min(args.steps, args.epochs, args.dense_steps, args.threads) < 1:
        p.error("--steps, --epochs, --dense-steps and --threads must be >= 1")
    if args.sgd:
        data = load_dataset("fashion-mnist", n=2560 if args.quick else None)
        X, Y = data.X.astype(np.float32), data.y.astype(np.float32)  # y: one-hot
        lr, per_epoch = reference_lr(256), -(-X.shape[0] // 256)
        batches = list(batch_schedule(X.shape[0], 256, args.epochs * per_epoch, args.seed))
        warm = 0  # every step counts: the first epoch is part of what users wait for
    else:
        _, X, y = load(False)
        X = X.astype(np.float32)
        Y = y.reshape(len(y), -1).astype(np.float32)
        lr, warm = 0.2, 3
        batches = [None] * (warm + args.steps)
    if args.quick:
        args.m_log2, args.dense_steps = 12, 1
        batches = batches[: warm + 3]
    m = 1 << args.m_log2
    W0, A0 = init_weights(
        X.shape[1], (0, m), n_outputs=Y.shape[1], seed=args.seed, dtype=np.float32
    )
    compile_certified(np.float32, args.threads)
    recipe, options = {}, None
    if args.adam:
        lr, options = 1e-3, {"lazy": True, "rebuild_after": 8.0}
        recipe = dict(loss=CrossEntropy(), optimizer=Adam(), train_output=True)
    with thread_limit(args.threads):
        net = ct.ShiftedReLUNet.from_weights(W0.copy(), A0.copy())
        t = time.perf_counter()
        engine = make_engine("certified", net, X, options)
        build = time.perf_counter() - t
        for rows in batches[:warm]:
            take_step(engine, Y, lr, rows, **recipe)
        timed = batches[warm:]
        profile = cProfile.Profile()
        t = time.perf_counter()
        profile.enable()
        for rows in timed:
            take_step(engine, Y, lr, rows, **recipe)
        profile.disable()
        step = (time.perf_counter() - t) / len(timed)
    terms = term_seconds(profile, len(timed))
    torch.set_num_threads(args.threads)
    if args.adam:
        dense = DenseAdam(W0, A0, X, data.labels, net.threshold, net.scale, lr)
        run = dense.step
    else:
        dense = make_method("torch-tight", ct.ShiftedReLUNet.from_weights(W0, A0), X, Y)
        run = functools.partial(dense.step, lr)
    run(timed[0])  # first call: buffers
    t = time.perf_counter()
    for rows in timed[1 : 1 + args.dense_steps]:
        run(rows)
    dense_step = (time.perf_counter() - t) / len(timed[1 : 1 + args.dense_steps])
    stats = {k: int(v) for k, v in engine.stats().items()}
    kind = "SGD, batch 256" if args.sgd else "GD"
    if args.adam:
        kind = "Adam recipe, batch 256"
    print(
        f"{kind}, m = 2^{args.m_log2}: build {build:.1f} s; certified mean step "
        f"{step * 1e3:.1f} ms over {len(timed)} steps (profiled), tight dense step "
        f"{dense_step * 1e3:.1f} ms: {dense_step / step:.1f}x per step"
    )
    print(f"{'term':<24} {'ms/step':>8} {'share':>6} {'caps at':>8}")
    for name, sec in terms.items():
        print(f"{name:<24} {sec * 1e3:8.1f} {sec / step:6.1%} {dense_step / sec:7.1f}x")
    print(f"hot neurons {stats.get('hot_neurons')}, dense {stats.get('dense_neurons')} of {m}")
    if args.out:
        save(
            {
                **header("step_terms", args.threads),
                "config": kind,
                "m": m,
                "steps": len(timed),
                "dense_steps": args.dense_steps,
                "build_seconds": build,
                "step_seconds": step,
                "dense_step_seconds": dense_step,
                "term_seconds": terms,
                "stats": stats,
            },
            args.out,
        )


if __name__ == "__main__":
    main()
