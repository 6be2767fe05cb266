"""The clustering tree kept whole: a hierarchical balanced k-means tree over the vectors.

Owns the tree's nodes and the membership of every slot. Each node has a centroid, children
(first_child / next_sibling arrays), a level (root 0), a count (live vectors whose *primary*
leaf is below it) and a radius (an upper bound of the plain L2 distance of those vectors to
its centroid). A leaf stands for one posting: its centroid is that posting's head vector,
which lives in the head graph and is read through `leaf_vectors` (head vectors are not stored
twice); inner nodes store their centroids here. `primary[slot]` is the posting of a slot's
primary leaf (its nearest posting holding a current copy), so removes and moves update counts
along one path. SPANN keeps the tree right through bulk build, splits (a leaf becomes an inner
node with two leaves), merges (a leaf is removed, and so is every inner node left without
children, up the path), moves and removes; the tenant tree and the multi-vector codebook build
on the same API: `children`, `path_to_root`, `leaves_under`, `centroid`, iteration.
Node ids are never reused (a removed node has parent -2); `version` counts changes. No I/O:
`to_sections` / `from_sections` give the raw little-endian arrays the owner persists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Progress
from vecdb.kernels.kmeans import kmeans, paired_sq_dists, sq_dists

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
ROOT = 0
REMOVED = -2  # parent of a removed node
DIRECT_LEAVES = 256  # a node needing at most this many leaves is clustered straight into them
BRANCH = 32  # children of an upper node (SPTAG's BKTKmeansK)
KMEANS_ITERS = 8  # Lloyd iterations per node
BALANCE = 1.0  # size penalty of the tree's k-means (see kernels/kmeans)
WIDEN_BYTES = 8 << 20  # rows (as float32 bytes) per chunk when widening radii
NARROW_POSTING = int(np.iinfo(np.int16).max)  # `primary` is int16 while posting ids are below


def _grow(a: npt.NDArray[np.generic], n: int, fill: float) -> npt.NDArray[np.generic]:
    if n <= len(a):
        return a
    out = np.full((max(n, 2 * len(a), 16), *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


class ClusterTree:
    """The tree; see the module docstring. Leaves are addressed by posting id or node id."""

    dim: int  # vector dimension
    parent: I32  # parent node, -1 for the root, REMOVED for removed nodes
    first_child: I32  # first child, -1 for none
    next_sibling: I32  # next child of the same parent, -1 at the end
    level: I32  # depth (root 0)
    count: I64  # live vectors whose primary leaf is at or below the node
    radius: F32  # upper bound of the L2 distance of those vectors to the centroid
    posting: I32  # a leaf's posting id (its head's label), -1 for inner nodes
    crow: I32  # an inner node's row in `centroids`, -1 for leaves
    centroids: F32  # (rows, dim) centroids of inner nodes
    n_nodes: int  # node ids in use (live and removed)
    n_rows: int  # centroid rows in use
    leaf_of: I32  # posting id -> leaf node, -1 if the posting has none
    primary: npt.NDArray[np.int16] | I32  # slot -> posting of its primary leaf, -1 if not
    # live: int16 while every posting id fits (GloVe-50: 17,554 heads; 0.74 MiB less per
    # 390,000 slots), int32 from the first that does not (`_fit`); saved as int32 either way
    leaf_vectors: Callable[[I64], F32] | None  # head vectors by posting id (head graph)
    version: int  # bumped by every change of membership or structure (derived caches key on it)

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.parent = np.zeros(0, np.int32)
        self.first_child = np.zeros(0, np.int32)
        self.next_sibling = np.zeros(0, np.int32)
        self.level = np.zeros(0, np.int32)
        self.count = np.zeros(0, np.int64)
        self.radius = np.zeros(0, np.float32)
        self.posting = np.zeros(0, np.int32)
        self.crow = np.zeros(0, np.int32)
        self.centroids = np.zeros((0, dim), np.float32)
        self.n_nodes = self.n_rows = 0
        self.leaf_of = np.zeros(0, np.int32)
        self.primary = np.zeros(0, np.int16)
        self.leaf_vectors = None
        self.version = 0

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Live nodes."""
        return int((self.parent[: self.n_nodes] != REMOVED).sum())

    def __iter__(self) -> Iterator[int]:
        """Live nodes, depth first (a node before its children)."""
        if self.n_nodes == 0:
            return
        stack = [ROOT]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(self.children(node).tolist()))

    def is_leaf(self, node: int) -> bool:
        return bool(self.posting[node] >= 0)

    def alive(self, node: int) -> bool:
        return 0 <= node < self.n_nodes and bool(self.parent[node] != REMOVED)

    def children(self, node: int) -> I64:
        """The node's children, in sibling order."""
        out = []
        c = int(self.first_child[node])
        while c >= 0:
            out.append(c)
            c = int(self.next_sibling[c])
        return np.asarray(out, dtype=np.int64)

    def path_to_root(self, node: int) -> I64:
        """The node, its parent, ... the root."""
        out = []
        while node >= 0:
            out.append(node)
            node = int(self.parent[node])
        return np.asarray(out, dtype=np.int64)

    def leaves_under(self, node: int) -> I64:
        """Leaf nodes at or below `node`, depth first."""
        leaves = [n for n in self._walk(node) if self.posting[n] >= 0]
        return np.asarray(leaves, dtype=np.int64)

    def leaf_postings(self) -> I64:
        """Posting ids of all live leaves, ascending."""
        out: I64 = np.flatnonzero(self.leaf_of >= 0).astype(np.int64)
        return out

    def centroid(self, node: int) -> F32:
        """A node's centroid (a leaf's is its head vector, read from the head graph)."""
        out: F32 = self.centroids_of(np.array([node]))[0]
        return out

    def centroids_of(self, nodes: I64) -> F32:
        """Centroids of several nodes, (len(nodes), dim)."""
        out = np.empty((len(nodes), self.dim), np.float32)
        leaf = self.posting[nodes] >= 0
        if (~leaf).any():
            out[~leaf] = self.centroids[self.crow[nodes[~leaf]]]
        if leaf.any():
            assert self.leaf_vectors is not None, "leaf centroids need the head vectors"
            out[leaf] = self.leaf_vectors(self.posting[nodes[leaf]].astype(np.int64))
        return out

    def _walk(self, node: int) -> Iterator[int]:
        stack = [node]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(self.children(n).tolist()))

    # --- growing ---------------------------------------------------------------------------

    def _new_node(self, parent: int, posting: int, centroid: F32 | None) -> int:
        node = self.n_nodes
        self.n_nodes += 1
        n = self.n_nodes
        self.parent = _grow(self.parent, n, -1)  # type: ignore[assignment]
        self.first_child = _grow(self.first_child, n, -1)  # type: ignore[assignment]
        self.next_sibling = _grow(self.next_sibling, n, -1)  # type: ignore[assignment]
        self.level = _grow(self.level, n, 0)  # type: ignore[assignment]
        self.count = _grow(self.count, n, 0)  # type: ignore[assignment]
        self.radius = _grow(self.radius, n, 0)  # type: ignore[assignment]
        self.posting = _grow(self.posting, n, -1)  # type: ignore[assignment]
        self.crow = _grow(self.crow, n, -1)  # type: ignore[assignment]
        self.parent[node] = parent
        self.level[node] = 0 if parent < 0 else self.level[parent] + 1
        if parent >= 0:  # prepend to the parent's children
            self.next_sibling[node] = self.first_child[parent]
            self.first_child[parent] = node
        if posting >= 0:
            self._set_leaf(node, posting)
        else:
            assert centroid is not None
            self._set_centroid(node, centroid)
        return node

    def _set_leaf(self, node: int, posting: int) -> None:
        self.posting[node] = posting
        self.crow[node] = -1
        self.leaf_of = _grow(self.leaf_of, posting + 1, -1)  # type: ignore[assignment]
        self.leaf_of[posting] = node

    def _set_centroid(self, node: int, centroid: F32) -> None:
        row = self.n_rows
        self.n_rows += 1
        self.centroids = _grow(self.centroids, self.n_rows, 0)  # type: ignore[assignment]
        self.centroids[row] = centroid
        self.crow[node] = row
        self.posting[node] = -1

    def trim(self) -> None:
        """Drop the growth slack of the node and centroid arrays (after a bulk build)."""
        n = self.n_nodes
        for name in ("parent", "first_child", "next_sibling", "level", "count", "radius"):
            setattr(self, name, getattr(self, name)[:n].copy())
        self.posting, self.crow = self.posting[:n].copy(), self.crow[:n].copy()
        self.centroids = self.centroids[: self.n_rows].copy()

    def grow_slots(self, n: int) -> None:
        """Make room for slots below n."""
        if n > len(self.primary):
            grown = np.full(max(n, len(self.primary) * 5 // 4), -1, self.primary.dtype)
            grown[: len(self.primary)] = self.primary
            self.primary = grown

    def _fit(self, top: int) -> None:
        """Widen `primary` to int32 before posting id `top` is stored if int16 cannot hold it."""
        if top >= NARROW_POSTING and self.primary.dtype == np.int16:
            self.primary = self.primary.astype(np.int32)

    # --- membership ------------------------------------------------------------------------

    def _add_counts(self, postings: I64, delta: int) -> None:
        nodes = self.leaf_of[postings].astype(np.int64)
        nodes = nodes[nodes >= 0]
        while len(nodes):
            np.add.at(self.count, nodes, delta)
            nodes = self.parent[nodes].astype(np.int64)
            nodes = nodes[nodes >= 0]

    def set_primary(self, slots: I64, postings: I64) -> None:
        """Make `postings` the primary leaves of `slots` (new or moved), counts following."""
        self.grow_slots(int(slots.max()) + 1 if len(slots) else 0)
        self._fit(int(postings.max()) if len(postings) else -1)
        old = self.primary[slots].astype(np.int64)
        self._add_counts(old[old >= 0], -1)
        self.primary[slots] = postings
        self._add_counts(postings, +1)
        self.version += 1

    def drop_primary(self, slots: I64) -> None:
        """Removed slots leave their primary leaves' counts."""
        slots = slots[slots < len(self.primary)]
        old = self.primary[slots].astype(np.int64)
        self._add_counts(old[old >= 0], -1)
        self.primary[slots] = -1
        self.version += 1

    def widen(self, postings: I64, x: F32) -> None:
        """Raise the radii along the paths of rows `x` whose primary leaves are `postings`
        (radii only grow: they stay upper bounds when members leave). Chunked: memory is
        O(chunk + distinct nodes per chunk), whatever len(x)."""
        step = max(1, WIDEN_BYTES // (4 * self.dim))
        for lo in range(0, len(x), step):
            nodes = self.leaf_of[postings[lo : lo + step]].astype(np.int64)
            rows = x[lo : lo + step]
            while len(nodes):
                ok = nodes >= 0
                if not ok.all():
                    nodes, rows = nodes[ok], rows[ok]
                if not len(nodes):
                    break
                uniq, inv = np.unique(nodes, return_inverse=True)
                d = np.sqrt(paired_sq_dists(rows, self.centroids_of(uniq), inv))
                np.maximum.at(self.radius, nodes, d)
                nodes = self.parent[nodes].astype(np.int64)

    # --- structure changes (SPANN splits and merges) ---------------------------------------

    def split_leaf(
        self, posting: int, new: tuple[int, int], old_head: F32, members: I64, labels: I64
    ) -> None:
        """The leaf of `posting` becomes an inner node (centroid: the old head) with two new
        leaves; its primary members (`members`, with `labels` 0/1) move to them."""
        node = int(self.leaf_of[posting])
        self.leaf_of[posting] = -1
        self._set_centroid(node, old_head)
        self._fit(max(new))
        mine = self.primary[members] == posting
        for c, p in enumerate(new):
            leaf = self._new_node(node, p, None)
            pick = mine & (labels == c)
            self.primary[members[pick]] = p
            self.count[leaf] = int(pick.sum())
        self.version += 1

    def remove_leaf(self, posting: int) -> None:
        """Remove the leaf of `posting` (its primary members must have moved), then every
        inner node left without children, up the path."""
        node = int(self.leaf_of[posting])
        assert self.count[node] == 0, "a leaf with primary members cannot be removed"
        self.leaf_of[posting] = -1
        while node > ROOT and self.first_child[node] < 0:
            parent = int(self.parent[node])
            self._unlink(node, parent)
            node = parent
        self.version += 1

    def _unlink(self, node: int, parent: int) -> None:
        c, prev = int(self.first_child[parent]), -1
        while c != node:
            c, prev = int(self.next_sibling[c]), c
        if prev < 0:
            self.first_child[parent] = self.next_sibling[node]
        else:
            self.next_sibling[prev] = self.next_sibling[node]
        self.parent[node] = REMOVED
        self.next_sibling[node] = -1
        self.posting[node] = -1

    # --- persistence -----------------------------------------------------------------------

    def to_sections(self) -> list[bytes]:
        """Raw little-endian arrays of the used nodes, centroid rows and slots."""
        n, r = self.n_nodes, self.n_rows
        arrays = (
            self.parent[:n].astype("<i4"),
            self.first_child[:n].astype("<i4"),
            self.next_sibling[:n].astype("<i4"),
            self.level[:n].astype("<i4"),
            self.count[:n].astype("<i8"),
            self.radius[:n].astype("<f4"),
            self.posting[:n].astype("<i4"),
            self.crow[:n].astype("<i4"),
            self.centroids[:r].astype("<f4"),
            self.primary.astype("<i4"),
        )
        return [a.tobytes() for a in arrays]

    @classmethod
    def from_sections(cls, dim: int, sections: list[bytes]) -> ClusterTree:
        t = cls(dim)
        i4 = [np.frombuffer(s, dtype="<i4").astype(np.int32) for s in sections[:4]]
        t.parent, t.first_child, t.next_sibling, t.level = i4
        t.count = np.frombuffer(sections[4], dtype="<i8").astype(np.int64)
        t.radius = np.frombuffer(sections[5], dtype="<f4").astype(np.float32)
        t.posting = np.frombuffer(sections[6], dtype="<i4").astype(np.int32)
        t.crow = np.frombuffer(sections[7], dtype="<i4").astype(np.int32)
        t.centroids = np.frombuffer(sections[8], dtype="<f4").astype(np.float32).reshape(-1, dim)
        primary = np.frombuffer(sections[9], dtype="<i4")
        if len(primary) == 0 or int(primary.max()) < NARROW_POSTING:
            t.primary = primary.astype(np.int16)
        else:
            t.primary = primary.astype(np.int32)
        t.n_nodes, t.n_rows = len(t.parent), len(t.centroids)
        live = (t.posting >= 0) & (t.parent != REMOVED)
        t.leaf_of = np.full(int(t.posting.max()) + 1 if live.any() else 0, -1, np.int32)
        t.leaf_of[t.posting[live]] = np.flatnonzero(live).astype(np.int32)
        return t


@dataclass(eq=False)
class _Part:
    """A node of a bulk build before it enters the tree: its rows (None: all), how many
    leaves it must end in, its centre and its own random stream (spawned by its parent, so
    the result does not depend on which thread clusters it, or when)."""

    rows: I64 | None
    target: int
    centre: F32
    rng: np.random.Generator
    head: int = -1  # the head row once this part is a leaf
    children: list[_Part] = field(default_factory=list)


def build_tree(
    x: F32, n_leaves: int, seed: int, progress: Progress | None = None, threads: int = 1
) -> tuple[ClusterTree, I64]:
    """Top-down balanced k-means: a node needing more than DIRECT_LEAVES leaves is clustered
    into BRANCH children (leaf targets shared by size), a smaller one straight into its
    leaves. Each leaf's head is the real row nearest its cluster's centre; returns the tree
    (no memberships yet) and the head rows, in posting id order (depth first, so a subtree's
    postings are consecutive). The nodes of one level are clustered on `threads` threads
    (one BLAS thread each); the result is the same for any `threads`."""
    n = len(x)
    mean = np.zeros(x.shape[1], np.float64)
    step = max(1, WIDEN_BYTES // (4 * x.shape[1]))
    for lo in range(0, n, step):  # the root's centroid, without a full-size temporary
        mean += x[lo : lo + step].sum(0, dtype=np.float64)
    root_c = (mean / max(1, n)).astype(np.float32)
    root = _Part(None, max(1, n_leaves), root_c, np.random.default_rng(seed))
    level, leaves = [root], 0
    pool = ThreadPoolExecutor(max(1, threads), "vecdb-tree") if threads > 1 else None
    try:
        while level:  # the parts of a level are independent: cluster them side by side
            done = (
                map(partial(_split, x), level)
                if pool is None
                else (f.result() for f in [pool.submit(_split, x, part) for part in level])
            )
            after: list[_Part] = []
            for part in done:  # in level order, whatever order the threads end in
                leaves += 1 if part.head >= 0 else sum(c.head >= 0 for c in part.children)
                after += [c for c in part.children if c.head < 0]
                if progress is not None:  # the leaves may end a few over or under n_leaves
                    progress("tree", min(leaves, n_leaves), n_leaves)
            level = after
    finally:
        if pool is not None:  # a progress report may stop the build: drop the queued parts
            pool.shutdown(wait=True, cancel_futures=True)
    tree = ClusterTree(x.shape[1])
    heads: list[int] = []
    _emit(tree, root, -1, heads)
    if progress is not None:
        progress("tree", n_leaves, n_leaves)
    return tree, np.asarray(heads, dtype=np.int64)


def _split(x: F32, part: _Part) -> _Part:
    """Cluster one part: a leaf (its head, the row nearest its centre) when it needs one
    leaf, else k-means into its children (leaves, or parts for the next level)."""
    m = len(x) if part.rows is None else len(part.rows)
    xr = x if part.rows is None else x[part.rows]
    if part.target <= 1 or m <= 1:
        best = int(sq_dists(xr, part.centre[None, :])[:, 0].argmin())
        part.head = best if part.rows is None else int(part.rows[best])
        part.rows = None  # done with: a level's parts hold only their children's rows
        return part
    k = min(part.target if part.target <= DIRECT_LEAVES else BRANCH, m)
    res = kmeans(xr, k, iters=KMEANS_ITERS, balance=BALANCE, seed=part.rng)
    order = np.lexsort((res.distances, res.labels))  # by cluster, nearest first
    bounds = np.searchsorted(res.labels[order], np.arange(len(res.centroids) + 1))
    for c in range(len(res.centroids)):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        if lo == hi:
            continue
        members = order[lo:hi] if part.rows is None else part.rows[order[lo:hi]]
        if k == part.target:  # straight into leaves: head = member nearest the centre
            part.children.append(_Part(None, 1, res.centroids[c], part.rng, int(members[0])))
        else:
            sub = max(1, round(part.target * (hi - lo) / m))
            rng = np.random.default_rng(part.rng.integers(1 << 63))
            part.children.append(_Part(members.astype(np.int64), sub, res.centroids[c], rng))
    part.rows = None
    return part


def _emit(tree: ClusterTree, part: _Part, parent: int, heads: list[int]) -> None:
    """Add a clustered part and everything under it to the tree, depth first."""
    if part.head >= 0:
        tree._new_node(parent, len(heads), None)
        heads.append(part.head)
        return
    node = tree._new_node(parent, -1, part.centre)
    for child in part.children:
        _emit(tree, child, node, heads)


def fill_members(tree: ClusterTree, slots: I64, postings: I64, x: F32) -> None:
    """After a bulk build: primary leaves, counts and radii of every row at once."""
    if len(slots) == 0:
        return
    tree.grow_slots(int(slots.max()) + 1)
    tree._fit(int(postings.max()))
    tree.primary[slots] = postings
    tree.version += 1
    nodes = tree.leaf_of[postings].astype(np.int64)
    tree.count[: tree.n_nodes] = 0
    leaf_counts = np.bincount(nodes, minlength=tree.n_nodes)
    tree.count[: tree.n_nodes] = leaf_counts
    for lev in range(int(tree.level[: tree.n_nodes].max()), 0, -1):  # children first
        at = np.flatnonzero(
            (tree.level[: tree.n_nodes] == lev) & (tree.parent[: tree.n_nodes] >= 0)
        )
        np.add.at(tree.count, tree.parent[at].astype(np.int64), tree.count[at])
    tree.widen(postings, x)
