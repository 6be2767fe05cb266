"""Clustered copies of large tenant sets: a private IVF-like index per set, derived state.

A set holding more than `tenant_share` of the indexed points used to take the global walk
with its bitmap: it read max_postings / sqrt(share) shared postings of which it owned a
tenth, where a private index reads max_postings postings of its own. This module gives such
a set a copy of its own, clustered (`tenant_cluster_build`: k-means into blocks of about
`tenant_cluster_size` rows, border vectors replicated): a query ranks the copy's centroids
exactly (a small matrix, no graph) and scans the rows of its `max_postings` nearest blocks,
all in one numba call (`kernels.tenant_scan`), filtered by the set's bitmap.

The copy lives in the collection's scratch copy file (`tenant_store`, page cache, never
anonymous memory) under the key ("c", *tenants): header, block offsets, row slots, the
distinct members, centroid norms, centroids, row vectors. Like the plain copies it is made on
a set's first unfiltered query from the stored vectors (the write buffer included), and gone
after a restart or crash (made again on demand). Slot -> vector never changes and slots are
never reused, so the copy stays right for any later version of the set: rows of slots no
longer in the set (revokes, deletes) are dropped by the bitmap, and slots the copy lacks
(grants, upserts since the build) are read from RocksDB once per version of the set, kept
beside the copy as its delta (keyed by the set's version, which the tenant layer's `LazyVisible` names, or else by its
`Visible` object),
and scanned exactly; a set whose copy holds no removed slot is scanned without its bitmap.
Once the delta plus the dropped rows pass `tenant_cluster_drift` of the
set, the next unfiltered query builds the copy again. A filtered part of the set only reads a
copy (its missing slots read for that call); without a copy it takes the caller's walk.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine.core import CollectionCore
from vecdb.engine.memory import release_free_memory
from vecdb.engine.tenant_cluster_build import Clusters, build
from vecdb.engine.tenant_store import TenantStore
from vecdb.index.base import SearchStats, Visible
from vecdb.index.tenancy import TenantParams
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.tenant_scan import KINDS, search_blocks

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
MAX_DELTAS = 64  # sets whose delta (slots the copy lacks, with vectors) is kept
NO_BITS = np.zeros(0, np.uint8)  # the scan's "no filter"


@dataclass(frozen=True)
class Copy:
    """Read-only views of one clustered copy in the mapped file."""

    serial: int  # which build this is (a delta belongs to one build)
    offsets: I64
    slots: I64
    members: I64
    cnorms: F32
    centroids: F32
    vectors: F32


@dataclass(frozen=True)
class Delta:
    """Slots of one version of a set that its copy lacks, with their prepared vectors."""

    serial: int  # the build of the copy it was computed against
    version: Hashable | None  # the set's version this was computed for (`LazyVisible`)
    token: weakref.ref[Visible]  # ... or, without one, the set object itself
    slots: I64
    vectors: F32
    stale: int  # rows of the copy whose slot is no longer in the set


class ClusterCopies:
    """The clustered copies' bookkeeping for one collection (the copies are in `store`)."""

    def __init__(self, store: TenantStore) -> None:
        self.store = store
        self.deltas: OrderedDict[tuple[Any, ...], Delta] = OrderedDict()
        self.lock = threading.Lock()  # guards `deltas`
        self.build_lock = threading.Lock()  # one build at a time per collection
        self.builds = 0  # copies built, for stats and tests
        self.serial = 0  # the last build's number

    def read(self, key: Hashable, dim: int) -> Copy | None:
        hit = self.store.read_parts(key)
        if hit is None:
            return None
        raw, off, _ = hit
        n_c, rows, members, serial = (int(v) for v in np.frombuffer(raw, np.int64, 4, off))
        at = off + 32
        arrays: list[npt.NDArray[Any]] = []
        for dtype, n in ((np.int64, n_c + 1), (np.int64, rows), (np.int64, members),
                         (np.float32, n_c), (np.float32, n_c * dim), (np.float32, rows * dim)):  # fmt: skip
            arrays.append(np.frombuffer(raw, dtype, n, at))
            at += n * np.dtype(dtype).itemsize
        offsets, slots, mem, cnorms, cents, vecs = arrays
        cents, vecs = cents.reshape(n_c, dim), vecs.reshape(rows, dim)
        return Copy(serial, offsets, slots, mem, cnorms, cents, vecs)

    def write(self, key: tuple[Any, ...], cl: Clusters) -> None:
        n_c, rows = len(cl.centroids), len(cl.slots)
        with self.lock:
            self.serial += 1
            serial = self.serial
        head = np.array([n_c, rows, len(cl.members), serial], np.int64)
        cnorms = (cl.centroids.astype(np.float32) ** 2).sum(1).astype(np.float32)
        parts: list[npt.NDArray[Any]] = [
            head, cl.offsets.astype(np.int64), cl.slots.astype(np.int64),
            cl.members.astype(np.int64), np.ascontiguousarray(cnorms),
            np.ascontiguousarray(cl.centroids, np.float32),
            np.ascontiguousarray(cl.vectors, np.float32),
        ]  # fmt: skip
        self.store.write_parts(key, parts, rows)
        with self.lock:
            self.deltas.pop(key, None)

    def delta(self, key: tuple[Any, ...], token: Visible, serial: int) -> Delta | None:
        """The delta of set `key` at the version of `token` against build `serial`."""
        with self.lock:
            d = self.deltas.get(key)
            version = getattr(token, "version", None)
            if (
                d is None
                or d.serial != serial
                or not ((version is not None and d.version == version) or d.token() is token)
            ):
                return None
            self.deltas.move_to_end(key)
            return d

    def keep(self, key: tuple[Any, ...], d: Delta) -> None:
        with self.lock:
            self.deltas[key] = d
            self.deltas.move_to_end(key)
            while len(self.deltas) > MAX_DELTAS:
                self.deltas.popitem(last=False)

    def forget(self, tenant_nos: list[int]) -> None:
        """Drop the deltas of sets including any of `tenant_nos` (they changed)."""
        drop = set(tenant_nos)
        with self.lock:
            for key in [k for k in self.deltas if not drop.isdisjoint(k[1:])]:
                del self.deltas[key]

    @property
    def delta_bytes(self) -> int:
        with self.lock:
            return sum(d.slots.nbytes + d.vectors.nbytes for d in self.deltas.values())


