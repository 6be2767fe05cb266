"""Bulk build of a SPANN index: head tree, head graph, RNG replica assignment, posting cut.

Pass 1 builds a hierarchical balanced k-means tree (k <= 32 per level, a size penalty keeps
clusters even; a node whose leaf target is small is clustered straight into its leaves) and
takes as each leaf's head the real vector nearest the leaf's centre; the tree is kept
(`HeadTree`) because multi-tenancy reuses it. Pass 2 puts the heads in an hnswlib graph whose
labels are posting ids. Pass 3 finds every vector's `candidates` nearest heads and keeps up to
`replicas` of them by the RNG rule. Pass 4 cuts postings to the page budget, keeping the
nearest entries, but never drops a vector's last copy. This module computes; it does not write
files (the index does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import hnswlib
import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from vecdb.index.base import Progress
from vecdb.index.params import BuildParams
from vecdb.kernels.posting import PARALLEL_MIN_ROWS, assign_balanced, rng_select

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
DIRECT_LEAVES = 256  # a node needing at most this many leaves is clustered into them at once
BRANCH = 32  # children of an upper tree node (SPTAG's BKTKmeansK)


def sq_dists(x: F32, c: F32) -> F32:
    """Squared L2 distances (n, k) between rows of x and rows of c."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    out: F32 = np.maximum(d, 0.0).astype(np.float32)
    return out


def balanced_kmeans(
    x: F32, k: int, rng: np.random.Generator, iters: int = 10, balance: float = 1.0
) -> tuple[F32, I64]:
    """k-means on a sample with a cluster-size penalty, then a penalised assignment of all x.
    A cluster of average size pays `balance` x the mean distance; this keeps leaves even."""
    n = len(x)
    if n <= k:
        return x.copy(), np.arange(n, dtype=np.int64)
    sample = x if n <= max(2000, 64 * k) else x[rng.choice(n, max(2000, 64 * k), replace=False)]
    centres = sample[rng.choice(len(sample), k, replace=False)].copy()
    for _ in range(iters):
        d = sq_dists(sample, centres)
        lam = balance * float(d.min(1).mean()) / (len(sample) / k)
        labels = assign_balanced(d, np.zeros(k), lam)
        counts = np.bincount(labels, minlength=k)
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        empty = counts == 0
        sums = np.add.reduceat(sample[order], starts[~empty], axis=0)
        centres[~empty] = sums / counts[~empty, None].astype(np.float32)
        if empty.any():
            centres[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
    d = sq_dists(x, centres)
    lam = balance * float(d.min(1).mean()) / (n / k)
    return centres, assign_balanced(d, np.zeros(k), lam)


@dataclass
class HeadTree:
    """The head tree: node parents, and the head (posting id) of each leaf, -1 for inner
    nodes and removed leaves. Splits turn a leaf into an inner node with two new leaves."""

    parent: npt.NDArray[np.int32]  # parent node of each node, -1 for the root
    head: npt.NDArray[np.int32]  # posting id of a leaf, -1 otherwise
    head_node: npt.NDArray[np.int32]  # node of each posting id, -1 if the head is gone

    def add_node(self, parent: int, head: int) -> int:
        node = len(self.parent)
        self.parent = np.append(self.parent, np.int32(parent))
        self.head = np.append(self.head, np.int32(-1))
        if head >= 0:
            self.set_head(node, head)
        return node

    def set_head(self, node: int, head: int) -> None:
        self.head[node] = head
        if head >= len(self.head_node):
            grow = np.full(max(head + 1, 2 * len(self.head_node), 16), -1, dtype=np.int32)
            grow[: len(self.head_node)] = self.head_node
            self.head_node = grow
        self.head_node[head] = node

    def split(self, old_head: int, new_heads: list[int]) -> None:
        node = int(self.head_node[old_head])
        self.head[node] = -1
        self.head_node[old_head] = -1
        for h in new_heads:
            self.add_node(node, h)

    def remove(self, head: int) -> None:
        node = int(self.head_node[head])
        self.head[node] = -1
        self.head_node[head] = -1


def build_tree(x: F32, n_heads: int, rng: np.random.Generator) -> tuple[I64, HeadTree]:
    """Pass 1: the balanced k-means tree; returns the rows of x chosen as heads (in posting id
    order) and the tree."""
    with threadpool_limits(1, user_api="blas"):  # multi-threaded BLAS is slow on small blocks
        return _build_tree(x, n_heads, rng)


def _build_tree(x: F32, n_heads: int, rng: np.random.Generator) -> tuple[I64, HeadTree]:
    parent, head, head_rows = [-1], [-1], list[int]()
    stack: list[tuple[int, I64, int]] = [(0, np.arange(len(x), dtype=np.int64), n_heads)]
    while stack:
        node, rows, target = stack.pop()
        if target <= 1 or len(rows) <= 1:
            leaf = x[rows]
            best = rows[int(((leaf - leaf.mean(0)) ** 2).sum(1).argmin())]
            head[node] = len(head_rows)
            head_rows.append(int(best))
            continue
        k = target if target <= DIRECT_LEAVES else BRANCH
        centres, labels = balanced_kmeans(x[rows], k, rng)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(len(centres) + 1))
        for c in range(len(centres)):
            members = rows[order[bounds[c] : bounds[c + 1]]]
            if len(members) == 0:
                continue
            parent.append(node)
            head.append(-1)
            sub = 1 if k == target else max(1, round(target * len(members) / len(rows)))
            stack.append((len(parent) - 1, members, sub))
    heads = np.asarray(head, dtype=np.int32)
    head_node = np.full(len(head_rows), -1, dtype=np.int32)
    head_node[heads[heads >= 0]] = np.flatnonzero(heads >= 0)
    tree = HeadTree(np.asarray(parent, dtype=np.int32), heads, head_node)
    return np.asarray(head_rows, dtype=np.int64), tree


