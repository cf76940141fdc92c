"""Time to a test accuracy, the user's measure: corrtree against the tight dense PyTorch step,
each with its best recipe, on all 60000 Fashion-MNIST training images, test accuracy on the
10000 test images every ``--eval-every`` steps and after each epoch (outside the timing).

Methods (``--methods``, comma-separated):

- ``corrtree-adam``: corrtree (``auto``, certified at these sizes), cross-entropy, a trained
  output layer, lazy Adam (``torch.optim.SparseAdam``'s semantics on the hidden weights).
- ``corrtree-paper``: corrtree with the paper's recipe (squared loss, fixed output layer,
  SGD lr 400 / batch).
- ``torch-adam``: the dense step written tight (``DenseAdam``: NumPy's BLAS for the products,
  preallocated buffers, in-place operations, the backward pass by hand, PyTorch's fused
  Adam), cross-entropy, a trained output layer: what a competent user runs.
- ``torch-adam-relu``: the same with b = 0 (a standard ReLU network of the same width):
  what the shifted ReLU costs in accuracy.

Every method starts from the same weights and sees the same batches (float32, m = 2^16,
batch 256, unit-norm rows). Wall times include preprocessing and every step, exclude
evaluation. Exactness: before timing, a few steps of corrtree's recipe in float64 are checked
against the dense engine on the same recipe.

    corrtree bench tta --out benchmarks/results/tta_m16.json
    corrtree bench tta --quick          # tiny sizes, seconds
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from corrtree.bench._common import compile_certified, header, parse, parser, save
from corrtree.datasets import load_dataset
from corrtree.engines.certified import CertifiedEngine
from corrtree.nets import ShiftedReLUNet, default_threshold, init_weights
from corrtree.training import batch_schedule, train

METHODS = ("corrtree-adam", "torch-adam", "torch-adam-relu", "corrtree-paper")


class DenseAdam:
    """The dense step as a competent user writes it, each part on the faster library here:
    the products in NumPy (OpenBLAS ran them 1.7-2x faster than PyTorch on this machine,
    ``benchmarks/README.md``) into buffers kept between steps, in-place elementwise work, the
    backward pass by hand, and ``torch.optim.Adam(fused=True)`` on the same memory (4-6x
    faster than the foreach Adam). Cross-entropy summed over the batch, trained output layer."""

    def __init__(self, W, A, X, labels, threshold, scale, lr):
        import torch

        self.W, self.A = W.copy(), A.copy()
        self.GW, self.GA = np.empty_like(self.W), np.empty_like(self.A)
        self.X, self.labels = X, labels
        self.b, self.scale = self.W.dtype.type(threshold), self.W.dtype.type(scale)
        params = [torch.nn.Parameter(torch.from_numpy(a)) for a in (self.W, self.A)]
        for p, g in zip(params, (self.GW, self.GA), strict=True):
            p.grad = torch.from_numpy(g)
        self.opt = torch.optim.Adam(params, lr=lr, fused=True)
        self.Z = None

    def step(self, rows):
        Xb, lab = self.X[rows], self.labels[rows]
        R = Xb.shape[0]
        if self.Z is None or self.Z.shape[0] < R:
            self.Z = np.empty((R, self.W.shape[0]), dtype=self.W.dtype)
        H = np.matmul(Xb, self.W.T, out=self.Z[:R])
        H -= self.b
        np.maximum(H, 0, out=H)
        F = H @ self.A
        F *= self.scale
        F -= F.max(axis=1, keepdims=True)
        P = np.exp(F)
        P /= P.sum(axis=1, keepdims=True)
        loss = -float(np.log(P[np.arange(R), lab]).sum())
        P[np.arange(R), lab] -= 1  # dLoss/dF
        np.matmul(H.T, P, out=self.GA)
        self.GA *= self.scale
        np.sign(H, out=H)
        H *= (P @ self.A.T) * self.scale  # the coefficients of dLoss/dW
        np.matmul(H.T, Xb, out=self.GW)
        self.opt.step()
        return loss

    def outputs(self, X):
        out = np.empty((X.shape[0], self.A.shape[1]), dtype=self.W.dtype)
        for lo in range(0, X.shape[0], 1024):
            H = X[lo : lo + 1024] @ self.W.T
            H -= self.b
            np.maximum(H, 0, out=H)
            np.matmul(H, self.A, out=out[lo : lo + 1024])
        return out * self.scale


def run_torch(name, W0, A0, X, labels, Xt, lt, threshold, scale, lr, batches, every, per_epoch,
              targets, log):  # fmt: skip
    m = DenseAdam(W0, A0, X, labels, threshold, scale, lr)
    out = {"eval_step": [], "test_accuracy": [], "train_seconds": [], "step_seconds": []}
    clock = 0.0
    for t, rows in enumerate(batches):
        t0 = time.perf_counter()
        m.step(rows)
        dt = time.perf_counter() - t0
        clock += dt
        out["step_seconds"].append(dt)
        if (t + 1) % every == 0 or (t + 1) % per_epoch == 0 or t + 1 == len(batches):
            acc = float(np.mean(m.outputs(Xt).argmax(1) == lt))
            _record(out, name, t + 1, acc, clock, log)
            if _done(out, targets):
                break
    out["preprocess_seconds"] = 0.0
    return out


def run_corrtree(name, W0, A0, X, labels, Xt, lt, threshold, lr, batches, every, targets,
                 log, options, recipe):  # fmt: skip
    net = ShiftedReLUNet.from_weights(W0.copy(), A0.copy(), threshold)
    out = {"eval_step": [], "test_accuracy": [], "train_seconds": []}
    steps = len(batches)

    if recipe == "adam":
        kw = {"loss": "cross_entropy", "optimizer": "adam", "train_output": True}
        y = labels
    else:
        kw = {}
        y = np.eye(int(labels.max()) + 1, dtype=np.float32)[labels]
    hist = train(
        net, X, y, steps=steps, lr=lr, batch_size=len(batches[0]), engine="auto",
        engine_options=options, eval=(Xt, lt if recipe == "adam" else np.eye(10)[lt]),
        eval_every=every, target_accuracy=max(targets) if targets else None, threads=2, **kw,
    )  # fmt: skip
    for s, a, c in zip(hist.eval_step, hist.eval_accuracy, hist.train_seconds, strict=True):
        _record(out, name, s, a, c, log)
    out["step_seconds"] = [sum(v) for v in zip(*hist.seconds.values(), strict=True)]
    out["preprocess_seconds"] = hist.preprocess_seconds
    out["engine"] = hist.engine
    out["stats"] = {k: int(v) for k, v in hist.stats.items()}
    return out


def _record(out, name, step, acc, clock, log):
    out["eval_step"].append(step)
    out["test_accuracy"].append(acc)
    out["train_seconds"].append(clock)
    log(f"  {name}: step {step}: test accuracy {acc:.4f} after {clock:.1f} s")


def _done(out, targets) -> bool:
    return bool(targets) and out["test_accuracy"][-1] >= max(targets)


def time_to(out, target):
    """(seconds, step) of the first evaluation at or above ``target``, or (None, None)."""
    for s, a, c in zip(out["eval_step"], out["test_accuracy"], out["train_seconds"], strict=True):
        if a >= target:
            return c, s
    return None, None


def check_exact(X, labels, width, threshold, batch, steps=3) -> float:
    """Relative gap between certified's weights (what ``auto`` trains at the benchmark's
    sizes) and the dense engine's after a few steps of the Adam recipe in float64 on these
    sizes (the first points)."""
    Ws = []
    for engine in ("dense", "certified"):
        net = ShiftedReLUNet(X.shape[1], width, threshold, n_outputs=10)
        train(
            net, X, labels, steps=steps, batch_size=batch, engine=engine, loss="cross_entropy",
            optimizer="adam", train_output=True, lr=1e-3,
        )  # fmt: skip
        Ws.append(net.W)
    return float(np.linalg.norm(Ws[1] - Ws[0]) / np.linalg.norm(Ws[0]))


def main(argv=None):
    p = parser(__name__, __doc__)
    p.add_argument("--m-log2", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--eval-every", type=int, default=47)
    p.add_argument("--targets", default="0.85,0.88", help="test accuracies to time")
    p.add_argument("--stop", action="store_true", help="stop each method at the last target")
    p.add_argument("--methods", default=",".join(METHODS[:3]))
    p.add_argument("--engine-opt", action="append", default=[], metavar="KEY=VALUE")
    args = parse(p, argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    options = CertifiedEngine.parse_options(args.engine_opt) or None
    targets = [float(t) for t in args.targets.split(",") if t]
    log = (lambda *a: None) if args.quick else (lambda s: print(s, file=sys.stderr, flush=True))
    if args.quick:
        data = load_dataset("digits")
        X, labels, Xt, lt = data.X[:1400], data.labels[:1400], data.X[1400:], data.labels[1400:]
        desc, args.m_log2, args.batch, args.epochs, args.eval_every = "digits", 10, 100, 2, 5
        args.lr, targets = 1e-2, [0.5, 0.7]
    else:
        train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")
        X, labels, Xt, lt = train.X, train.labels, test.X, test.labels
        desc = "fashion-mnist 60000 train / 10000 test"
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        methods = [m for m in methods if not m.startswith("torch")]
        print("PyTorch is not installed: the dense methods are skipped", file=sys.stderr)
    X, Xt = X.astype(np.float32), Xt.astype(np.float32)
    n, width = X.shape[0], 1 << args.m_log2
    b = default_threshold(width)
    per_epoch = math.ceil(n / args.batch)
    batches = list(batch_schedule(n, args.batch, args.epochs * per_epoch, args.seed))
    W0, A0 = init_weights(X.shape[1], (0, width), n_outputs=10, seed=args.seed, dtype=np.float32)
    gap = check_exact(X[:2000].astype(np.float64), labels[:2000], width, b, args.batch)
    log(f"exactness: corrtree vs dense after 3 Adam steps (float64): relative gap {gap:.2e}")
    compile_certified(np.float32, args.threads)
    results = {}
    for name in methods:
        log(f"{name} ...")
        if name.startswith("torch"):
            thr = 0.0 if name.endswith("relu") else b
            results[name] = run_torch(
                name, W0, A0, X, labels, Xt, lt, thr, 1 / math.sqrt(width), args.lr, batches,
                args.eval_every, per_epoch, targets if args.stop else [], log,
            )  # fmt: skip
        else:
            recipe = name.split("-", 1)[1]
            lr = args.lr if recipe == "adam" else 400.0 / args.batch
            results[name] = run_corrtree(
                name, W0, A0, X, labels, Xt, lt, b, lr, batches, args.eval_every,
                targets if args.stop else [], log, options, recipe,
            )  # fmt: skip
    rows = []
    for name, r in results.items():
        row = {"method": name, "mean_step_seconds": float(np.mean(r["step_seconds"]))}
        row["best_accuracy"] = float(max(r["test_accuracy"]))
        for tgt in targets:
            row[f"seconds_to_{tgt}"], row[f"step_to_{tgt}"] = time_to(r, tgt)
        rows.append(row)
    ref = next((r for r in rows if r["method"] == "torch-adam"), None)
    for row in rows:
        for tgt in targets:
            ours, dense = row[f"seconds_to_{tgt}"], ref and ref[f"seconds_to_{tgt}"]
            row[f"speedup_to_{tgt}"] = dense / ours if ours and dense else None
    report = {
        **header("tta", args.threads),
        "data": desc, "n": int(n), "d": int(X.shape[1]), "m": width, "batch": args.batch,
        "epochs": args.epochs, "lr_adam": args.lr, "eval_every": args.eval_every,
        "targets": targets, "engine_options": options or {}, "exact_gap_float64": gap,
        "rows": rows, "runs": results,
    }  # fmt: skip
    print(
        f"\n{desc}: m=2^{args.m_log2}, batch {args.batch}, {args.epochs} epochs, "
        f"{args.threads} threads, float32; wall time excludes evaluation"
    )
    head = f"{'method':16s} {'mean step':>10s} {'best acc':>9s}"
    for tgt in targets:
        head += f" {'to ' + format(tgt, '.0%'):>16s}"
    print(head)
    for row in rows:
        line = f"{row['method']:16s} {row['mean_step_seconds']:10.4f} {row['best_accuracy']:9.4f}"
        for tgt in targets:
            s, k, x = row[f"seconds_to_{tgt}"], row[f"step_to_{tgt}"], row[f"speedup_to_{tgt}"]
            cell = "-" if s is None else f"{s:.1f}s@{k}" + (f" {x:.2f}x" if x else "")
            line += f" {cell:>16s}"
        print(line)
    return save(report, args.out)


if __name__ == "__main__":
    main()
