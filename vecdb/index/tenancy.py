"""The sub-tree of a slot set on the clustering tree: an exact (set -> nodes) directory.

Owns deriving, for a set of slots (a tenant's, or the union of several tenants'), which nodes
of the kept `ClusterTree` hold its members and how many: `tree.primary[slot]` names each
indexed slot's primary leaf (posting), and counts are summed up the path to the root. Exact,
no Bloom filters: a node is in the directory iff at least one member's primary leaf is at or
below it. Also owns the small cache of derived directories (keyed by the caller's key, checked
against the tree's identity and `version`, so every split, merge, move, insert or remove makes
a stale entry re-derive), bounded in bytes. Reads the tree only; the caller holds the index's
read lock while deriving (the tree changes only under the write lock), and this module never
reads a posting.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.heads import ClusterTree
from vecdb.index.params import _parse, _spec

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

DEFAULT_CACHE_BYTES = 32 << 20  # derived directories kept per index (LRU by bytes)

# --- per-request parameters of a restricted (tenant) search; explained in PARAMS.md ----------
DEFAULT_TENANT_POSTINGS, MIN_TENANT_POSTINGS, MAX_TENANT_POSTINGS = 64, 1, 4096
DEFAULT_TENANT_ROUND, MIN_TENANT_ROUND, MAX_TENANT_ROUND = 8, 1, 256
DEFAULT_TENANT_PATIENCE, MIN_TENANT_PATIENCE, MAX_TENANT_PATIENCE = 1, 1, 64
DEFAULT_TENANT_PRUNE, MIN_TENANT_PRUNE, MAX_TENANT_PRUNE = 8.0, 1.0, 1e9
DEFAULT_TENANT_BOOST, MIN_TENANT_BOOST, MAX_TENANT_BOOST = 0.0, 0.0, 4.0
DEFAULT_TENANT_SHARE, MIN_TENANT_SHARE, MAX_TENANT_SHARE = 0.2, 0.0, 1.0
DEFAULT_TENANT_EXACT, MIN_TENANT_EXACT, MAX_TENANT_EXACT = 256 << 10, 0, 1 << 30
TENANT_PREFIX = "tenant_"  # request parameters with this prefix are read here


@dataclass(frozen=True)
class TenantParams:
    """How a search restricted to a slot set (a tenant's) is run; per request."""

    tenant_postings: int  # I/O budget: postings one query may read on the sub-tree walk
    tenant_round: int  # postings read per round of the walk
    tenant_patience: int  # rounds in a row that change nothing in the top-k before stopping
    tenant_prune: float  # skip leaves farther than this x the nearest leaf (like prune_ratio)
    tenant_boost: float  # variance boost: rank leaves by d(q, c)^2 - boost x radius^2
    tenant_share: float  # sets above this share of the indexed points take the global walk
    tenant_exact: int  # sets whose float32 vectors take at most this many bytes: exact scan

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None) -> TenantParams:
        return _parse(cls, given, _TENANT_TABLE)  # type: ignore[no-any-return]

    @staticmethod
    def split(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the tenant parameters, the rest) of a request's parameters."""
        mine = {k: v for k, v in (params or {}).items() if k.startswith(TENANT_PREFIX)}
        rest = {k: v for k, v in (params or {}).items() if not k.startswith(TENANT_PREFIX)}
        return mine, rest

    def spec(self) -> str:
        return _spec(self, "tenant")


_TENANT_TABLE: dict[str, Any] = {
    "tenant_postings": (DEFAULT_TENANT_POSTINGS, MIN_TENANT_POSTINGS, MAX_TENANT_POSTINGS),
    "tenant_round": (DEFAULT_TENANT_ROUND, MIN_TENANT_ROUND, MAX_TENANT_ROUND),
    "tenant_patience": (DEFAULT_TENANT_PATIENCE, MIN_TENANT_PATIENCE, MAX_TENANT_PATIENCE),
    "tenant_prune": (DEFAULT_TENANT_PRUNE, MIN_TENANT_PRUNE, MAX_TENANT_PRUNE),
    "tenant_boost": (DEFAULT_TENANT_BOOST, MIN_TENANT_BOOST, MAX_TENANT_BOOST),
    "tenant_share": (DEFAULT_TENANT_SHARE, MIN_TENANT_SHARE, MAX_TENANT_SHARE),
    "tenant_exact": (DEFAULT_TENANT_EXACT, MIN_TENANT_EXACT, MAX_TENANT_EXACT),
}


