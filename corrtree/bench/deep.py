"""Deep shifted-ReLU networks: corrtree's exact sparse engine against tight PyTorch.

Fashion-MNIST (all 60000 training images, unit norm, one-hot 10 outputs), SGD with batch 256,
float32, lr = 2 / (B p L) (``auto_lr``), from the same initial weights and the same batches,
all methods in one process:

- ``corrtree``: ``DeepEngine`` (layer 1 found by ``--layer1``, by default ``auto``: certified
  at these sizes; later layers from the sparse inputs, back-propagation over firing units
  only), every step run and timed;
- ``torch-dense``: the same network and step written tight in PyTorch (preallocated
  buffers, in-place masks, ``out=`` products; the manual gradient is what autograd computes,
  without its graph);
- ``torch-sparse``: PyTorch using the sparse activations: each later layer's input as a
  sparse CSR tensor in ``torch.sparse.mm``, the error signal as a sparse tensor in the
  gradient and back-propagation products.

The PyTorch step costs do not change from step to step, so they are timed on ``--sample``
steps and extrapolated to the run (the table says so); their weights after those steps are
checked against corrtree's (relative Frobenius gap <= 1e-3 per layer, float32). Reported:
wall time end to end per method (corrtree's with its preprocessing), the speed-ups, test
accuracy on the 10000 test images after each epoch, and the floor: firing pairs of each
layer times their input's nonzeros, the forward work no exact method that reads only firing
units can avoid, with the multiple of it that corrtree's forward multiply-adds reach (its
backward runs over firing pairs only).

    corrtree bench deep --out benchmarks/results/deep.json
    corrtree bench deep --widths 16384,16384 --epochs 1
    corrtree bench deep --quick
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from corrtree.bench._common import compile_certified, header, parse, parser, save
from corrtree.datasets import load_dataset
from corrtree.engines import ENGINES
from corrtree.nets import ShiftedReLUMLP, default_threshold
from corrtree.training import auto_lr, batch_schedule, train

# Weights of corrtree and each PyTorch method after the sampled steps: relative Frobenius gap
# at most TOLERANCE per layer. Not the largest entry: in float32 a pre-activation within
# rounding of its threshold can fire in one run and not the other, and one such pair moves a
# few entries of a row by up to 1% of max |W| (benchmarks/deep_flips.py counts them).
TOLERANCE = 1e-3


def torch_steps(kind, net, X, Y, batches, lr, threads):
    """Run the PyTorch step on the given batches; returns (seconds per step, weights)."""
    import torch

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.set_num_threads(threads)
    # W_l (m_l, m_(l-1)) contiguous, as PyTorch's products like it
    Ws = [torch.tensor(net.W1)] + [
        torch.from_numpy(net.Wt[l]).T.contiguous() for l in range(2, net.depth + 1)
    ]
    A = torch.tensor(net.A) * net.scale
    b = [float(t) for t in net.thresholds]
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    B = len(batches[0])
    Z = [torch.empty(B, W.shape[0]) for W in Ws]
    G = [torch.empty(W.shape) for W in Ws]
    times = []
    for rows in batches:
        t0 = time.perf_counter()
        r = torch.from_numpy(rows)
        Xb = Xt.index_select(0, r)
        h = Xb
        hs = [Xb]
        for l, W in enumerate(Ws):
            if kind == "sparse" and l > 0:
                z = torch.sparse.mm(h.to_sparse_csr(), W.T)
                Z[l] = z
            else:
                torch.matmul(h, W.T, out=Z[l])
            Z[l].sub_(b[l]).clamp_(min=0)  # now h^l
            h = Z[l]
            hs.append(h)
        E = h @ A - Yt.index_select(0, r)
        D = hs[-1].sign()
        D.mul_(E @ A.T)  # delta of the last layer
        for l in range(len(Ws) - 1, -1, -1):
            if kind == "sparse" and l > 0:
                Ds = D.to_sparse_csr()
                G[l] = torch.sparse.mm(Ds.t().to_sparse_csr(), hs[l])
                Dn = torch.sparse.mm(Ds, Ws[l]) if l else None
            else:
                torch.matmul(D.T, hs[l], out=G[l])
                Dn = D @ Ws[l] if l else None
            if l:
                D = hs[l].sign().mul_(Dn)
        for W, g in zip(Ws, G, strict=True):
            W.sub_(g, alpha=lr)
        times.append(time.perf_counter() - t0)
    # kept for the check: W_1 and the first 2048 columns of the later layers (their whole
    # copies would double the memory of the widest runs)
    kept = [W[:, :2048].numpy().copy() if l else W.numpy().copy() for l, W in enumerate(Ws)]
    return float(np.mean(times)), kept


def warm_up(X, Y, threads):
    """Compile every kernel the timed runs can reach before timing them: `certified` on its
    own (``compile_certified``), then a tiny deep network over each first-layer engine."""
    compile_certified(np.float32, threads)
    for layer1 in ("dense", "certified"):
        net = ShiftedReLUMLP(X.shape[1], (64, 32), n_outputs=Y.shape[1], dtype=np.float32)
        train(net, X[:64], Y[:64], steps=3, lr=0.1, batch_size=16, engine=layer1, threads=threads)


def run(widths, epochs, sample, threads, X, Y, Xtest, ytest, lr, quick, seed=0, layer1="auto"):
    n, B = X.shape[0], 256 if not quick else 32
    steps_per_epoch = -(-n // B)
    steps = epochs * steps_per_epoch
    schedule = list(batch_schedule(n, B, steps, seed))
    full = [r for r in schedule if r.size == B]
    net = ShiftedReLUMLP(X.shape[1], widths, n_outputs=Y.shape[1], seed=seed, dtype=np.float32)
    out = {"widths": list(widths), "epochs": epochs, "steps": steps, "batch": B}
    # the PyTorch methods on the first `sample` steps (they start from the same weights)
    for kind in ("dense", "sparse"):
        sec, Ws = torch_steps(kind, net, X, Y, full[: sample + 1], lr, threads)  # copies W
        out[f"torch_{kind}"] = {"step_seconds": sec, "sampled_steps": sample + 1}
        out[f"torch_{kind}_weights"] = Ws
    # corrtree: every step, test accuracy after each epoch
    acc, epoch_end = [], []

    def after(t, net_, info):
        if t == sample:  # compare with the PyTorch runs of the same steps
            for kind in ("dense", "sparse"):
                ours = [
                    (net_.weights(l)[:, : W.shape[1]], W)
                    for l, W in enumerate(out.pop(f"torch_{kind}_weights"), start=1)
                ]
                m = out[f"torch_{kind}"]
                m["max_weight_gap"] = float(
                    max(np.max(np.abs(a - W)) / np.max(np.abs(W)) for a, W in ours)
                )
                m["frobenius_weight_gap"] = float(
                    max(np.linalg.norm(a - W) / np.linalg.norm(W) for a, W in ours)
                )
        if (t + 1) % steps_per_epoch == 0:
            t0 = time.perf_counter()
            acc.append(float(np.mean(net_.predict(Xtest).argmax(axis=1) == ytest)))
            epoch_end.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    hist = train(
        net,
        X,
        Y,
        steps=steps,
        lr=lr,
        batch_size=B,
        seed=seed,
        threads=threads,
        engine=layer1,
        callback=after,
    )
    wall = time.perf_counter() - t0 - sum(epoch_end)
    per_step = [sum(s) for s in zip(*hist.seconds.values(), strict=True)]
    st = hist.stats
    out["corrtree"] = {
        "engine": hist.engine,
        "preprocess_seconds": hist.preprocess_seconds,
        "mean_step_seconds": float(np.mean(per_step)),
        "median_step_seconds": float(np.median(per_step)),
        "total_seconds": wall,
        "test_accuracy": acc,
        "pairs_per_step": st["pairs"] / steps,
        "floor_forward_madds_per_step": st["floor_madds"] / steps,
        "forward_madds_per_step": st["forward_madds"] / steps,
    }
    for kind in ("dense", "sparse"):
        m = out[f"torch_{kind}"]
        m["total_seconds"] = m["step_seconds"] * steps  # extrapolated
        m["speedup_end_to_end"] = m["total_seconds"] / wall
        m["exact_within_tolerance"] = m.get("frobenius_weight_gap", np.inf) <= TOLERANCE
    return out


def main(argv=None) -> dict:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--widths",
        action="append",
        help="e.g. 16384,16384 (repeatable; default 16384,16384 and 65536,16384)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sample", type=int, default=10, help="PyTorch steps timed (default 10)")
    p.add_argument(
        "--layer1",
        default="auto",
        choices=("auto", *sorted(ENGINES)),
        help="the engine that finds layer 1's firing pairs (default auto: dense for small "
        "problems, else certified)",
    )
    args = parse(p, argv)
    if args.quick:
        data = load_dataset("digits")
        X, labels = data.X[:1200], data.labels[:1200]
        Xtest, ytest = data.X[1200:], data.labels[1200:]
        widths_list = [(256, 128), (256, 128, 64)]
        epochs, sample = 1, 3
    else:
        data = load_dataset("fashion-mnist")
        test = load_dataset("fashion-mnist", split="test")
        X, labels, Xtest, ytest = data.X, data.labels, test.X, test.labels
        widths_list = (
            [tuple(int(w) for w in s.split(",")) for s in args.widths]
            if args.widths
            else [(1 << 14, 1 << 14), (1 << 16, 1 << 14)]
        )
        epochs, sample = args.epochs, args.sample
    Y = np.eye(int(labels.max()) + 1, dtype=np.float32)[labels]
    X = X.astype(np.float32)
    Xtest = Xtest.astype(np.float32)
    report = header("deep", args.threads) | {"runs": []}
    warm_up(X, Y, args.threads)
    for widths in widths_list:
        print(f"widths {widths}: {epochs} epochs")
        B = 32 if args.quick else 256
        lr = auto_lr(X.shape[0], B, default_threshold(widths[0]), len(widths))
        r = run(
            widths,
            epochs,
            sample,
            args.threads,
            X,
            Y,
            Xtest,
            ytest,
            lr,
            args.quick,
            args.seed,
            args.layer1,
        )
        r["lr"] = lr
        c = r["corrtree"]
        print(
            f"  corrtree   {c['total_seconds']:8.1f} s end to end, mean step "
            f"{c['mean_step_seconds']:.4f} s, test accuracy {c['test_accuracy']}"
        )
        for kind in ("dense", "sparse"):
            m = r[f"torch_{kind}"]
            print(
                f"  torch-{kind:6s} {m['total_seconds']:8.1f} s (step {m['step_seconds']:.4f} s "
                f"x {r['steps']}, timed on {m['sampled_steps']}): corrtree "
                f"{m['speedup_end_to_end']:.2f}x; weight gap {m.get('max_weight_gap', 0):.1e}"
            )
        multiple = c["forward_madds_per_step"] / max(1, c["floor_forward_madds_per_step"])
        c["forward_multiple_of_floor"] = multiple
        print(
            f"  forward floor {c['floor_forward_madds_per_step']:.3g} madds/step (firing units "
            f"x input nonzeros); corrtree's forward did {multiple:.1f}x that"
        )
        report["runs"].append(r)
    report["all_exact"] = all(
        r[f"torch_{k}"]["exact_within_tolerance"]
        for r in report["runs"]
        for k in ("dense", "sparse")
    )
    return save(report, args.out)
