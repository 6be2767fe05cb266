"""The point table of one collection: user ids, slots, and what RocksDB holds per point.

Owns the key layout of a collection's points (id -> slot in `ids`, slot -> id in `slots`,
slot -> vector in `vectors`, slot -> payload in `payload`, all behind the collection's 4-byte
prefix), the slot counter, the live count, and the in-memory slot -> id array that turns
index results into user ids (int ids in int32 while every id fits, widened to int64 by the
first that does not: 4 bytes a slot instead of 8, plus the 1-byte live mask it replaces, as
"live" is "has an id"). Writes go into a caller's batch; the in-memory side changes
only after that batch is committed (`apply_*`). Knows nothing of indexes or search.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import validate as v
from vecdb.errors import ResourceExhausted
from vecdb.kernels.idmap import int_ids
from vecdb.kernels.posting import MAX_SLOTS
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV, Batch, Reader
from vecdb.types import Id, IdType, Payload, Record

SCAN_CHUNK = 65_536  # slots streamed per numpy chunk when the table is loaded
NARROW_MAX = np.iinfo(np.int32).max  # int ids up to this fit the narrow (int32) table


class PointTable:
    """One collection's points in RocksDB plus the slot -> id array in memory."""

    def __init__(self, kv: KV, prefix: bytes, id_type: IdType, dim: int) -> None:
        self.kv = kv  # the database's store
        self.prefix = prefix  # the collection's key prefix
        self.id_type = id_type  # int or str ids
        # what the id table holds at a slot without a point (and ids_of gives padding)
        self._unused: Any = None if id_type is IdType.STR else -1
        self.dim = dim  # vector dimension (stored vectors are float32)
        self.next_slot = 0  # next slot to hand out (slots are never reused)
        self.count = 0  # live points
        self._lock = threading.Lock()  # guards growth of the slot -> id array
        self._slot_ids: npt.NDArray[Any] = np.full(
            0, -1, np.int32 if id_type is IdType.INT else object
        )  # slot -> user id (-1 / None where none: a slot is live iff it has an id)

    # -- keys -----------------------------------------------------------------------------

    def id_key(self, encoded_id: bytes) -> bytes:
        return self.prefix + encoded_id

    def slot_key(self, slot: int) -> bytes:
        return self.prefix + kvmod.u64(slot)

    @property
    def next_slot_key(self) -> bytes:
        return kvmod.META_NEXT_SLOT + self.prefix

    # -- load -----------------------------------------------------------------------------

    def load(self) -> None:
        """Read the slot counter and the slot -> id table from RocksDB (streamed in numpy
        chunks so that no per-point Python objects pile up)."""
        raw = self.kv.get(kvmod.CF_META, self.next_slot_key)
        self.next_slot = 0 if raw is None else kvmod.read_u64(raw)
        with self._lock:
            self._grow(self.next_slot, exact=True)  # sized to the slots handed out, no slack
        for slots, ids in self._slot_chunks():
            self._set(slots, ids)
            self.count += len(slots)

    def _slot_chunks(self) -> Iterator[tuple[npt.NDArray[np.int64], Any]]:
        slots = np.empty(SCAN_CHUNK, np.int64)
        ids: Any = (
            np.empty(SCAN_CHUNK, np.int64) if self.id_type is IdType.INT else [None] * SCAN_CHUNK
        )
        n = 0
        for key, value in self.kv.scan_prefix(kvmod.CF_SLOTS, self.prefix):
            slots[n] = kvmod.read_u64(key, len(self.prefix))
            ids[n] = v.decode_id(value, self.id_type)
            n += 1
            if n == SCAN_CHUNK:
                yield slots, ids
                n = 0
        if n:
            yield slots[:n], ids[:n]

    # -- lookups --------------------------------------------------------------------------

    def lookup(self, encoded_ids: list[bytes]) -> list[int | None]:
        """The current slot of each id, None where the id is absent."""
        raw = self.kv.multi_get(kvmod.CF_IDS, [self.id_key(k) for k in encoded_ids])
        return [None if r is None else kvmod.read_u64(r) for r in raw]

    def ids_of(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
        """User ids of result slots; padding (-1) stays -1 (int ids) or None (str ids)."""
        table = self._slot_ids
        out = np.full(slots.shape, self._unused, object if table.dtype == object else np.int64)
        ok = (slots >= 0) & (slots < len(table))
        out[ok] = table[slots[ok]]
        return out

    def present(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Whether each slot holds a live point now (the in-memory table: a read of an older
        RocksDB view may still hold points deleted since)."""
        table = self._slot_ids
        out = np.zeros(slots.shape, np.bool_)
        ok = (slots >= 0) & (slots < len(table))
        out[ok] = table[slots[ok]] != self._unused
        return out

    def ids_found(self, slots: npt.NDArray[np.int64]) -> tuple[npt.NDArray[Any], int]:
        """`ids_of(slots)` and how many non-negative slots have no id there (points
        deleted since they were found; `reader` drops those hits). Int ids in one compiled
        pass (the search path's per-call cost)."""
        table = self._slot_ids
        if table.dtype != object:
            return int_ids(slots, table)
        ids = self.ids_of(slots)
        return ids, int(np.count_nonzero((slots >= 0) & (ids == self._unused)))

    def records(
        self,
        pairs: list[tuple[Id, int]],
        with_vectors: bool = True,
        with_payload: bool = True,
        src: Reader | None = None,
    ) -> list[Record | None]:
        """Records of (id, slot) pairs, aligned; None where the slot is gone (its point was
        replaced or deleted since the slot was looked up). Read from `src` (a `View` for a
        consistent page), else the live store."""
        db = self.kv if src is None else src
        keys = [self.slot_key(s) for _, s in pairs]
        # The vector row tells whether the slot is live; without vectors, the slot row does.
        there = db.multi_get(kvmod.CF_VECTORS if with_vectors else kvmod.CF_SLOTS, keys)
        pays = db.multi_get(kvmod.CF_PAYLOAD, keys) if with_payload else [None] * len(keys)
        out: list[Record | None] = []
        for (i, _), raw, pay in zip(pairs, there, pays, strict=True):
            if raw is None:
                out.append(None)
                continue
            payload = None if pay is None else json.loads(pay)
            vec = np.frombuffer(raw, np.float32).copy() if with_vectors else None
            out.append(Record(id=i, vector=vec, payload=payload))
        return out

    def id_range(
        self, start: bytes | None, src: Reader | None = None
    ) -> Iterator[tuple[bytes, int]]:
        """(encoded id, slot) of the live points in ascending id order (int ids numerically,
        str ids by UTF-8 bytes: the key order), from the encoded id `start` on."""
        db = self.kv if src is None else src
        begin = self.prefix + (b"" if start is None else start)
        for key, value in db.scan_range(kvmod.CF_IDS, begin, kvmod.prefix_end(self.prefix)):
            yield key[len(self.prefix) :], kvmod.read_u64(value)

    def stored_payloads(self, src: Reader | None = None) -> Iterator[tuple[int, bytes]]:
        """(slot, JSON payload) of every point that has a payload, in slot order."""
        db = self.kv if src is None else src
        for key, raw in db.scan_prefix(kvmod.CF_PAYLOAD, self.prefix):
            yield kvmod.read_u64(key, len(self.prefix)), raw

    def stored_next_slot(self, src: Reader) -> int:
        """The slot counter as `src` holds it (every slot it knows of is below it)."""
        raw = src.get(kvmod.CF_META, self.next_slot_key)
        return 0 if raw is None else kvmod.read_u64(raw)

    def alive(self) -> npt.NDArray[np.bool_]:
        """A mask over slots 0 .. next_slot - 1 of those holding live points (a copy)."""
        n = self.next_slot
        out = np.zeros(n, np.bool_)
        table = self._slot_ids
        m = min(n, len(table))
        np.not_equal(table[:m], self._unused, out=out[:m])
        return out

    def payloads(self, slots: list[int], src: Reader | None = None) -> list[Payload | None]:
        """Payloads of `slots` in order; None for padding (-1) and points without one."""
        db = self.kv if src is None else src
        real = [s for s in slots if s >= 0]
        raw = iter(db.multi_get(kvmod.CF_PAYLOAD, [self.slot_key(s) for s in real]))
        out: list[Payload | None] = []
        for s in slots:
            r = next(raw) if s >= 0 else None
            out.append(None if r is None else json.loads(r))
        return out

    def slot_rows(self, slots: list[int], src: Reader | None = None) -> list[bool]:
        """Whether each slot holds a point (in `src`, else the live store)."""
        db = self.kv if src is None else src
        return [
            r is not None for r in db.multi_get(kvmod.CF_SLOTS, [self.slot_key(s) for s in slots])
        ]

    def vectors(self, slots: list[int]) -> list[bytes | None]:
        """Stored float32 vectors (raw bytes) of `slots`, None where gone."""
        return self.kv.multi_get(kvmod.CF_VECTORS, [self.slot_key(s) for s in slots])

    # -- writes into a batch ----------------------------------------------------------------

    def put(
        self, batch: Batch, encoded_id: bytes, slot: int, vector: bytes, payload: bytes | None
    ) -> None:
        batch.put(kvmod.CF_IDS, self.id_key(encoded_id), kvmod.u64(slot))
        batch.put(kvmod.CF_SLOTS, self.slot_key(slot), encoded_id)
        batch.put(kvmod.CF_VECTORS, self.slot_key(slot), vector)
        if payload is not None:
            batch.put(kvmod.CF_PAYLOAD, self.slot_key(slot), payload)

    def delete_slot(self, batch: Batch, slot: int) -> None:
        """Remove a point's slot rows (the id row is replaced or deleted by the caller)."""
        for cf in (kvmod.CF_SLOTS, kvmod.CF_VECTORS, kvmod.CF_PAYLOAD):
            batch.delete(cf, self.slot_key(slot))

    def delete_id(self, batch: Batch, encoded_id: bytes) -> None:
        batch.delete(kvmod.CF_IDS, self.id_key(encoded_id))

    def put_payload(self, batch: Batch, slot: int, payload: bytes | None) -> None:
        """Replace a live point's payload row (None: the point has no payload now)."""
        if payload is None:
            batch.delete(kvmod.CF_PAYLOAD, self.slot_key(slot))
        else:
            batch.put(kvmod.CF_PAYLOAD, self.slot_key(slot), payload)

    def check_room(self, n: int, name: str) -> None:
        """Refuse (before anything is written) a batch that would hand out slot MAX_SLOTS or
        beyond: slots are never reused (every upsert takes a new one) and a SPANN posting
        stores them as uint32 (`kernels.posting.SLOT_BYTES`)."""
        if self.next_slot + n > MAX_SLOTS:
            raise ResourceExhausted(
                f"collection {name!r} has handed out {self.next_slot:,} point slots and this "
                f"batch needs {n:,} more; a collection has {MAX_SLOTS:,} in its life (each "
                f"upsert takes a new one): copy its points into a new collection",
                field="collection",
            )

    def put_next_slot(self, batch: Batch, value: int) -> None:
        batch.put(kvmod.CF_META, self.next_slot_key, kvmod.u64(value))

    def delete_all(self, batch: Batch) -> None:
        """Every row of the collection (drop): its points, op log and meta rows (payload
        index definitions and entries included, see `kv.COLLECTION_META_HEADS`)."""
        kvmod.delete_collection_rows(batch, self.prefix)

    # -- after commit ---------------------------------------------------------------------

    def apply_upsert(self, new_slots: npt.NDArray[np.int64], ids: list[Id], old: list[int]) -> None:
        self.next_slot = int(new_slots[-1]) + 1 if len(new_slots) else self.next_slot
        self._clear(old)
        self._set(new_slots, ids)
        self.count += len(ids) - len(old)

    def apply_delete(self, old: list[int]) -> None:
        """Forget deleted slots. Several are cleared in fresh copies of the tables published
        at once, so a reader that took the slot -> id table sees all of them or none (one
        copy of the table per delete request: 4 or 8 bytes per slot for int ids)."""
        self._clear(old, whole=len(old) > 1)
        self.count -= len(old)

    def _set(self, slots: npt.NDArray[np.int64], ids: Any) -> None:
        if len(slots) == 0:
            return
        with self._lock:
            self._grow(int(slots.max()) + 1)
            if self._slot_ids.dtype == np.int32 and len(ids):
                if int(np.max(np.asarray(ids, np.int64))) > NARROW_MAX:  # widen, published whole
                    self._slot_ids = self._slot_ids.astype(np.int64)
            self._slot_ids[slots] = ids

    def _grow(self, top: int, exact: bool = False) -> None:
        """Room for slots below `top` (growing by a quarter, or exactly `top` when `exact`:
        a long-running process's table keeps at most a quarter of slack, not doubling's
        half; the copies a load makes sum to about 5x the final table, not 2x). Called with
        `_lock` held; readers see the old arrays or the grown ones, whose new rows hold no id
        until `_set` fills them."""
        table = self._slot_ids
        if top <= len(table):
            return
        size = top if exact else max(top, len(table) * 5 // 4, 1024)
        grown = np.full(size, -1, table.dtype)
        if table.dtype == object:
            grown[:] = None
        grown[: len(table)] = table
        self._slot_ids = grown

    def _clear(self, slots: list[int], whole: bool = False) -> None:
        if slots:
            at = np.asarray(slots, np.int64)
            with self._lock:
                if whole:
                    table = self._slot_ids.copy()
                    table[at] = self._unused
                    self._slot_ids = table
                else:
                    self._slot_ids[at] = self._unused
