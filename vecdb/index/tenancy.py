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
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.heads import ClusterTree
from vecdb.index.params import _parse, _spec
from vecdb.kernels.unique import sorted_unique

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

DEFAULT_CACHE_BYTES = 2 << 20  # derived directories kept per index (LRU by bytes)

# --- per-request parameters of a restricted (tenant) search; explained in PARAMS.md ----------
DEFAULT_TENANT_POSTINGS, MIN_TENANT_POSTINGS, MAX_TENANT_POSTINGS = 256, 1, 4096
DEFAULT_TENANT_ROUND, MIN_TENANT_ROUND, MAX_TENANT_ROUND = 16, 1, 256
DEFAULT_TENANT_PATIENCE, MIN_TENANT_PATIENCE, MAX_TENANT_PATIENCE = 3, 1, 64
DEFAULT_TENANT_PRUNE, MIN_TENANT_PRUNE, MAX_TENANT_PRUNE = 8.0, 1.0, 1e9
DEFAULT_TENANT_BOOST, MIN_TENANT_BOOST, MAX_TENANT_BOOST = 0.0, 0.0, 4.0
DEFAULT_TENANT_SHARE, MIN_TENANT_SHARE, MAX_TENANT_SHARE = 0.01, 0.0, 1.0
DEFAULT_TENANT_DENSITY, MIN_TENANT_DENSITY, MAX_TENANT_DENSITY = 1.5, 0.0, 1e9
DEFAULT_TENANT_COPY, MIN_TENANT_COPY, MAX_TENANT_COPY = 2 << 20, 0, 1 << 30
DEFAULT_TENANT_CLUSTER_SIZE, MIN_TENANT_CLUSTER_SIZE, MAX_TENANT_CLUSTER_SIZE = 64, 0, 4096
DEFAULT_TENANT_CLUSTER_REPLICAS, MIN_TENANT_CLUSTER_REPLICAS, MAX_TENANT_CLUSTER_REPLICAS = 3, 1, 8
DEFAULT_TENANT_CLUSTER_CLOSURE, MIN_TENANT_CLUSTER_CLOSURE, MAX_TENANT_CLUSTER_CLOSURE = (
    1.4,
    1.0,
    10.0,
)
DEFAULT_TENANT_CLUSTER_DRIFT, MIN_TENANT_CLUSTER_DRIFT, MAX_TENANT_CLUSTER_DRIFT = 0.1, 0.0, 1.0
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
    tenant_density: float  # ... and so do sets with fewer members per leaf, if their leaves
    # are more than `tenant_postings`
    tenant_copy: int  # sets whose copy (slot + float32 vector each) fits in this many bytes:
    # answered exactly from a contiguous copy (engine/tenant_store)
    tenant_cluster_size: int  # sets above `tenant_share` get a clustered copy of their own
    # (engine/tenant_clusters) of blocks of about this many rows (0: the global walk instead)
    tenant_cluster_replicas: int  # ... each vector in up to this many blocks ...
    tenant_cluster_closure: float  # ... those whose centroid is within this x the squared
    # distance to its nearest centroid
    tenant_cluster_drift: float  # rebuilt once slots added or removed since the build pass
    # this share of the set

    @classmethod
    def parse(cls, given: Mapping[str, Any] | None) -> TenantParams:
        return _parse(cls, given, _TENANT_TABLE, "params")  # type: ignore[no-any-return]

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
    "tenant_density": (DEFAULT_TENANT_DENSITY, MIN_TENANT_DENSITY, MAX_TENANT_DENSITY),
    "tenant_copy": (DEFAULT_TENANT_COPY, MIN_TENANT_COPY, MAX_TENANT_COPY),
    "tenant_cluster_size": (
        DEFAULT_TENANT_CLUSTER_SIZE,
        MIN_TENANT_CLUSTER_SIZE,
        MAX_TENANT_CLUSTER_SIZE,
    ),
    "tenant_cluster_replicas": (
        DEFAULT_TENANT_CLUSTER_REPLICAS,
        MIN_TENANT_CLUSTER_REPLICAS,
        MAX_TENANT_CLUSTER_REPLICAS,
    ),
    "tenant_cluster_closure": (
        DEFAULT_TENANT_CLUSTER_CLOSURE,
        MIN_TENANT_CLUSTER_CLOSURE,
        MAX_TENANT_CLUSTER_CLOSURE,
    ),
    "tenant_cluster_drift": (
        DEFAULT_TENANT_CLUSTER_DRIFT,
        MIN_TENANT_CLUSTER_DRIFT,
        MAX_TENANT_CLUSTER_DRIFT,
    ),
}


