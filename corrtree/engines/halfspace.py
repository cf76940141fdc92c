"""SYZ21's approach: half-space range reporting over the weights, with a ball tree.

For each data point x_i of the batch, the firing neurons are the weights in the half-space
<w, x_i> > b. The weights live in a ball tree (``corrtree._kernels.balltree``); a query
prunes every ball whose largest possible inner product with x_i stays at or below b and
computes exact inner products in the leaves it reaches. When neurons move, the balls on
their way to the root grow to keep containing them (d per ball), so queries stay exact; the
tree is rebuilt once as many neuron moves have piled up as there are neurons.

Preprocessing is O(m d log m) and memory O(m d), independent of n: the opposite trade-off
from the correlation trees. The query cost depends on how well balls separate in R^d: in low
dimension most of the tree is pruned; at d = 784 a query visits almost every leaf.
"""

from __future__ import annotations

import numpy as np

from .._kernels import balltree as B
from .base import SparseEngine


class HalfSpaceEngine(SparseEngine):
    """Exact sparse training with a ball tree over the weights (SYZ21-style detection).

    ``leaf_size``: neurons per leaf (default 32).
    """

    name = "halfspace"

    def __init__(self, net, X, Y, *, leaf_size: int = 32, max_memory=None, **kwargs):
        super().__init__(net, X, Y)
        if isinstance(leaf_size, bool) or not isinstance(leaf_size, int) or leaf_size < 1:
            raise ValueError(f"leaf_size must be a positive integer, got {leaf_size!r}")
        self.leaf_size = leaf_size
        self.xnorm = np.linalg.norm(X.astype(np.float64), axis=1)
        self.counters.update(rebuilds=0, nodes_visited=0, moves_since_rebuild=0)
        self.rebuild()

    def rebuild(self) -> None:
        W = self.net.W
        (
            self.perm,
            self.lo,
            self.hi,
            self.left,
            self.right,
            self.parent,
            self.center,
            self.radius,
            self.leaf_of,
        ) = B.build(W, self.leaf_size)
        wmax = float(np.sqrt(np.max(np.sum(W.astype(np.float64) ** 2, axis=1)))) if self.m else 0
        xmax = float(self.xnorm.max()) if self.n else 0.0
        eps = np.finfo(self.net.dtype).eps
        # The pruning bound is computed in float64 from float64 centers; the exact values in
        # the network's dtype may exceed the true value by a few ulps of |w||x|.
        self.margin = 64 * eps * (1.0 + abs(float(self.b)) + wmax * xmax)
        self.Wp = W[self.perm]  # weights in leaf order: each leaf is one contiguous block
        self.pos = np.empty(self.m, dtype=np.int64)
        self.pos[self.perm] = np.arange(self.m)
        self.counters["rebuilds"] += 1
        self.counters["moves_since_rebuild"] = 0

    def detect(self, rows):
        ptr, ids, val, visited, products = B.query_rows(
            self.X,
            rows,
            self.xnorm,
            float(self.b),
            self.margin,
            self.Wp,
            self.perm,
            self.lo,
            self.hi,
            self.left,
            self.right,
            self.center,
            self.radius,
        )
        self.counters["nodes_visited"] += int(visited)
        self.counters["inner_products"] += int(products)
        return ptr, ids, val

    def maintain(self, neurons):
        self.counters["moves_since_rebuild"] += int(neurons.size)
        if self.counters["moves_since_rebuild"] >= self.m:
            self.rebuild()
        else:
            self.Wp[self.pos[neurons]] = self.net.W[neurons]
            B.grow_balls(self.net.W, neurons, self.leaf_of, self.parent, self.center, self.radius)

    def stats(self):
        return {**self.counters, "nodes": int(self.lo.size)}

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (self.perm, self.lo, self.hi, self.left, self.right, self.parent)
            + (self.center, self.radius, self.leaf_of, self.Wp, self.pos)
        )
