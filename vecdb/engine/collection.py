"""One dense collection: its write path, read path and in-memory state.

Owns the commit of each request (one RocksDB WriteBatch, synced, then applied in memory), the
slot allocation, the slot -> user id table, the write buffer in front of a disk index, and
search (index + buffer merged, filters, payloads). Validation is in `validate`, the catalog
in `database`, reopening in `recovery`. Never writes index files itself: the index does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from vecdb.engine import validate as v
from vecdb.engine.locks import RWLock
from vecdb.errors import InvalidArgument
from vecdb.index.base import Slots, VectorIndex
from vecdb.index.flat import FlatIndex
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV, Batch
from vecdb.types import (
    CollectionInfo,
    CollectionKind,
    Id,
    IdType,
    IndexKind,
    Metric,
    Payload,
    Record,
    SearchResult,
)

DEFAULT_BUFFER_LIMIT = 20_000  # vectors buffered before they are applied to a disk index
# Before the first build the buffer may grow to this many bytes of vectors, so that a bulk
# load builds once from all of its data (at optimize() or at this cap) instead of building
# from its first few thousand vectors and splitting postings for the rest of the load.
BULK_BUFFER_BYTES = 256 * 2**20
_FILTER_GROWTH = 4  # a filtered search widens k by this factor until it has enough matches
# Cumulative counters taken from an index's per-search stats (reported by `stats`).
_IO_KEYS = ("queries", "heads_searched", "postings_read", "pages_read", "bytes_read")
_FILTER_MAX_CANDIDATES = 4096  # beyond this many candidates, scan the matching points instead


@dataclass
class CollectionConfig:
    """What `create_collection` fixed; stored as JSON in the meta column family."""

    name: str
    cid: int
    dim: int
    metric: str
    id_type: str = "int"
    index: str = "flat"
    index_params: dict[str, Any] = field(default_factory=dict)
    kind: str = "dense"
    multi_tenant: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CollectionConfig:
        return cls(**json.loads(raw))


class Sequencer:
    """The database-wide operation sequence and the lock that orders commits."""

    def __init__(self, kv: KV, start: int) -> None:
        self.kv = kv
        self.value = start  # last committed sequence number
        self.lock = threading.Lock()

    def commit(self, batch: Batch, log_prefix: bytes | None = None, op: bytes | None = None) -> int:
        """Assign the next sequence number, record it (and the op-log entry `op` under
        `log_prefix` + seq, if given) in the batch and commit durably."""
        with self.lock:
            seq = self.value + 1
            batch.put(kvmod.CF_META, b"seq", kvmod.u64(seq))
            if log_prefix is not None and op is not None:
                batch.put(kvmod.CF_OPLOG, log_prefix + kvmod.u64(seq), op)
            self.kv.commit(batch)
            self.value = seq
            return seq


class Collection:
    """A named set of (id, vector, payload) points and the index over them."""

    def __init__(
        self, cfg: CollectionConfig, kv: KV, seq: Sequencer, index: VectorIndex, directory: Path
    ) -> None:
        self.cfg = cfg  # the fixed configuration
        self.kv = kv  # the database's key-value store
        self.seq = seq  # orders and commits every write
        self.index = index  # the main index (flat in memory, or a disk index)
        self.directory = directory  # where the index keeps its files
        self.metric = Metric(cfg.metric)
        self.id_type = IdType(cfg.id_type)
        self.prefix = kvmod.cid_prefix(cfg.cid)  # key prefix of this collection
        self.lock = RWLock()  # searches share, writes exclude
        self.buffer: FlatIndex | None = (
            None if not index.persistent else FlatIndex(cfg.dim, cfg.metric)
        )  # recent writes searched exactly until applied to a disk index
        self.buffer_limit = DEFAULT_BUFFER_LIMIT
        self.next_slot = 0  # next slot to hand out
        self.count = 0  # live points
        self.applied_seq = 0  # last sequence whose writes are durable inside the index
        self._io = dict.fromkeys(_IO_KEYS, 0)  # cumulative search I/O of the index
        self._io_lock = threading.Lock()
        self._slot_ids: npt.NDArray[Any] = np.full(
            0, -1, np.int64 if self.id_type is IdType.INT else object
        )  # slot -> user id

    # -- keys -----------------------------------------------------------------------------

    def _key(self, raw: bytes) -> bytes:
        return self.prefix + raw

    def _slot_key(self, slot: int) -> bytes:
        return self.prefix + kvmod.u64(slot)

    def _next_slot_key(self) -> bytes:
        return b"next_slot:" + self.prefix

    # -- slot table ------------------------------------------------------------------------

    def set_slot_ids(self, slots: list[int], ids: list[Id]) -> None:
        if not slots:
            return
        top = max(slots) + 1
        if top > self._slot_ids.shape[0]:
            grown = np.full(max(top, 2 * self._slot_ids.shape[0], 1024), -1, self._slot_ids.dtype)
            if self._slot_ids.dtype == object:
                grown[:] = None
            grown[: self._slot_ids.shape[0]] = self._slot_ids
            self._slot_ids = grown
        self._slot_ids[np.asarray(slots, np.int64)] = ids

    def clear_slot_ids(self, slots: list[int]) -> None:
        if slots:
            self._slot_ids[np.asarray(slots, np.int64)] = (
                None if self._slot_ids.dtype == object else -1
            )

    def ids_of(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
        pad: Any = None if self.id_type is IdType.STR else -1
        out = np.full(slots.shape, pad, self._slot_ids.dtype)
        ok = slots >= 0
        out[ok] = self._slot_ids[slots[ok]]
        return out

    def prepare_for_index(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return v.normalize(vectors) if self.metric is Metric.COSINE else vectors

    # -- write path ------------------------------------------------------------------------

    def _lookup_slots(self, keys: list[bytes]) -> list[int | None]:
        raw = self.kv.multi_get(kvmod.CF_IDS, [self._key(k) for k in keys])
        return [None if r is None else kvmod.read_u64(r) for r in raw]

    def upsert(self, ids: object, vectors: object, payloads: object = None) -> int:
        id_list = v.prepare_ids(ids, self.id_type)
        vecs = v.prepare_vectors(vectors, self.cfg.dim, self.metric)
        if vecs.shape[0] != len(id_list):
            raise InvalidArgument(
                f"vectors has {vecs.shape[0]} rows but ids has {len(id_list)} entries"
            )
        blobs = v.prepare_payloads(payloads, len(id_list))
        keys = [v.encode_id(i) for i in id_list]
        prepared = self.prepare_for_index(vecs)
        self._check_index_range(prepared)
        with self.lock.write():
            old = [s for s in self._lookup_slots(keys) if s is not None]
            start = self.next_slot
            batch = self.kv.batch()
            for slot in old:
                self._delete_point(batch, slot)
            for j, (key, blob) in enumerate(zip(keys, blobs, strict=False)):
                slot = start + j
                batch.put(kvmod.CF_IDS, self._key(key), kvmod.u64(slot))
                batch.put(kvmod.CF_SLOTS, self._slot_key(slot), key)
                batch.put(kvmod.CF_VECTORS, self._slot_key(slot), vecs[j].tobytes())
                if blob is not None:
                    batch.put(kvmod.CF_PAYLOAD, self._slot_key(slot), blob)
            batch.put(kvmod.CF_META, self._next_slot_key(), kvmod.u64(start + len(keys)))
            self.seq.commit(batch, self.prefix, self._op(start, len(keys), old))
            # Acknowledged from here on: apply to memory.
            self.next_slot = start + len(keys)
            new_slots = np.arange(start, start + len(keys), dtype=np.int64)
            self._apply_remove(np.asarray(old, np.int64))
            self._apply_add(new_slots, prepared)
            self.clear_slot_ids(old)
            self.set_slot_ids(new_slots.tolist(), id_list)
            self.count += len(keys) - len(old)
        return len(keys)

    def _check_index_range(self, prepared: npt.NDArray[np.float32]) -> None:
        """Refuse, before commit, vectors the index could not store (e.g. float16 postings)."""
        limit = getattr(self.index, "max_abs_component", None)
        if limit is None or prepared.size == 0:
            return
        big = np.abs(prepared) > limit
        if big.any():
            row, col = np.argwhere(big)[0]
            raise InvalidArgument(
                f"vectors[{row}][{col}] = {prepared[row, col]:.6g} exceeds {limit:g}, the "
                f"largest component this collection's {self.cfg.index} index stores; create "
                'the collection with index_params={"vector_dtype": "float32"} for such data'
            )

    def delete(self, ids: object) -> int:
        id_list = v.prepare_ids(ids, self.id_type)
        keys = [v.encode_id(i) for i in id_list]
        with self.lock.write():
            found = [
                (k, s)
                for k, s in zip(keys, self._lookup_slots(keys), strict=False)
                if s is not None
            ]
            if not found:
                return 0
            batch = self.kv.batch()
            for key, slot in found:
                batch.delete(kvmod.CF_IDS, self._key(key))
                self._delete_point(batch, slot)
            old = [s for _, s in found]
            self.seq.commit(batch, self.prefix, self._op(self.next_slot, 0, old))
            self._apply_remove(np.asarray(old, np.int64))
            self.clear_slot_ids(old)
            self.count -= len(old)
        return len(found)

    def _delete_point(self, batch: Batch, slot: int) -> None:
        for cf in (kvmod.CF_SLOTS, kvmod.CF_VECTORS, kvmod.CF_PAYLOAD):
            batch.delete(cf, self._slot_key(slot))

    def _op(self, start: int, n: int, removed: list[int]) -> bytes | None:
        """The op-log entry of a write, only for indexes that replay it after a crash."""
        if not self.index.persistent:
            return None
        return bytes(msgpack.packb({"add": [start, n], "rm": removed}))

    def _apply_add(self, slots: Slots, vectors: npt.NDArray[np.float32]) -> None:
        if self.buffer is None:
            self.index.add(slots, vectors)
            return
        self.buffer.add(slots, vectors)
        if len(self.buffer) >= self._current_buffer_limit():
            self.drain_buffer()

    def _current_buffer_limit(self) -> int:
        if len(self.index) == 0:  # never built (or emptied): wait for a bulk build
            return max(self.buffer_limit, BULK_BUFFER_BYTES // (4 * self.cfg.dim))
        return self.buffer_limit

    def _apply_remove(self, slots: Slots) -> None:
        if slots.size == 0:
            return
        if self.buffer is not None:
            self.buffer.remove(slots)
        self.index.remove(slots)

    def drain_buffer(self) -> None:
        """Move buffered vectors into the disk index, run its maintenance, checkpoint."""
        self._apply_buffer()
        self.index.maintain()
        self.checkpoint()

    def _apply_buffer(self) -> None:
        if self.buffer is None or len(self.buffer) == 0:
            return
        slots, vectors = self.buffer.live()
        if len(self.index) == 0:  # nothing built yet (or all deleted): one bulk build
            self.index.build(slots, vectors)
        else:
            self.index.add(slots, vectors)
        self.buffer.build(np.zeros(0, np.int64), np.zeros((0, self.cfg.dim), np.float32))

    def checkpoint(self) -> None:
        if not self.index.persistent:
            return
        seq = self.seq.value
        self.index.checkpoint(seq)
        self.applied_seq = seq
        batch = self.kv.batch()
        batch.delete_prefix(kvmod.CF_OPLOG, self.prefix)  # everything logged is now durable
        self.kv.commit(batch)

    def optimize(self) -> None:
        """Apply the buffer (a bulk build if the index is empty), maintain, checkpoint."""
        with self.lock.write():
            self.drain_buffer()

    # -- read path -------------------------------------------------------------------------

    def get(self, ids: object) -> list[Record]:
        id_list = v.prepare_ids(ids, self.id_type)
        keys = [v.encode_id(i) for i in id_list]
        with self.lock.read():
            slots = self._lookup_slots(keys)
            present = [(i, s) for i, s in zip(id_list, slots, strict=False) if s is not None]
            skeys = [self._slot_key(s) for _, s in present]
            vecs = self.kv.multi_get(kvmod.CF_VECTORS, skeys)
            pays = self.kv.multi_get(kvmod.CF_PAYLOAD, skeys)
        out = []
        for (i, _), vec, pay in zip(present, vecs, pays, strict=False):
            if vec is None:
                continue
            out.append(
                Record(
                    id=i,
                    vector=np.frombuffer(vec, np.float32).copy(),
                    payload=None if pay is None else json.loads(pay),
                )
            )
        return out

    def payloads_of(self, slots: list[int]) -> list[Payload | None]:
        """Payloads of `slots` in order; None for padding (-1) and points without one."""
        real = [s for s in slots if s >= 0]
        raw = iter(self.kv.multi_get(kvmod.CF_PAYLOAD, [self._slot_key(s) for s in real]))
        out: list[Payload | None] = []
        for s in slots:
            r = next(raw) if s >= 0 else None
            out.append(None if r is None else json.loads(r))
        return out

    def _search_slots(
        self, q: npt.NDArray[np.float32], k: int, params: dict[str, Any] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        slots, dist = self.index.search(q, k, params)
        last = getattr(self.index, "last_search_stats", None)
        if last is not None:
            io = last()
            with self._io_lock:
                for key in _IO_KEYS:
                    self._io[key] += int(io.get(key, 0))
        if self.buffer is not None and len(self.buffer):
            bslots, bdist = self.buffer.search(q, k)
            slots, dist = merge_topk(slots, dist, bslots, bdist, k)
        return slots, dist

    def search(
        self,
        queries: object,
        k: int = 10,
        *,
        filter: object = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
    ) -> SearchResult:
        k = v.check_k(k)
        flt = v.check_filter(filter)
        q = self.prepare_for_index(v.prepare_queries(queries, self.cfg.dim, self.metric))
        if params is not None and not isinstance(params, dict):
            raise InvalidArgument("params must be a dict of search parameter -> value")
        with self.lock.read():
            if flt is None:
                slots, dist = self._search_slots(q, k, params)
            else:
                slots, dist = self._filtered(q, k, flt, params)
            ids = self.ids_of(slots)
            pays = None
            if with_payload:  # one entry per result column; None where padded or absent
                pays = [
                    [p if s >= 0 else None for s, p in zip(row, self.payloads_of(row))]
                    for row in slots.tolist()
                ]
        return SearchResult(ids=ids, distances=dist.astype(np.float32), payloads=pays)

    def _filtered(
        self, q: npt.NDArray[np.float32], k: int, flt: dict[str, Any], params: dict[str, Any] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Payload filter: widen the index's candidate list a few times; if that does not
        find k matches, scan every matching point exactly. Always complete."""
        out_s = np.full((q.shape[0], k), -1, np.int64)
        out_d = np.full((q.shape[0], k), np.inf, np.float32)
        cap = min(self.count, _FILTER_MAX_CANDIDATES)
        exhaustive: list[int] = []
        for row in range(q.shape[0]):
            width = k
            while True:
                width = min(width * _FILTER_GROWTH, max(cap, 1))
                slots, dist = self._search_slots(q[row : row + 1], width, params)
                cand = [int(s) for s in slots[0] if s >= 0]
                pays = self.payloads_of(cand)
                keep = [j for j, p in enumerate(pays) if v.matches(p, flt)][:k]
                if len(keep) >= k or len(cand) >= self.count:
                    out_s[row, : len(keep)] = [cand[j] for j in keep]
                    out_d[row, : len(keep)] = dist[0, keep]
                    break
                if width >= cap:
                    exhaustive.append(row)
                    break
        if exhaustive:
            rows = np.asarray(exhaustive)
            out_s[rows], out_d[rows] = self._filtered_scan(q[rows], k, flt)
        return out_s, out_d

    def _filtered_scan(
        self, q: npt.NDArray[np.float32], k: int, flt: dict[str, Any]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact top-k among all points whose payload matches (reads every payload)."""
        slots = [
            kvmod.read_u64(key, len(self.prefix))
            for key, raw in self.kv.scan_prefix(kvmod.CF_PAYLOAD, self.prefix)
            if v.matches(json.loads(raw), flt)
        ]
        raw_vecs = self.kv.multi_get(kvmod.CF_VECTORS, [self._slot_key(s) for s in slots])
        keep = [(s, r) for s, r in zip(slots, raw_vecs) if r is not None]
        nq = q.shape[0]
        if not keep:
            return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
        base = np.frombuffer(b"".join(r for _, r in keep), np.float32)
        base = self.prepare_for_index(base.reshape(len(keep), self.cfg.dim))
        rows, dist = exact_topk(q, base, self.cfg.metric, k)
        ids = np.asarray([s for s, _ in keep], np.int64)
        return np.where(rows >= 0, ids[np.maximum(rows, 0)], -1), dist

    # -- info ------------------------------------------------------------------------------

    def info(self) -> CollectionInfo:
        return CollectionInfo(
            name=self.cfg.name,
            dim=self.cfg.dim,
            metric=self.metric,
            kind=CollectionKind(self.cfg.kind),
            id_type=self.id_type,
            index=IndexKind(self.cfg.index),
            count=self.count,
            multi_tenant=self.cfg.multi_tenant,
            index_params=dict(self.cfg.index_params),
        )

    def stats(self) -> dict[str, Any]:
        with self.lock.read():
            return {
                "name": self.cfg.name,
                "count": self.count,
                "buffered": 0 if self.buffer is None else len(self.buffer),
                "applied_seq": self.applied_seq,
                "index": {**self.index.stats(), **self._io},
            }

    def close(self) -> None:
        with self.lock.write():
            self.index.close()