_COPIES: weakref.WeakKeyDictionary[CollectionCore, ClusterCopies] = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()


def copies_of(coll: CollectionCore, store: TenantStore) -> ClusterCopies:
    with _COPIES_LOCK:
        got = _COPIES.get(coll)
        if got is None or got.store is not store:
            got = _COPIES[coll] = ClusterCopies(store)
        return got


def search_clustered(
    coll: CollectionCore,
    store: TenantStore,
    q: F32,
    k: int,
    key: tuple[int, ...],
    slots: I64,
    visible: Visible,
    probes: int,
    tp: TenantParams,
    cacheable: bool,
) -> tuple[I64, F32] | None:
    """Top-k slots of prepared queries among `slots` (ascending; `visible` the same set)
    from the set's clustered copy, made or rebuilt here when `cacheable`; None when there
    is no copy and it may not be made (a filtered part of a set)."""
    from vecdb.engine.tenant_search import stored_vectors  # (that module imports this one)

    cc = copies_of(coll, store)
    ckey = ("c", *key)
    dim = coll.cfg.dim
    nq = q.shape[0]
    stats = SearchStats(queries=nq, extra={"tenant_clusters": float(nq)})
    cp = cc.read(ckey, dim)
    delta = cc.delta(ckey, visible, cp.serial) if cp is not None and cacheable else None
    if cp is not None and delta is None:
        pos = np.searchsorted(cp.members, slots)
        present = pos < len(cp.members)
        present[present] = cp.members[pos[present]] == slots[present]
        missing = slots[~present]
        stale = len(cp.members) - int(present.sum())
        if cacheable and len(missing) + stale > tp.tenant_cluster_drift * max(1, len(slots)):
            cp = None  # drifted too far: built again below
        else:
            new_s, new_v = stored_vectors(coll, missing)
            stats.bytes_read += new_v.nbytes
            delta = Delta(cp.serial, _version(visible), weakref.ref(visible), new_s, new_v, stale)
            if cacheable:
                cc.keep(ckey, delta)
    if cp is None:
        if not cacheable:
            return None
        with cc.build_lock:  # (two racing first queries may both build: the last one stays)
            found, base = stored_vectors(coll, slots)
            stats.bytes_read += base.nbytes
            cl = build(found, base, tp.tenant_cluster_size, tp.tenant_cluster_replicas,
                       tp.tenant_cluster_closure)  # fmt: skip
            cc.write(ckey, cl)
            del cl, base
            release_free_memory()  # k-means' blocks: not kept as heap by the allocator
            cc.builds += 1
            stats.extra["tenant_clusters_made"] = 1.0
        cp = cc.read(ckey, dim)
        assert cp is not None
        none = np.zeros(0, np.int64)
        empty = np.zeros((0, dim), np.float32)
        delta = Delta(cp.serial, _version(visible), weakref.ref(visible), none, empty, 0)
        if cacheable:
            cc.keep(ckey, delta)
    assert delta is not None
    kind = KINDS[coll.cfg.metric]
    # The copy holds nothing outside a whole set that names its version: no bitmap needed
    # (49 KB per set at 390,000 points, built and cached otherwise)
    exact = cacheable and delta.stale == 0 and delta.version is not None
    bits = NO_BITS if exact else visible.bits
    ids, dist = search_blocks(q, cp.centroids, cp.cnorms, probes, cp.vectors, cp.slots,
                             cp.offsets, bits, kind, k)  # fmt: skip
    n_c = len(cp.centroids)
    read = min(probes, n_c)
    stats.postings_read = nq * read
    stats.bytes_read += int(nq * read * (len(cp.slots) / max(1, n_c)) * (8 + 4 * dim))
    if len(delta.slots):
        rows, d2 = exact_topk(q, delta.vectors, coll.cfg.metric, k)
        ids2 = np.where(rows >= 0, delta.slots[np.maximum(rows, 0)], -1)
        ids, dist = merge(ids, dist, ids2, d2, k)
        stats.extra["tenant_cluster_delta"] = float(nq * len(delta.slots))
    with coll.io_lock:
        coll.io.add(stats)
    return ids, dist


def _version(visible: Visible) -> Hashable | None:
    return getattr(visible, "version", None)


def merge(a: I64, da: F32, b: I64, db: F32, k: int) -> tuple[I64, F32]:
    """The k best of two disjoint per-query lists, by (distance, slot), padded -1 / inf."""
    ids = np.concatenate([a, b], 1)
    dist = np.concatenate([da, db], 1)
    tie = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
    order = np.lexsort((tie, dist))[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)
