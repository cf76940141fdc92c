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

from dataclasses import dataclass

import numpy as np

from .._kernels import balltree as B
from .._validation import dot_margin, max_row_norm
from .base import Options, SparseEngine, check_number


@dataclass(frozen=True)
class HalfSpaceOptions(Options):
    """``leaf_size``: neurons per leaf of the ball tree."""

    leaf_size: int = 32

    def check(self):
        check_number("leaf_size", self.leaf_size, kind=int, low=1)


class HalfSpaceEngine(SparseEngine):
    """Exact sparse training with a ball tree over the weights (SYZ21-style detection)."""

    name = "halfspace"
    Options = HalfSpaceOptions

    def __init__(self, net, X, options=None, *, max_memory=None):
        super().__init__(net, X, options, max_memory=max_memory)
        self.xnorm = np.linalg.norm(X.astype(np.float64), axis=1)
        self.counters.update(rebuilds=0, nodes_visited=0, moves_since_rebuild=0)
        self.rebuild()

    @classmethod
    def estimate_bytes(cls, n, m, d, *, dtype, n_outputs=1, batch=None, options=None):
        # Weights in leaf order and about 2 m / leaf_size balls of d + 7 numbers.
        item = np.dtype(dtype).itemsize
        nodes = 2 * m // cls.make_options(options).leaf_size + 1
        return m * d * item + nodes * (d + 7) * 8 + 2 * m * 8

    def rebuild(self) -> None:
        W = self.net.W
        self.tree = B.BallTree(*B.build(W, self.options.leaf_size))
        wmax = max_row_norm(W)
        xmax = float(self.xnorm.max()) if self.n else 0.0
        # Two roundings meet at the test: the pruning bound <c, x> + R ||x|| (float64, with
        # ||c|| and R up to about wmax) and the exact value in the network's dtype.
        self.margin = 2 * dot_margin(self.net.d, self.net.dtype, wmax, xmax)
        self.Wp = W[self.tree.perm]  # weights in leaf order: each leaf is one contiguous block
        self.pos = np.empty(self.m, dtype=np.int64)
        self.pos[self.tree.perm] = np.arange(self.m)
        self.counters["rebuilds"] += 1
        self.counters["moves_since_rebuild"] = 0

    def find(self, rows):
        ptr, ids, val, visited, products = B.query_rows(
            self.X, rows, self.xnorm, float(self.b), self.margin, self.Wp, self.tree
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
            B.grow_balls(self.net.W, neurons, self.tree)

    def stats(self):
        return {**self.counters, "nodes": int(self.tree.lo.size)}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.tree, self.Wp, self.pos))
