"""Search restricted to tenants: the seam between tenant membership and the index.

The engine's tenant layer (`engine/tenants.py`) knows which slots each tenant may see and
calls `search_tenants` with them; this module decides how to search that set, and `changed`
is told whenever a tenant's set changes, so derived structures can follow. Paths, by size:
- with SPANN, a small set (its copy, slot + float32 vector per member, fits in `tenant_copy`
  bytes) is answered exactly from a contiguous copy (`tenant_store`: one read, no posting
  read; made on first use from the stored vectors, write buffer included; it serves any
  subset of its slots, and grants are patched in by reading just the new slots);
- with SPANN, a set holding more than `tenant_share` of the indexed points is answered from
  its clustered copy (`tenant_clusters`: a private IVF-like index of the set, built and
  persisted by the maintenance worker, rebuilt past a drift threshold; a query that finds
  none ready asks for it and takes the walk below), scanning its `max_postings` nearest
  blocks;
- otherwise an index that can walk a set's sub-tree (SPANN's `search_subset`: the set's
  leaves best first, in rounds, with a stop rule; or the global walk with the bitmap for a
  set holding a large share of the points) is asked, and the write buffer's segments are
  scanned exactly with the same bitmap and merged, as `reader.search_slots` does;
- an index without one (flat: exact, in memory) is searched with the bitmap.
Per-query counters (which path, leaves and nodes of the sub-tree, rounds, postings and bytes
read, copies made) land in the collection's `io` stats like any search's. Owns no tenant
state: the sets come from the caller; the copies are derived and kept per collection.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import tenant_clusters
from vecdb.engine.core import CollectionCore
from vecdb.engine.reader import search_slots
from vecdb.engine.tenant_store import TenantStore
from vecdb.engine.writer import prepare
from vecdb.errors import InvalidArgument
from vecdb.index.base import IndexResult, SearchStats, Visible
from vecdb.index.params import SearchParams
from vecdb.index.spann import subtree
from vecdb.index.spann.index import SpannIndex
from vecdb.index.tenancy import TenantParams
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.tenant_scan import KINDS, copy_topk, fused_fits
from vecdb.kernels.unique import sorted_unique
from vecdb.storage import kv as kvmod

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
SHRINK = 1.25  # a copy with more rows than this x the set's (plus the slack) is rewritten
SHRINK_SLACK = 64
READ_CHUNK = 512  # vectors per multi-get when a copy is made


def search_tenants(
    coll: CollectionCore,
    q: F32,
    k: int,
    params: dict[str, Any] | None,
    tenant_nos: list[int],
    slots: I64,
    visible: Visible,
    cacheable: bool = True,
) -> tuple[I64, F32]:
    """Top-k slots of prepared queries among `slots` (sorted, the live slots granted to any
    of `tenant_nos`; `visible` is the same set as a bitmap), over index and write buffer.
    `cacheable`: `slots` is the tenants' whole set, so the derived copy and directory may be
    written for it; a filtered subset (False) reads them but never writes them, or the next
    unfiltered search would find them rewritten to the subset."""
    if params is not None and not isinstance(params, dict):
        raise InvalidArgument("params must be a JSON object of search parameter -> value")
    if not isinstance(coll.index, SpannIndex):  # the flat index: exact already, in memory
        mine, rest = TenantParams.split(params)
        TenantParams.parse(mine)
        return search_slots(coll, q, k, rest, visible)
    tp, sp = parsed(params)  # once; bad parameters fail whichever path answers
    key = tuple(sorted({int(t) for t in tenant_nos}))  # the set's name: 48 bytes for one
    if len(slots) * (8 + 4 * coll.cfg.dim) <= tp.tenant_copy:
        tag = getattr(visible, "version", None) if cacheable else None
        return copied(coll, q, k, key, np.asarray(slots, np.int64), cacheable, tag)
    state = coll.index.state
    if tp.tenant_cluster_size > 0 and len(slots) > tp.tenant_share * max(1, state.n_live):
        s = np.asarray(slots, np.int64)
        hit = tenant_clusters.search_clustered(
            coll, store_of(coll), q, k, key, s, visible, sp.max_postings, tp, cacheable
        )
        if hit is not None:
            return hit
    sub_key = key if cacheable else None

    def walk(q_: F32, k_: int, p_: dict[str, Any] | None, v_: Visible | None) -> IndexResult:
        # q_ and k_ are the engine's checked queries and k; v_ is `visible` itself
        q32 = np.ascontiguousarray(q_, np.float32)
        return subtree.search_subset(state, q32, k_, sp, tp, slots, visible, sub_key)

    return search_slots(coll, q, k, params, visible, walk)


_PARSED: dict[tuple[Any, ...], tuple[TenantParams, SearchParams]] = {}
PARSED_MAX = 256  # distinct parameter sets remembered by `parsed`


def parsed(params: dict[str, Any] | None) -> tuple[TenantParams, SearchParams]:
    """The tenant and search parameters of a request (tenant ones checked first), both
    remembered by the request's (name, type, value) entries: a repeated request skips the
    split and both lookups. Only valid sets are remembered, so errors are always raised."""
    try:
        key = tuple((k, v.__class__, v) for k, v in params.items()) if params else ()
        hit = _PARSED.get(key)
    except TypeError:  # unhashable values: parse (and reject) below
        key, hit = None, None
    if hit is not None:
        return hit
    mine, rest = TenantParams.split(params)
    out = TenantParams.parse(mine), SearchParams.parse(rest)
    if key is not None and len(_PARSED) < PARSED_MAX:
        _PARSED[key] = out
    return out


_STORES: weakref.WeakKeyDictionary[CollectionCore, TenantStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def store_of(coll: CollectionCore) -> TenantStore:
    """The collection's copies (made on first use, in the index directory if it has one)."""
    store = _STORES.get(coll)  # (made once: the lock only orders the making)
    if store is not None:
        return store
    with _STORES_LOCK:
        store = _STORES.get(coll)
        if store is None:
            where = coll.directory if coll.directory.is_dir() else None
            store = _STORES[coll] = TenantStore(where, coll.cfg.dim)
        return store


