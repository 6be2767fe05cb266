"""The write path of a collection: upsert and delete.

A request is validated whole (nothing is written if any part is bad), may wait for room in
the write buffer (backpressure, bounded), then under the collection's write lock: the ids'
current slots are looked up, ONE RocksDB WriteBatch (points, op-log entry, sequence) is
committed with sync, and only then the change is applied in memory — removed slots leave
index and buffer, new slots enter the buffer (or the index, for kinds without a buffer). The
maintenance worker is told there is work. Index building never happens here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vecdb.engine import commit
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.errors import InvalidArgument
from vecdb.types import Metric

Notify = Callable[[CollectionCore], None]  # wakes the maintenance worker


def prepare(coll: CollectionCore, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Vectors as the index stores them: unit length for cosine."""
    return v.normalize(vectors) if coll.metric is Metric.COSINE else vectors


def check_range(coll: CollectionCore, prepared: npt.NDArray[np.float32]) -> None:
    """Refuse, before commit, vectors the index could not store (e.g. float16 postings)."""
    limit = coll.index.max_abs_component
    if limit is None or prepared.size == 0:
        return
    big = np.abs(prepared) > limit
    if big.any():
        row, col = np.argwhere(big)[0]
        raise InvalidArgument(
            f"vectors[{row}][{col}] = {prepared[row, col]:.6g} exceeds {limit:g}, the "
            f"largest component this collection's {coll.cfg.index} index stores; create "
            'the collection with index_params={"vector_dtype": "float32"} for such data'
        )


def upsert(
    coll: CollectionCore, ids: object, vectors: object, payloads: object, notify: Notify
) -> int:
    id_list = v.prepare_ids(ids, coll.id_type)
    vecs = v.prepare_vectors(vectors, coll.cfg.dim, coll.metric)
    if vecs.shape[0] != len(id_list):
        raise InvalidArgument(
            f"vectors has {vecs.shape[0]} rows but ids has {len(id_list)} entries"
        )
    blobs = v.prepare_payloads(payloads, len(id_list))
    keys = [v.encode_id(i) for i in id_list]
    prepared = prepare(coll, vecs)
    check_range(coll, prepared)
    if coll.buffer is not None:
        s = coll.settings
        coll.buffer.wait_for_room(prepared.nbytes, s.buffer_max_bytes, s.stall_timeout, coll.name)
    with coll.write_lock:
        pts = coll.points
        old = [s for s in pts.lookup(keys) if s is not None]
        start = pts.next_slot
        batch = coll.kv.batch()
        for slot in old:
            pts.delete_slot(batch, slot)
        for j, (key, blob) in enumerate(zip(keys, blobs, strict=True)):
            pts.put(batch, key, start + j, vecs[j].tobytes(), blob)
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
        coll.status.last_write = time.monotonic()
    notify(coll)
    return len(keys)


def delete(coll: CollectionCore, ids: object, notify: Notify) -> int:
    id_list = v.prepare_ids(ids, coll.id_type)
    keys = [v.encode_id(i) for i in id_list]
    with coll.write_lock:
        pts = coll.points
        found = [(k, s) for k, s in zip(keys, pts.lookup(keys), strict=True) if s is not None]
        if not found:
            return 0
        batch = coll.kv.batch()
        for key, slot in found:
            pts.delete_id(batch, key)
            pts.delete_slot(batch, slot)
        old = [s for _, s in found]
        op = commit.encode_write(pts.next_slot, 0, old) if coll.kind.persistent else None
        coll.seq.commit(batch, coll.prefix, op)
        removed = np.asarray(old, np.int64)
        coll.index.remove(removed)
        if coll.buffer is not None:
            coll.buffer.remove(removed)
        pts.apply_delete(old)
        coll.status.last_write = time.monotonic()
    notify(coll)
    return len(found)
