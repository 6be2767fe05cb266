"""The write path of a collection: upsert, delete (by ids or by filter), payload updates and
payload index builds.

A request is validated whole (nothing is written if any part is bad), may wait for room in
the write buffer (backpressure, bounded), then under the collection's write lock: the ids'
current slots are looked up, ONE RocksDB WriteBatch (points, op-log entry, sequence) is
committed with sync, and only then the change is applied in memory — removed slots leave
index and buffer, new slots enter the buffer (or the index, for kinds without a buffer). The
maintenance worker is told there is work. Payload index entries of the points written are in
the same batch. A delete by filter is split into such batches of at most DELETE_BATCH points
(each atomic, the call as a whole not). Vector index building never happens here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import commit, tenant_access
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.filters import Filter
from vecdb.engine.payload_index import BUILD_CHUNK, IndexDef
from vecdb.errors import InvalidArgument
from vecdb.index.spann.killpoints import kill_point
from vecdb.kernels import rowcheck
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import Batch
from vecdb.types import IdType, Metric

Notify = Callable[[CollectionCore], None]  # wakes the maintenance worker
DELETE_BATCH = 8192  # points per atomic write batch of a delete by filter


def prepare(coll: CollectionCore, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Vectors as the index stores them: unit length for cosine."""
    return v.normalize(vectors) if coll.metric is Metric.COSINE else vectors


def check_batch(
    ids: object,
    vectors: object,
    payloads: object,
    *,
    id_type: IdType,
    dim: int,
    metric: Metric,
    max_abs: float | None,
) -> tuple[list[Any], npt.NDArray[np.float32], list[bytes | None], npt.NDArray[np.float32]]:
    """Every check of an upsert batch that needs no data, in order: ids, vectors, their
    count, payloads, then components the index could not store (`max_abs`, e.g. float16
    postings; None: no limit). Returns (ids, vectors, payload blobs, vectors as stored).
    The router runs it too, before it splits a batch, so no shard writes part of a bad one."""
    id_list = v.prepare_ids(ids, id_type)
    vecs = v.prepare_vectors(vectors, dim, metric)
    v.check_row_count(vecs.shape[0], len(id_list))
    blobs = v.prepare_payloads(payloads, len(id_list))
    prepared = v.normalize(vecs) if metric is Metric.COSINE else vecs
    row, col = rowcheck.first_above(prepared, max_abs) if max_abs is not None else (-1, -1)
    if row >= 0:
        raise InvalidArgument(
            f"vectors[{row}][{col}] = {prepared[row, col]:.6g} exceeds {max_abs:g}, the "
            "largest component this collection's index stores (float16 postings or rerank "
            "rows); create "
            'the collection with index_params={"vector_dtype": "float32"} for such data',
            field=f"vectors[{row}][{col}]", reason="TOO_LARGE",
        )  # fmt: skip
    return id_list, vecs, blobs, prepared


def _old_payloads(coll: CollectionCore, slots: list[int]) -> list[dict[str, Any] | None]:
    """Payloads of slots about to change, when payload indexes need their entries removed."""
    if not coll.pindex.defs or not slots:
        return [None] * len(slots)
    return coll.points.payloads(slots)


def upsert(
    coll: CollectionCore,
    ids: object,
    vectors: object,
    payloads: object,
    notify: Notify,
    tenant: object = None,
    grant_to: object = None,
) -> int:
    """Insert or replace points; in a multi-tenant collection `tenant` is their owner and
    `grant_to` more tenants that may see them (`tenant_access` has the rules)."""
    access = tenant_access.upsert_access(coll, tenant, grant_to)
    id_list, vecs, blobs, prepared = check_batch(
        ids, vectors, payloads, id_type=coll.id_type, dim=coll.cfg.dim, metric=coll.metric,
        max_abs=coll.index.max_abs_component,
    )  # fmt: skip
    keys = [v.encode_id(i) for i in id_list]
    if coll.buffer is not None:
        s = coll.settings
        coll.buffer.wait_for_room(prepared.nbytes, s.buffer_max_bytes, s.stall_timeout, coll.name)
    with coll.write_lock:
        pts, pidx = coll.points, coll.pindex
        looked = pts.lookup(keys)
        old = [s for s in looked if s is not None]
        if access is not None:
            access.check(id_list, looked)  # another tenant's point: refused, nothing written
        pts.check_room(len(keys), coll.name)
        start = pts.next_slot
        batch = coll.kv.batch()
        for slot, pay in zip(old, _old_payloads(coll, old), strict=True):
            pts.delete_slot(batch, slot)
            pidx.remove(batch, slot, pay)
        for j, (key, blob) in enumerate(zip(keys, blobs, strict=True)):
            pts.put(batch, key, start + j, vecs[j].tobytes(), blob)
            if blob is not None and pidx.defs:
                pidx.add(batch, start + j, json.loads(blob))
            if access is not None:
                access.put(batch, start + j, looked[j], j)
        if access is not None:
            access.drop_old(batch)
        pts.put_next_slot(batch, start + len(keys))
        op = commit.encode_write(start, len(keys), old) if coll.kind.persistent else None
        coll.seq.commit(batch, coll.prefix, op)
        # Acknowledged from here on: apply to memory.
        new_slots = np.arange(start, start + len(keys), dtype=np.int64)
        removed = np.asarray(old, np.int64)
        if len(removed):
            coll.index.remove(removed)
            if coll.buffer is not None:
                coll.buffer.remove(removed)
        if coll.buffer is not None:
            coll.buffer.add(new_slots, prepared)
        else:
            coll.index.add(new_slots, prepared)
        pts.apply_upsert(new_slots, id_list, old)
        if access is not None:
            access.state.notify(access.apply())
        coll.selector.bump()
        coll.status.last_write = time.monotonic()
    notify(coll)
    return len(keys)


