"""Would BLAS over sub-blocks spare work on the dense neurons of full-batch GD?

A neuron with candidates (z > b - slack) on more than 15% of the points is checked by
`certified` on every point with one BLAS product. If its candidate points fell in a few
clusters of the data, multiplying it only with those clusters' rows would spare the rest.
This script measures how much: it clusters the points (k-means, several k), and reports,
over the dense neurons, the mean share of the points lying in clusters where the neuron has
at least one candidate (the rows a block product would still multiply). Weights at
initialisation and after ``--steps`` GD steps of the `gd` benchmark's configuration
(Fashion-MNIST, first 2000 images, m = 2^17, lr 0.2).

    python benchmarks/dense_blocks.py --steps 50 --out benchmarks/results/dense_blocks.json
"""

import numpy as np
from sklearn.cluster import KMeans

import corrtree as ct
from corrtree.bench._common import header, parse, parser, save
from corrtree.datasets import load_dataset
from corrtree.engines.certified import CertifiedOptions
from corrtree.nets import init_weights

p = parser("dense_blocks", __doc__)
p.add_argument("--m-log2", type=int, default=17)
p.add_argument("--steps", type=int, default=50)
p.add_argument("--clusters", default="10,32,64,128")
args = parse(p, None)

data = load_dataset("fashion-mnist", n=2000, targets="binary")
X = data.X.astype(np.float32)
n, d = X.shape
m = 2 ** (10 if args.quick else args.m_log2)
steps = 2 if args.quick else args.steps
W0, A0 = init_weights(d, (0, m), seed=0, dtype=np.float32)
net = ct.ShiftedReLUNet.from_weights(W0, A0)
slack, dense_fraction = CertifiedOptions.slack, CertifiedOptions.dense_fraction  # defaults
cuts = {
    k: KMeans(k, n_init=1, random_state=0).fit(X).labels_
    for k in map(int, args.clusters.split(","))
}
sizes = {k: np.bincount(lab, minlength=k) for k, lab in cuts.items()}


def measure(W):
    b = net.dtype.type(net.threshold - slack)
    need = {k: [] for k in cuts}
    n_dense = 0
    for s in range(0, m, 8192):
        C = (W[s : s + 8192] @ X.T) > b
        C = C[C.sum(1) > dense_fraction * n]
        n_dense += C.shape[0]
        for k, lab in cuts.items():
            hit = np.stack([C[:, lab == c].any(1) for c in range(k)], axis=1)
            need[k].append((hit * sizes[k]).sum(1) / n)
    return n_dense, {k: float(np.concatenate(need[k]).mean()) for k in cuts}


report = {
    **header("dense_blocks", args.threads),
    "n": n,
    "m": m,
    "slack": slack,
    "dense_fraction": dense_fraction,
    "states": [],
}
for label, k in (("initial", 0), (f"after {steps} GD steps", steps)):
    if k:
        ct.train(net, X, data.y, steps=k, lr=0.2, engine="certified", threads=args.threads)
    n_dense, rows = measure(net.W)
    report["states"].append({"weights": label, "dense_neurons": n_dense, "clusters": rows})
    print(f"{label}: {n_dense} dense neurons")
    for k, share in rows.items():
        print(f"  k-means {k:4d}: a block product multiplies {share:.1%} of the points")

save(report, args.out)