@dataclass(frozen=True)
class SubTree:
    """The directory of one slot set at one tree version (read-only once made)."""

    tree: ClusterTree  # the tree it was derived from (a bulk build swaps in a new one)
    version: int  # `tree.version` at derivation
    members: int  # slots of the set with a primary leaf (indexed and live)
    postings: I64  # the set's leaves as posting ids, ascending
    counts: I64  # members whose primary leaf is each of `postings`
    centroids: F32  # (len(postings), dim) the leaves' centroids (their head vectors)
    radius: F32  # the leaves' radii (an upper bound of members' L2 distance to the centroid)
    nodes: I64  # every node of the sub-tree (leaves and their ancestors), ascending
    node_counts: I64  # members at or below each of `nodes`

    def fresh(self, tree: ClusterTree) -> bool:
        """Whether this directory still describes `tree`."""
        return self.tree is tree and self.version == tree.version

    @property
    def nbytes(self) -> int:
        arrays = (self.postings, self.counts, self.centroids, self.radius, self.nodes)
        return sum(a.nbytes for a in arrays) + self.node_counts.nbytes + 200


def derive(tree: ClusterTree, slots: I64) -> SubTree:
    """The directory of `slots` (any order; slots the tree does not place are skipped: they
    are not indexed yet, or removed)."""
    s = np.asarray(slots, dtype=np.int64).ravel()
    s = s[(s >= 0) & (s < len(tree.primary))]
    prim = tree.primary[s].astype(np.int64)
    prim = prim[prim >= 0]
    postings, counts = np.unique(prim, return_counts=True)
    postings = postings.astype(np.int64)
    counts = counts.astype(np.int64)
    leaves = tree.leaf_of[postings].astype(np.int64)
    total = np.zeros(tree.n_nodes, np.int64)
    cur, cnt = leaves, counts
    while len(cur):  # one step up per level: depth is a handful
        np.add.at(total, cur, cnt)
        up = tree.parent[cur].astype(np.int64)
        ok = up >= 0
        cur, cnt = up[ok], cnt[ok]
    nodes = np.flatnonzero(total).astype(np.int64)
    if len(leaves):
        centroids = tree.centroids_of(leaves)
        radius = tree.radius[leaves].astype(np.float32)
    else:
        centroids = np.zeros((0, tree.dim), np.float32)
        radius = np.zeros(0, np.float32)
    return SubTree(
        tree=tree,
        version=tree.version,
        members=int(counts.sum()),
        postings=postings,
        counts=counts,
        centroids=np.ascontiguousarray(centroids, dtype=np.float32),
        radius=radius,
        nodes=nodes,
        node_counts=total[nodes],
    )


class SubTreeCache:
    """Derived directories by key, least recently used dropped past `max_bytes`; an entry
    is reused only while the tree is the same object at the same version and the caller's
    `token` (its set object) is the same object."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes  # budget of the cached arrays
        self._entries: OrderedDict[Hashable, tuple[object, SubTree]] = OrderedDict()
        self._bytes = 0  # bytes of the cached arrays
        self._lock = threading.Lock()  # searches from any thread share the cache
        self.derived = 0  # directories derived (misses), for stats and tests

    def get(self, key: Hashable, token: object, tree: ClusterTree, slots: I64) -> SubTree:
        """The directory of `slots` under `key` (derived again if stale). Call with the
        index's read lock held, so the tree cannot change meanwhile."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] is token and hit[1].fresh(tree):
                self._entries.move_to_end(key)
                return hit[1]
        sub = derive(tree, slots)
        with self._lock:
            self.derived += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            if sub.nbytes <= self.max_bytes:
                self._entries[key] = (token, sub)
                self._bytes += sub.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, (_, gone) = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes
        return sub

    def forget(self, members: Iterable[int]) -> None:
        """Drop every entry whose key (a frozenset of member numbers, e.g. tenants) meets
        `members`; other keys are compared whole."""
        drop = set(members)
        with self._lock:
            for key in list(self._entries):
                hit = key & drop if isinstance(key, frozenset) else key in drop
                if hit:
                    self._bytes -= self._entries.pop(key)[1].nbytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes
