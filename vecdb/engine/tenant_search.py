"""Search restricted to tenants: the seam between tenant membership and the index.

The engine's tenant layer (`engine/tenants.py`) knows which slots each tenant may see and
calls `search_tenants` with them; this module decides how to search that set, and `changed`
is told whenever a tenant's set changes, so derived structures can follow. Paths, by size:
- with SPANN, a small set (its float32 vectors take at most `tenant_exact` bytes) is answered exactly
  from the stored vectors (one RocksDB multi-get, no posting read), write buffer included;
- otherwise an index that can walk a set's sub-tree (SPANN's `search_subset`: the set's
  leaves best first, in rounds, with a stop rule; or the global walk with the bitmap for a
  set holding a large share of the points) is asked, and the write buffer's segments are
  scanned exactly with the same bitmap and merged, as `reader.search_slots` does;
- an index without one (flat: exact, in memory) is searched with the bitmap.
Per-query counters (which path, leaves and nodes of the sub-tree, rounds, postings and bytes
read) land in the collection's `io` stats like any search's. Owns no tenant state: the sets
come from the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine.core import CollectionCore
from vecdb.engine.reader import search_slots
from vecdb.engine.writer import prepare
from vecdb.errors import InvalidArgument
from vecdb.index.base import SearchStats, Visible
from vecdb.index.params import SearchParams
from vecdb.index.tenancy import TenantParams
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


def search_tenants(
    coll: CollectionCore,
    q: F32,
    k: int,
    params: dict[str, Any] | None,
    tenant_nos: list[int],
    slots: I64,
    visible: Visible,
) -> tuple[I64, F32]:
    """Top-k slots of prepared queries among `slots` (sorted, the live slots granted to any
    of `tenant_nos`; `visible` is the same set as a bitmap), over index and write buffer."""
    if params is not None and not isinstance(params, dict):
        raise InvalidArgument("params must be a JSON object of search parameter -> value")
    mine, rest = TenantParams.split(params)
    tp = TenantParams.parse(mine)
    walker = getattr(coll.index, "search_subset", None)
    if walker is None:  # the flat index: exact already, in memory
        return search_slots(coll, q, k, rest, visible)
    SearchParams.parse(rest)  # bad search parameters fail whichever path answers
    if len(slots) * coll.cfg.dim * 4 <= tp.tenant_exact:
        return exact_over_slots(coll, q, k, slots)
    key = frozenset(int(t) for t in tenant_nos)
    while True:  # as `search_slots`: a rebuild that empties the index makes us look again
        epoch = coll.index_epoch
        segments = [] if coll.buffer is None else coll.buffer.snapshot()
        res = walker(q, k, params, slots, visible, key)
        if coll.index_epoch == epoch:
            break
    with coll.io_lock:
        coll.io.add(res.stats)
    out_s, out_d = res.slots, res.distances
    for seg in segments:
        if len(seg):
            part = seg.scan(q, k, visible)
            out_s, out_d = merge_topk(out_s, out_d, part.slots, part.distances, k)
    return out_s, out_d


def exact_over_slots(coll: CollectionCore, q: F32, k: int, slots: I64) -> tuple[I64, F32]:
    """Exact top-k among the stored vectors of `slots` (one multi-get; slots deleted
    meanwhile are skipped). Buffered writes are stored too, so nothing needs merging."""
    nq = q.shape[0]
    stats = SearchStats(queries=nq, extra={"tenant_exact": float(nq)})
    raw = coll.points.vectors(np.asarray(slots, np.int64).tolist()) if len(slots) else []
    keep = [i for i, r in enumerate(raw) if r is not None]
    with coll.io_lock:
        coll.io.add(stats)
    if not keep:
        return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
    base = np.frombuffer(b"".join(raw[i] for i in keep), np.float32)  # type: ignore[misc]
    base = np.ascontiguousarray(prepare(coll, base.reshape(len(keep), coll.cfg.dim)))
    found = np.asarray(slots, np.int64)[keep]
    rows, dist = exact_topk(q, base, coll.cfg.metric, k)
    return np.where(rows >= 0, found[np.maximum(rows, 0)], -1), dist


def changed(coll: CollectionCore, tenant_nos: list[int]) -> None:
    """Tenants whose set of visible slots changed (grants, revokes, upserts, deletes, a drop).
    Called after the change is committed, under the collection's write lock: cached
    sub-tree directories of sets including them are dropped (a new `Visible` for the set
    would make them re-derive anyway; this frees their memory at once)."""
    forget = getattr(coll.index, "forget_subsets", None)
    if forget is not None:
        forget([int(t) for t in tenant_nos])