def copied(
    coll: CollectionCore,
    q: F32,
    k: int,
    key: tuple[int, ...],
    slots: I64,
    cacheable: bool = True,
    tag: Hashable = None,
) -> tuple[I64, F32]:
    """Exact top-k of the set from its contiguous copy (`slots` ascending). A copy serves
    any subset of its slots (slot -> vector never changes: see `tenant_store`); slots it
    lacks (grants, new upserts) are read from RocksDB alone and patched in, and a copy
    holding many rows no longer asked for (revokes, deletes) is rewritten from itself.
    Not `cacheable` (`slots` is a filtered part of the set): the copy is read, never made,
    patched or shrunk; slots it lacks are read from RocksDB for this call only. `tag` (the
    set's version, read before `slots`): a copy found equal to `slots` is tagged with it,
    so the next read of the set at that version takes the copy as it is (`exact_copy`)."""
    nq = q.shape[0]
    store = store_of(coll)
    stats = SearchStats(queries=nq, extra={"tenant_copy": float(nq)})
    hit = store.read(key)
    if hit is not None and (hit[0] is slots or _same(hit[0], slots)):
        found, base = hit  # the copy is the set (every query but the first): no more checks
        stats.bytes_read = found.nbytes + base.nbytes
        if tag is not None and found is not slots:
            store.tag(key, tag, found)
    else:
        found, base = _made(coll, hit, ascending(slots), key, cacheable, stats)
    with coll.io_lock:
        coll.io.add(stats)
    dim = base.shape[1]
    if fused_fits(nq, len(found), dim):
        qc = np.ascontiguousarray(q, np.float32)
        return copy_topk(qc, base, KINDS[coll.cfg.metric], found, k)
    rows, dist = exact_topk(q, base, coll.cfg.metric, k)
    out = found[rows]
    if rows[:, -1].min() < 0:  # fewer than k: padding (-1) stays -1
        out = np.where(rows >= 0, out, -1)
    return out, dist


def _same(a: I64, b: I64) -> bool:
    return len(a) == len(b) and bool((a == b).all())


def exact_copy(coll: CollectionCore, key: tuple[int, ...], tag: Hashable) -> I64 | None:
    """The slots of the copy of set `key` if it was found equal to the set at version `tag`
    (`copied`): the set itself, without reading it back from the tenant layer."""
    store = _STORES.get(coll)
    hit = None if store is None else store.tagged(key, tag)
    return None if hit is None else hit[0]


def ascending(slots: I64) -> I64:
    """The slots sorted and unique (as they come, if they already are)."""
    if len(slots) > 1 and not (slots[1:] > slots[:-1]).all():
        return sorted_unique(slots)
    return slots


def _made(
    coll: CollectionCore,
    hit: tuple[I64, F32] | None,
    slots: I64,
    key: tuple[int, ...],
    cacheable: bool,
    stats: SearchStats,
) -> tuple[I64, F32]:
    """The copy for `slots` (ascending): made from the stored vectors, or the stored copy
    `hit` brought to the asked slots (see `copied`)."""
    store = store_of(coll)
    if hit is None:
        found, base = stored_vectors(coll, slots)
        stats.bytes_read = base.nbytes  # the stored vectors read (to make the copy)
        if cacheable:
            store.write(key, found, base)
            stats.extra["tenant_copies_made"] = 1.0
        return found, base
    have, vecs = hit
    stats.bytes_read = have.nbytes + vecs.nbytes
    return _followed(coll, have, vecs, slots, key, cacheable, stats)


