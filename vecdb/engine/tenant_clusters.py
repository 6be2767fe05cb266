"""Clustered copies of large tenant sets: a private IVF-like index per set, derived state.

A set holding more than `tenant_share` of the indexed points used to take the global walk
with its bitmap: it read max_postings / sqrt(share) shared postings of which it owned a
tenth, where a private index reads max_postings postings of its own. This module gives such
a set a copy of its own, clustered (`tenant_cluster_build`: k-means into blocks of about
`tenant_cluster_size` rows, border vectors replicated): a query ranks the copy's centroids
exactly (a small matrix, no graph) and scans the rows of its `max_postings` nearest blocks,
all in one numba call (`kernels.tenant_scan`), filtered by the set's bitmap.

Copies are built by the maintenance worker, never on a query's thread
(`tenant_cluster_jobs`: after a build for every tenant above the default share, and for any
set a query asked for), and persisted one file per set in the index directory
(`tenant_cluster_file`: versioned, checksummed, mapped read-only, so page cache and never
anonymous memory; a reopened database reads it back instead of building it again; a
collection without an index directory keeps them in its scratch copy file, `tenant_store`).
A query that finds no ready copy asks for one and takes the caller's path meanwhile.
Slot -> vector never changes and slots are never reused, so a copy stays right for any later
version of the set: rows of slots no longer in the set (revokes, deletes) are dropped by the
bitmap, and slots the copy lacks (grants, upserts since the build) are read from RocksDB once
per version of the set, kept beside the copy as its delta (keyed by the set's version, which
the tenant layer's `LazyVisible` names, or else by its `Visible` object), and scanned
exactly; a set whose copy holds no removed slot is scanned without its bitmap. Once the
delta plus the dropped rows pass `tenant_cluster_drift` of the set, the query asks the
worker for a new build and is answered from the old copy and its delta meanwhile. A filtered
part of the set only reads a copy (its missing slots read for that call).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import tenant_cluster_file as cfile
from vecdb.engine.core import CollectionCore
from vecdb.engine.tenant_cluster_build import Clusters
from vecdb.engine.tenant_cluster_file import Copy
from vecdb.engine.tenant_store import TenantStore
from vecdb.index.base import SearchStats, Visible
from vecdb.index.tenancy import TenantParams
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.tenant_scan import KINDS, search_blocks

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
MAX_DELTAS = 64  # sets whose delta (slots the copy lacks, with vectors) is kept
NO_BITS = np.zeros(0, np.uint8)  # the scan's "no filter"
BuildParams = tuple[int, int, float]  # block size, replicas, closure

__all__ = ["ClusterCopies", "Copy", "Delta", "copies_of", "merge", "search_clustered"]


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
    """The clustered copies of one collection: the ready ones (views of their files, or of
    the scratch `store` without an index directory), their deltas, and the sets queries
    asked the worker to build (`wanted`)."""

    def __init__(
        self, store: TenantStore, directory: Path | None, next_slot: Callable[[], int]
    ) -> None:
        self.store = store
        self.directory = directory  # where the copies' files live (None: in `store`)
        self.next_slot = next_slot  # the collection's next slot (a file's members are below)
        self.ready: dict[tuple[Any, ...], Copy] = {}  # copies loaded or built
        self.tried: set[tuple[Any, ...]] = set()  # sets whose file was looked for
        self.wanted: OrderedDict[tuple[Any, ...], BuildParams] = OrderedDict()  # to build
        self.failed: set[tuple[Any, ...]] = set()  # builds that failed (until the set changes)
        self.deltas: OrderedDict[tuple[Any, ...], Delta] = OrderedDict()
        self.lock = threading.Lock()  # guards the dicts above
        self.build_lock = threading.Lock()  # one build at a time per collection
        self.load_lock = threading.Lock()  # one file read back at a time
        self.builds = 0  # copies built, for stats and tests
        self.loads = 0  # copies read back from their files
        self.serial = 0  # the last build's (or load's) number

    def _next_serial(self) -> int:
        with self.lock:
            self.serial += 1
            return self.serial

    def read(self, key: tuple[Any, ...], dim: int) -> Copy | None:
        """The ready copy of set `key`, its file read back on first ask; or None."""
        with self.lock:
            cp = self.ready.get(key)
            if cp is not None or self.directory is None or key in self.tried:
                return cp
        with self.load_lock:  # (the worker and a query may both look: one reads the file)
            with self.lock:
                if key in self.tried:
                    return self.ready.get(key)
            got = cfile.load(self.path(key), key[1:], dim, self.next_slot(), self._next_serial())
            with self.lock:
                self.tried.add(key)
                if got is None:
                    return self.ready.get(key)
                self.loads += 1
                return self.ready.setdefault(key, got)

    def path(self, key: tuple[Any, ...]) -> Path:
        assert self.directory is not None
        return cfile.path_for(self.directory, tuple(int(t) for t in key[1:]))

    def write(self, key: tuple[Any, ...], cl: Clusters, params: BuildParams, dim: int) -> None:
        """Make `cl` the ready copy of set `key` (its file replaced, or the scratch store)."""
        parts = cfile.parts_of(cl.offsets, cl.slots, cl.members, cl.centroids, cl.vectors)
        serial = self._next_serial()
        cp: Copy | None
        if self.directory is not None:
            path = self.path(key)
            cfile.save(path, tuple(int(t) for t in key[1:]), parts, params)
            cp = cfile.load(path, key[1:], dim, self.next_slot(), serial)
            if cp is None:
                raise OSError(f"the clustered copy just written to {path} does not read back")
        else:
            sizes = np.array([len(cl.centroids), len(cl.slots), len(cl.members)], np.int64)
            self.store.write_parts(key, [sizes, *parts], len(cl.slots))
            cp = self._from_store(key, dim, serial)
            assert cp is not None
        with self.lock:
            self.ready[key] = cp
            self.tried.add(key)
            self.deltas.pop(key, None)
            self.builds += 1

    def _from_store(self, key: Hashable, dim: int, serial: int) -> Copy | None:
        """The copy of `key` in the scratch store (written by `write`: sizes, then parts)."""
        hit = self.store.read_parts(key)
        if hit is None:
            return None
        raw, at, _ = hit
        n_c, rows, n_mem = (int(v) for v in np.frombuffer(raw, np.int64, 3, at))
        at += 24
        arrays: list[npt.NDArray[Any]] = []
        for dtype, n in ((np.int64, n_c + 1), (np.int64, rows), (np.int64, n_mem),
                         (np.float32, n_c), (np.float32, n_c * dim), (np.float32, rows * dim)):  # fmt: skip
            arrays.append(np.frombuffer(raw, dtype, n, at))
            at += n * np.dtype(dtype).itemsize
        offsets, slots, members, cnorms, cents, vecs = arrays
        return Copy(serial, offsets, slots, members, cnorms, cents.reshape(n_c, dim),
                    vecs.reshape(rows, dim))  # fmt: skip

    def want(self, key: tuple[Any, ...], params: BuildParams) -> None:
        """Ask the worker to build (or rebuild) the copy of set `key`."""
        with self.lock:
            if key not in self.failed:
                self.wanted.setdefault(key, params)

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
        """Drop the deltas of sets including any of `tenant_nos` (they changed); a failed
        build of such a set may be tried again."""
        drop = set(tenant_nos)
        with self.lock:
            for key in [k for k in self.deltas if not drop.isdisjoint(k[1:])]:
                del self.deltas[key]
            self.failed = {k for k in self.failed if drop.isdisjoint(k[1:])}

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
            where = coll.directory if coll.directory.is_dir() else None
            points = coll.points
            got = _COPIES[coll] = ClusterCopies(store, where, lambda: points.next_slot)
        return got


def build_params(tp: TenantParams) -> BuildParams:
    return (tp.tenant_cluster_size, tp.tenant_cluster_replicas, tp.tenant_cluster_closure)


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
    from the set's ready clustered copy; None when it has none (asked of the worker when
    `cacheable`: the caller takes its own path meanwhile, never waiting for a build)."""
    from vecdb.engine.tenant_search import stored_vectors  # (that module imports this one)

    cc = copies_of(coll, store)
    ckey = ("c", *key)
    dim = coll.cfg.dim
    nq = q.shape[0]
    cp = cc.read(ckey, dim)
    if cp is None:
        if cacheable:
            cc.want(ckey, build_params(tp))
        return None
    stats = SearchStats(queries=nq, extra={"tenant_clusters": float(nq)})
    delta = cc.delta(ckey, visible, cp.serial) if cacheable else None
    if delta is None:
        pos = np.searchsorted(cp.members, slots)
        present = pos < len(cp.members)
        present[present] = cp.members[pos[present]] == slots[present]
        missing = slots[~present]
        stale = len(cp.members) - int(present.sum())
        if cacheable and len(missing) + stale > tp.tenant_cluster_drift * max(1, len(slots)):
            cc.want(ckey, build_params(tp))  # drifted too far: answered below meanwhile
        new_s, new_v = stored_vectors(coll, missing)
        stats.bytes_read += new_v.nbytes
        delta = Delta(cp.serial, _version(visible), weakref.ref(visible), new_s, new_v, stale)
        if cacheable:
            cc.keep(ckey, delta)
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