def delete(coll: CollectionCore, ids: object, notify: Notify, tenant: object = None) -> int:
    """Delete points by id; with a tenant, only points it owns (see `tenant_access`)."""
    who = tenant_access.scope(coll, tenant)
    id_list = v.prepare_ids(ids, coll.id_type)
    keys = [v.encode_id(i) for i in id_list]
    with coll.write_lock:
        pos = [(i, s) for i, s in enumerate(coll.points.lookup(keys)) if s is not None]
        pos = tenant_access.owned_found(coll, who, id_list, pos)
        found = [(keys[i], s) for i, s in pos]
        n = _delete_found(coll, found)
    if n:
        notify(coll)
    return n


def delete_matching(
    coll: CollectionCore, flt: Filter, notify: Notify, tenant: object = None
) -> int:
    """Delete the points the filter selects, at most DELETE_BATCH per write batch; returns
    how many were deleted in all.

    The points selected when the call begins are deleted in slot order, a batch at a time:
    each batch is one atomic, durable RocksDB batch (its points, their payload index entries
    and its op-log entry) committed under the write lock and applied to memory before the
    lock is released, so other writes interleave between batches and a search sees a batch
    wholly applied or not at all. The call as a whole is not atomic (like an upsert split
    by its client): a crash or a concurrent reader may see the first batches done and not
    the rest. A selected point is deleted only if it still matches at its batch; points
    written after the call began are left alone. With a tenant, only the matching points it
    owns are deleted."""
    who = tenant_access.scope(coll, tenant)
    with coll.write_lock:
        picked = np.flatnonzero(coll.selector.matching(flt)).astype(np.int64)
        picked = tenant_access.owned_mask(coll, who, picked)
    total = 0
    for lo in range(0, len(picked), DELETE_BATCH):
        with coll.write_lock:  # nothing changes what matches between the check and commit
            part = picked[lo : lo + DELETE_BATCH]
            alive = coll.points.alive()
            part = part[part < len(alive)]
            part = part[alive[part]]
            pays = coll.points.payloads(part.tolist())
            keep = [s for s, p in zip(part.tolist(), pays, strict=True) if flt.matches(p)]
            ids = coll.points.ids_of(np.asarray(keep, np.int64))
            found = [(v.encode_id(i), s) for i, s in zip(ids.tolist(), keep, strict=True)]
            n = _delete_found(coll, found)
        total += n
        if n:
            kill_point("delete_batch")
            notify(coll)
    return total


def _delete_found(
    coll: CollectionCore, found: list[tuple[bytes, int]], batch: Batch | None = None
) -> int:
    """Commit the removal of (encoded id, slot) pairs (with whatever `batch` already holds)
    and apply it (caller holds the write lock)."""
    if not found:
        return 0
    pts = coll.points
    batch = coll.kv.batch() if batch is None else batch
    old = [s for _, s in found]
    for (key, slot), pay in zip(found, _old_payloads(coll, old), strict=True):
        pts.delete_id(batch, key)
        pts.delete_slot(batch, slot)
        coll.pindex.remove(batch, slot, pay)
    acls = tenant_access.removed_acls(coll, batch, old)
    op = commit.encode_write(pts.next_slot, 0, old) if coll.kind.persistent else None
    coll.seq.commit(batch, coll.prefix, op)
    # The slot -> id table first, swapped whole: a search resolving its ids before the swap
    # walked the index before any removal below (sees every point of the batch), one after
    # it drops every one of them (see `reader._drop_vanished`).
    ts = coll.tenants
    if ts is None:
        pts.apply_delete(old)
    else:
        with ts.lock:  # the count and the hidden set together (a dropped tenant's cleanup)
            pts.apply_delete(old)
            ts.deleted_hidden(old)
    tenant_access.apply_removed(coll, acls)
    removed = np.asarray(old, np.int64)
    coll.index.remove(removed)
    if coll.buffer is not None:
        coll.buffer.remove(removed)
    if ts is not None:  # now that no search can meet them, a dropped owner's points unhide
        ts.unhide(old)
    coll.selector.bump()
    coll.status.last_write = time.monotonic()
    return len(found)