def _followed(
    coll: CollectionCore,
    have: I64,
    vecs: F32,
    slots: I64,
    key: tuple[int, ...],
    cacheable: bool,
    stats: SearchStats,
) -> tuple[I64, F32]:
    """The copy (`have`, `vecs`) brought to the asked `slots` (see `copied`)."""
    pos = np.searchsorted(have, slots)
    present = pos < len(have)
    present[present] = have[pos[present]] == slots[present]
    if present.all():
        found, base = (have, vecs) if len(have) == len(slots) else (slots, vecs[pos])
        if cacheable and len(have) > SHRINK * len(slots) + SHRINK_SLACK:
            store_of(coll).write(key, found, base)
            stats.extra["tenant_copies_shrunk"] = 1.0
    else:
        new_s, new_v = stored_vectors(coll, slots[~present])
        stats.bytes_read += new_v.nbytes
        found = np.concatenate([slots[present], new_s])
        base = np.concatenate([vecs[pos[present]], new_v])
        if len(new_s):  # (slots deleted meanwhile are simply not there)
            order = np.argsort(found, kind="stable")
            found, base = found[order], np.ascontiguousarray(base[order])
            if cacheable:
                store_of(coll).write(key, found, base)
                stats.extra["tenant_copies_patched"] = 1.0
    return found, base


def stored_vectors(coll: CollectionCore, slots: I64) -> tuple[I64, F32]:
    """The prepared stored vectors of `slots` (multi-gets of `READ_CHUNK`; slots deleted
    meanwhile are skipped). Buffered writes are stored too, so a copy needs no buffer merge.
    Read in chunks into one array: a multi-get returns one small bytes object per vector,
    and 41,000 of them at once spread over interpreter arenas that later long-lived objects
    pinned (megabytes of anonymous memory kept after the copy was made)."""
    s = np.asarray(slots, np.int64)
    dim = coll.cfg.dim
    base = np.empty((len(s), dim), np.float32)
    keep = np.zeros(len(s), np.bool_)
    for lo in range(0, len(s), READ_CHUNK):
        raw = uncached_vectors(coll, s[lo : lo + READ_CHUNK].tolist())
        for j, r in enumerate(raw):
            if r is not None:
                base[lo + j] = np.frombuffer(r, np.float32)
                keep[lo + j] = True
        del raw
    if not keep.all():
        s, base = s[keep], base[keep]
    return s, np.ascontiguousarray(prepare(coll, base))


def uncached_vectors(coll: CollectionCore, slots: list[int]) -> list[bytes | None]:
    """`coll.points.vectors(slots)` (ascending slots) without filling RocksDB's block cache:
    a copy is read once and then lives in the copy file (page cache), so caching its blocks
    only grew the block cache to its capacity (32 MiB of anonymous memory) for nothing.
    """
    key = coll.points.slot_key
    return coll.kv.get_uncached(kvmod.CF_VECTORS, [key(s) for s in slots])


def attach(coll: CollectionCore) -> None:
    """Point the collection's tenant hooks here: `changed` after every change of a set,
    `nodes_of` for `get_tenant` (a no-op for a collection without tenants)."""
    ts = coll.tenants
    if ts is not None:
        # By weak reference: hooks closing over `coll` made a cycle (coll -> tenants -> hook
        # -> coll), so a dropped collection was freed only by the cycle collector.
        ref = weakref.ref(coll)

        def on_changed(nos: list[int]) -> None:
            if (live := ref()) is not None:
                changed(live, nos)

        ts.on_changed = on_changed
        ts.nodes_of = lambda no: 0 if (live := ref()) is None else nodes_of(live, no)


def nodes_of(coll: CollectionCore, no: int) -> int:
    """Nodes of tenant `no`'s sub-tree in the shared clustering tree (its leaves and their
    ancestors, `index.tenancy.node_counts`); 0 for an index without a tree (flat) or
    before the first build."""
    ts = coll.tenants
    count = getattr(coll.index, "subset_nodes", None)
    if ts is None or count is None:
        return 0
    return int(count(ts.slots_of([no])))


def changed(coll: CollectionCore, tenant_nos: list[int]) -> None:
    """Tenants whose set of visible slots changed (grants, revokes, upserts, deletes, a drop).
    Called after the change is committed, under the collection's write lock: cached
    cached sub-tree directories of sets including them are dropped (a new `Visible` for the
    set would make them stale anyway; this frees them at once). Copies stay: they check
    themselves against the asked slots and follow the set on its next query (`copied`)."""
    with _STORES_LOCK:
        store = _STORES.get(coll)
    if store is not None:
        tenant_clusters.copies_of(coll, store).forget([int(t) for t in tenant_nos])
    forget = getattr(coll.index, "forget_subsets", None)
    if forget is not None:
        forget([int(t) for t in tenant_nos])
