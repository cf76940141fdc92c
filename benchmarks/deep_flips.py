"""Why corrtree's and PyTorch's float32 weights differ by up to 1% of max |W| after 11 steps
at widths (2^16, 2^14), and 4e-7 at (2^14, 2^14): a few pre-activations within float32
rounding of their threshold fire in one run and not in the other. Runs k steps of both from
the same weights and batches and reports, per layer, the largest entry gap (relative to
max |W|), the relative Frobenius gap, and how many weight entries differ by more than 1e-4
of max |W|.

    python benchmarks/deep_flips.py --widths 65536,16384 --steps 1,3
"""

import argparse

import numpy as np

import corrtree as ct
from corrtree.bench.deep import torch_steps
from corrtree.datasets import load_dataset
from corrtree.nets import ShiftedReLUMLP, default_threshold
from corrtree.training import auto_lr, batch_schedule

p = argparse.ArgumentParser()
p.add_argument("--widths", default="65536,16384")
p.add_argument("--steps", default="1,3")
args = p.parse_args()
widths = tuple(int(w) for w in args.widths.split(","))
data = load_dataset("fashion-mnist")
X = data.X.astype(np.float32)
Y = np.eye(10, dtype=np.float32)[data.labels]
lr = auto_lr(X.shape[0], 256, default_threshold(widths[0]), len(widths))
for k in (int(s) for s in args.steps.split(",")):
    net = ShiftedReLUMLP(784, widths, n_outputs=10, dtype=np.float32)
    batches = list(batch_schedule(X.shape[0], 256, k, 0))
    _, Ws = torch_steps("dense", net, X, Y, batches, lr, 2)  # W_1, W_l[:, :2048]
    ct.train(net, X, Y, steps=k, lr=lr, batch_size=256, threads=2)
    for l, W in enumerate(Ws, start=1):
        ours = net.weights(l)[:, : W.shape[1]]
        d = np.abs(ours - W)
        print(
            f"{k} steps, layer {l}: max gap {d.max() / np.abs(W).max():.2e}, Frobenius gap "
            f"{np.linalg.norm(ours - W) / np.linalg.norm(W):.2e}, entries off by > 1e-4 max|W|: "
            f"{int((d > 1e-4 * np.abs(W).max()).sum())} of {W.size}"
        )