def head_space(metric: str) -> str:
    """hnswlib space of the head graph: inner product for "ip", squared L2 otherwise."""
    return "ip" if metric == "ip" else "l2"


def make_head_graph(
    heads: F32, metric: str, p: BuildParams, threads: int, labels: I64 | None = None
) -> hnswlib.Index:
    """Pass 2: the heads in an hnswlib graph; label = posting id (0..n-1 unless given)."""
    graph = hnswlib.Index(space=head_space(metric), dim=heads.shape[1])
    graph.init_index(
        max_elements=int(len(heads) * 1.25) + 64,
        M=p.head_m,
        ef_construction=p.head_ef_construction,
        random_seed=p.seed,
    )
    ids = np.arange(len(heads)) if labels is None else labels
    graph.add_items(heads, ids, num_threads=threads)
    return graph


def select_replicas(
    graph: hnswlib.Index, live_heads: int, x: F32, p: BuildParams, threads: int
) -> tuple[I64, F32]:
    """Pass 3 (also used by inserts and reassignment): up to `replicas` posting ids per row by
    the RNG rule over the `candidates` nearest live heads; (n, replicas) ids -1 padded and
    their squared L2 distances (inf padded), nearest first."""
    k = max(1, min(p.candidates, live_heads))
    graph.set_ef(max(p.build_ef, k))
    threads = threads if len(x) >= PARALLEL_MIN_ROWS else 1
    labels = graph.knn_query(x, k=k, num_threads=threads)[0].astype(np.int64)
    uniq, inv = np.unique(labels, return_inverse=True)
    inv = inv.reshape(labels.shape)
    heads = np.asarray(graph.get_items(uniq), dtype=np.float32)
    cols, d = rng_select(x, inv, heads, p.rng_factor, p.replicas)
    picked = np.where(cols >= 0, np.take_along_axis(labels, np.maximum(cols, 0), 1), -1)
    return picked, d


def cut_postings(posts: I64, dists: F32, limit: int) -> npt.NDArray[np.bool_]:
    """Pass 4: keep each posting's `limit` nearest entries, and every row's nearest entry.
    `posts`/`dists` are (n, replicas) with -1 / inf padding; returns the kept mask."""
    n, r = posts.shape
    flat_p, flat_d = posts.ravel(), dists.ravel()
    valid = flat_p >= 0
    order = np.lexsort((flat_d, flat_p))
    order = order[valid[order]]
    sorted_p = flat_p[order]
    starts = np.searchsorted(sorted_p, sorted_p, side="left")
    rank = np.arange(len(order)) - starts
    keep = np.zeros(n * r, dtype=bool)
    keep[order[rank < limit]] = True
    keep = keep.reshape(n, r)
    orphan = ~keep.any(1)
    keep[orphan, 0] = True  # column 0 is the nearest head, always valid
    return keep


def build_threads(p: BuildParams) -> int:
    return p.threads or os.cpu_count() or 1


def plan(
    x: F32, metric: str, p: BuildParams, progress: Progress | None
) -> tuple[HeadTree, hnswlib.Index, I64, npt.NDArray[np.bool_]]:
    """Passes 1-4; returns the tree, the head graph, (n, replicas) postings and kept mask."""
    threads = build_threads(p)
    rng = np.random.default_rng(p.seed)
    n_heads = max(1, min(len(x), round(p.head_fraction * len(x))))
    head_rows, tree = build_tree(x, n_heads, rng)
    heads = x[head_rows]
    graph = make_head_graph(heads, metric, p, threads)
    posts = np.empty((len(x), p.replicas), dtype=np.int64)
    dists = np.empty((len(x), p.replicas), dtype=np.float32)
    step = 65_536
    for lo in range(0, len(x), step):
        posts[lo : lo + step], dists[lo : lo + step] = select_replicas(
            graph, len(heads), x[lo : lo + step], p, threads
        )
        if progress is not None:
            progress(min(step, len(x) - lo))
    return tree, graph, posts, cut_postings(posts, dists, p.posting_limit(x.shape[1])[1])