delete_found = _delete_found  # for a dropped tenant's cleanup (`tenant_jobs`)


def update_payloads(
    coll: CollectionCore, ids: object, payload: object, merge: bool, tenant: object = None
) -> int:
    """set_payload (`merge`: the given keys replace or join each point's top-level keys) or
    overwrite_payload (the payload is replaced whole). Missing ids are skipped; returns how
    many points were updated. Vectors and slots do not change. With a tenant, only points
    it owns (see `tenant_access`)."""
    who = tenant_access.scope(coll, tenant)
    id_list = v.prepare_ids(ids, coll.id_type)
    given = v.payload_bytes(payload, "payload")  # a JSON object within the caps
    assert isinstance(payload, dict)
    keys = [v.encode_id(i) for i in id_list]
    with coll.write_lock:
        pts, pidx = coll.points, coll.pindex
        pos = [(j, s) for j, s in enumerate(pts.lookup(keys)) if s is not None]
        pos = tenant_access.owned_found(coll, who, id_list, pos)
        found = [(id_list[j], s) for j, s in pos]
        if not found:
            return 0
        slots = [s for _, s in found]
        batch = coll.kv.batch()
        old = pts.payloads(slots) if (merge or pidx.defs) else [None] * len(slots)
        for (pid, slot), before in zip(found, old, strict=True):
            if merge:
                after = {**(before or {}), **payload}
                try:
                    blob = v.payload_bytes(after, "payload")
                except InvalidArgument as exc:  # the merge outgrew the caps: name the point
                    raise InvalidArgument(
                        f"{exc.message} once merged into the payload of id {pid!r}",
                        field="payload",
                        reason=exc.reason,
                    ) from None
            else:
                after, blob = payload, given
            pidx.remove(batch, slot, before)
            pidx.add(batch, slot, after)
            pts.put_payload(batch, slot, blob)
        op = commit.encode_payload(slots) if coll.kind.persistent else None
        coll.seq.commit(batch, coll.prefix, op)
        coll.selector.bump()
        coll.status.last_write = time.monotonic()
    return len(slots)


# -- payload indexes ------------------------------------------------------------------------


def build_payload_index(coll: CollectionCore, d: IndexDef) -> None:
    """Create (or finish) a payload index: its definition is published not ready, so writes
    maintain it from now on; then the entries of the stored payloads are written a chunk at a
    time under the write lock (writes wait for one chunk, never for the whole build); then it
    is marked ready. A crash midway leaves it not ready, and the next open builds it again."""
    pidx = coll.pindex
    pending = IndexDef(d.key, d.type, ready=False)
    with coll.write_lock:
        batch = coll.kv.batch()
        fp = pidx.field_prefix(d.key)
        batch.delete_range(kvmod.CF_META, fp, kvmod.prefix_end(fp))  # a half-built past
        pidx.put_def(batch, pending)
        coll.seq.commit(batch)
        pidx.publish(pending)
    prefix = coll.prefix
    end = kvmod.prefix_end(prefix)
    cursor = prefix
    while True:
        with coll.write_lock:
            batch = coll.kv.batch()
            n = _index_chunk(coll, pending, batch, cursor, end)
            if n == 0:
                done = IndexDef(d.key, d.type, ready=True)
                pidx.put_def(batch, done)
                coll.seq.commit(batch)
                pidx.publish(done)
                coll.selector.bump()
                return
            coll.seq.commit(batch)
            cursor = prefix + kvmod.u64(n)


def _index_chunk(coll: CollectionCore, d: IndexDef, batch: Batch, start: bytes, end: bytes) -> int:
    """Entries of up to BUILD_CHUNK stored payloads from key `start` on; returns the slot to
    resume at, 0 when there were none."""
    last = -1
    rows = 0
    for key, raw in coll.kv.scan_range(kvmod.CF_PAYLOAD, start, end, fill_cache=False):
        slot = kvmod.read_u64(key, len(coll.prefix))
        coll.pindex.add(batch, slot, json.loads(raw), only=d)
        last = slot
        rows += 1
        if rows == BUILD_CHUNK:
            break
    return last + 1 if rows else 0


def drop_payload_index(coll: CollectionCore, key: str) -> None:
    with coll.write_lock:
        batch = coll.kv.batch()
        coll.pindex.drop(batch, key)
        coll.seq.commit(batch)
        coll.pindex.forget(key)
        coll.selector.bump()