@dataclass(frozen=True)
class SubTree:
    """The leaves of one slot set at one tree version (read-only once made). Compact on
    purpose (about 12 bytes per leaf): centroids are read from the head graph per walk
    (`SpannState.head_vectors`: the very values the radii were measured against)."""

    tree: weakref.ref[ClusterTree]  # the tree it was derived from (a build swaps in another)
    version: int  # `tree.version` at derivation
    members: int  # slots of the set with a primary leaf (indexed and live)
    postings: I32  # the set's leaves as posting ids, ascending
    counts: I32  # members whose primary leaf is each of `postings`
    radius: F32  # the leaves' radii (an upper bound of members' L2 distance to the centroid)
    n_nodes: int  # nodes of the sub-tree: the leaves and all their ancestors

    def fresh(self, tree: ClusterTree) -> bool:
        """Whether this directory still describes `tree`."""
        return self.tree() is tree and self.version == tree.version

    @property
    def nbytes(self) -> int:
        return self.postings.nbytes + self.counts.nbytes + self.radius.nbytes + 200


def derive(tree: ClusterTree, slots: I64) -> SubTree:
    """The leaves of `slots` (any order; slots the tree does not place are skipped: not
    indexed yet, or removed). O(len(slots) + postings)."""
    prim = _primaries(tree, slots)
    per = np.bincount(prim, minlength=len(tree.leaf_of)) if len(prim) else np.zeros(0, np.int64)
    postings = np.flatnonzero(per).astype(np.int32)
    counts = per[postings].astype(np.int32)
    leaves = tree.leaf_of[postings].astype(np.int64)
    return SubTree(
        tree=weakref.ref(tree),
        version=tree.version,
        members=int(counts.sum()),
        postings=postings,
        counts=counts,
        radius=tree.radius[leaves].astype(np.float32),
        n_nodes=len(_ancestry(tree, leaves)),
    )


def node_counts(tree: ClusterTree, slots: I64) -> tuple[I64, I64]:
    """Every node of the sub-tree of `slots` (leaves and ancestors, ascending) and the
    members at or below each: the full directory (for stats, tests and inspection)."""
    prim = _primaries(tree, slots)
    total = np.zeros(tree.n_nodes, np.int64)
    cur = tree.leaf_of[prim].astype(np.int64)
    while len(cur):  # one step up per level: depth is a handful
        np.add.at(total, cur, 1)
        cur = tree.parent[cur].astype(np.int64)
        cur = cur[cur >= 0]
    nodes = np.flatnonzero(total).astype(np.int64)
    return nodes, total[nodes]


def _primaries(tree: ClusterTree, slots: I64) -> I64:
    s = np.asarray(slots, dtype=np.int64).ravel()
    s = s[(s >= 0) & (s < len(tree.primary))]
    prim = tree.primary[s].astype(np.int64)
    out: I64 = prim[prim >= 0]
    return out


def _ancestry(tree: ClusterTree, leaves: I64) -> I64:
    """The given nodes and all their ancestors, ascending."""
    seen = [leaves]
    cur = leaves
    while len(cur):
        cur = sorted_unique(tree.parent[cur].astype(np.int64))
        cur = cur[cur >= 0]
        seen.append(cur)
    out: I64 = sorted_unique(np.concatenate(seen))
    return out


class SubTreeCache:
    """Derived directories by key, least recently used dropped past `max_bytes`; an entry
    is reused only while the tree is the same object at the same version and the caller's
    `token` (its set object, e.g. a `Visible`) is the same object. Both are held weakly: a
    replaced tree or set frees its memory, and a new object never matches an old entry."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes  # budget of the cached arrays
        self._entries: OrderedDict[Hashable, tuple[weakref.ref[Any], SubTree]] = OrderedDict()
        self._bytes = 0  # bytes of the cached arrays
        self._lock = threading.Lock()  # searches from any thread share the cache
        self.derived = 0  # directories derived (misses), for stats and tests

    def get(self, key: Hashable | None, token: object, tree: ClusterTree, slots: I64) -> SubTree:
        """The directory of `slots` under `key` (derived again if stale; key None: derived
        and not kept, e.g. for a filtered part of a set, which must not evict the set's
        own entry). Call with the index's read lock held, so the tree cannot change."""
        if key is None:
            with self._lock:
                self.derived += 1
            return derive(tree, slots)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0]() is token and hit[1].fresh(tree):
                self._entries.move_to_end(key)
                return hit[1]
        sub = derive(tree, slots)
        with self._lock:
            self.derived += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            if sub.nbytes <= self.max_bytes:
                self._entries[key] = (weakref.ref(token), sub)
                self._bytes += sub.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, (_, gone) = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes
        return sub

    def forget(self, members: Iterable[int]) -> None:
        """Drop every entry whose key (a tuple of member numbers, e.g. tenants) includes
        one of `members`; other keys are compared whole."""
        drop = set(members)
        with self._lock:
            for key in list(self._entries):
                hit = not drop.isdisjoint(key) if isinstance(key, tuple) else key in drop
                if hit:
                    self._bytes -= self._entries.pop(key)[1].nbytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes
