"""RocksDB (rocksdict, raw mode) as vecdb's key-value store: the source of truth.

Owns the column families, key encodings and the commit point: one request is one
`WriteBatch` written with `sync=True` and acknowledged only after `commit` returns. It knows
nothing about vectors beyond bytes and must not import the index. Never pickles (raw_mode).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from rocksdict import (
    AccessType,
    Checkpoint,
    ColumnFamily,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from vecdb.errors import StorageLocked, Unavailable

# Column families and what they hold (keys start with a 4-byte collection id unless noted):
CF_META = "meta"  # collection configs by name, counters (no cid prefix for db-level keys)
CF_OPLOG = "oplog"  # cid + seq -> msgpack op (for indexes that replay)
CF_IDS = "ids"  # cid + encoded user id -> slot (8 bytes big-endian)
CF_SLOTS = "slots"  # cid + slot -> encoded user id
CF_VECTORS = "vectors"  # cid + slot -> little-endian float32 vector
CF_PAYLOAD = "payload"  # cid + slot -> JSON payload
COLUMN_FAMILIES = (CF_META, CF_OPLOG, CF_IDS, CF_SLOTS, CF_VECTORS, CF_PAYLOAD)

# What a collection owns in the meta column family: every such key is one of these heads, then
# the collection's 4-byte id, then anything. Snapshot, restore and drop find a collection's
# meta rows by these heads alone (`collection_rows`, `delete_collection_rows`), so a new kind
# of per-collection meta key must be added here.
META_NEXT_SLOT = b"next_slot:"  # + cid -> u64: the point table's slot counter
META_PIDX_DEF = b"pidxdef:"  # + cid + field -> JSON: a payload index definition
META_PIDX_ENTRY = b"pidx:"  # + cid + field + value + slot -> b"": a payload index entry
META_REBUILD = b"rebuild:"  # + cid -> b"": the index files are being replaced (rebuild on open)
# Tenants of a multi-tenant collection (vecdb.engine.tenants):
META_TENANT = b"tenant:"  # + cid + name -> msgpack: the tenant's number, state, drop progress
META_TENANT_NEXT = b"tnext:"  # + cid -> u64: the next tenant number to hand out
META_ACL = b"acl:"  # + cid + slot (u64) -> owner number (u32) + sorted grantee numbers (u32 each)
META_TV = b"tv:"  # + cid + tenant number (u32) + slot (u64) -> b"o" (owner) | b"g" (grantee)
COLLECTION_META_HEADS = (
    META_NEXT_SLOT,
    META_PIDX_DEF,
    META_PIDX_ENTRY,
    META_REBUILD,
    META_TENANT,
    META_TENANT_NEXT,
    META_ACL,
    META_TV,
)


def set_rebuild_marker(kv: KV, prefix: bytes, on: bool) -> None:
    """Set or clear (synced, only if it changes) the rebuild marker of the collection with
    key prefix `prefix`: while it is set, an open rebuilds the index from stored vectors."""
    key = META_REBUILD + prefix
    if (kv.get(CF_META, key) is not None) == on:
        return
    batch = kv.batch()
    if on:
        batch.put(CF_META, key, b"")
    else:
        batch.delete(CF_META, key)
    kv.commit(batch)


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def cid_prefix(cid: int) -> bytes:
    return _U32.pack(cid)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(raw: bytes, offset: int = 0) -> int:
    return int(_U64.unpack_from(raw, offset)[0])


def prefix_end(prefix: bytes) -> bytes:
    """Smallest key greater than every key starting with `prefix`."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\xff" * (len(prefix) + 8)
    b[-1] += 1
    return bytes(b)


# Memtables of all column families together stay under this many bytes (RocksDB flushes
# the largest when they pass it). Without it each family may hold 2 x 64 MiB, and a bulk
# load kept ~80 MiB of vectors resident twice (once in the write buffer, once here).
MEMTABLE_BUDGET = 32 * 2**20
CF_MEMTABLE = 8 * 2**20  # one memtable of one family before it is switched


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET)
    return opts


def _cf_options() -> Options:
    opts = Options(raw_mode=True)
    opts.set_write_buffer_size(CF_MEMTABLE)
    return opts


class Reader(Protocol):
    """What reads need of a store: the live `KV` or a fixed `View` of it."""

    def get(self, cf: str, key: bytes) -> bytes | None: ...

    def multi_get(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def scan_range(
        self, cf: str, start: bytes, end: bytes, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def collection_rows(src: Reader, prefix: bytes) -> Iterator[tuple[str, bytes, bytes, bytes]]:
    """Every row of the collection with key prefix `prefix` as (column family, head, tail,
    value), its key being head + prefix + tail: the rows of the cid-prefixed families (head
    b"") and its meta rows (`COLLECTION_META_HEADS`)."""
    for cf in COLUMN_FAMILIES:
        if cf == CF_META:
            for head in COLLECTION_META_HEADS:
                for key, value in src.scan_prefix(cf, head + prefix):
                    yield cf, head, key[len(head) + len(prefix) :], value
            continue
        for key, value in src.scan_prefix(cf, prefix):
            yield cf, b"", key[len(prefix) :], value


class Batch:
    """A group of puts/deletes across column families, applied atomically by `KV.commit`."""

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self._wb = WriteBatch(raw_mode=True)
        self.ops = 0
        self.nbytes = 0  # keys and values put

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._wb.put(key, value, self._kv.handle(cf))
        self.ops += 1
        self.nbytes += len(key) + len(value)

    def delete(self, cf: str, key: bytes) -> None:
        self._wb.delete(key, self._kv.handle(cf))
        self.ops += 1

    def delete_prefix(self, cf: str, prefix: bytes) -> None:
        self._wb.delete_range(prefix, prefix_end(prefix), self._kv.handle(cf))
        self.ops += 1

    def delete_range(self, cf: str, start: bytes, end: bytes) -> None:
        """Delete every key in [start, end)."""
        self._wb.delete_range(start, end, self._kv.handle(cf))
        self.ops += 1


def delete_collection_rows(batch: Batch, prefix: bytes) -> None:
    """Delete every row `collection_rows` would yield for `prefix` (drop, restore)."""
    for cf in COLUMN_FAMILIES:
        if cf == CF_META:
            for head in COLLECTION_META_HEADS:
                batch.delete_prefix(cf, head + prefix)
        else:
            batch.delete_prefix(cf, prefix)


class View:
    """The whole store as it was at one instant: reads through a view never see a later
    commit, in any column family. Made by `KV.view`, which creates, while no commit can run,
    one RocksDB iterator per column family for scans and one for point reads: an iterator
    reads the state it was created at, however long it lives and wherever it seeks.
    (rocksdict's `Snapshot` isolates point reads only: `Snapshot.iter` reads the live column
    family, which is why views are built from iterators.) One scan per column family at a
    time; close a view promptly, since it pins memtables and table files."""

    def __init__(self, kv: KV) -> None:
        opts = ReadOptions()
        opts.fill_cache(False)  # type: ignore[call-arg]
        with kv._commit_lock:  # no commit between the first iterator and the last
            self.seq = int(kv._db.latest_sequence_number())  # RocksDB's sequence at the instant
            self._scan = {cf: kv._cfs[cf].iter(opts) for cf in COLUMN_FAMILIES}
            self._probe = {cf: kv._cfs[cf].iter(ReadOptions()) for cf in COLUMN_FAMILIES}
        self._busy: set[str] = set()  # families with a scan in progress

    def get(self, cf: str, key: bytes) -> bytes | None:
        it = self._probe[cf]
        it.seek(key)
        if it.valid() and bytes(it.key()) == key:
            return bytes(it.value())
        return None

    def multi_get(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self.get(cf, k) for k in keys]

    def scan_range(
        self, cf: str, start: bytes, end: bytes, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key in [start, end) at the view's instant."""
        if cf in self._busy:
            raise RuntimeError(f"a scan of column family {cf!r} is already running on this view")
        self._busy.add(cf)
        try:
            it = self._scan[cf]
            it.seek(start)
            while it.valid():
                key = bytes(it.key())
                if key >= end:
                    return
                yield key, bytes(it.value())
                it.next()
        finally:
            self._busy.discard(cf)

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.scan_range(cf, prefix, prefix_end(prefix))

    def close(self) -> None:
        self._scan.clear()
        self._probe.clear()

    def __enter__(self) -> View:
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class KV:
    """The database's RocksDB instance with vecdb's column families."""

    def __init__(self, path: Path, *, sync: bool = True, read_only: bool = False) -> None:
        self.path = path
        self.sync = sync  # False only for throwaway databases (":memory:")
        self._commit_lock = threading.Lock()
        # Set after a write error (fail-stop until reopen) or for a read-only open.
        self._failed: str | None = "opened read-only" if read_only else None
        try:
            self._db = Rdict(
                str(path),
                _options(),
                column_families={cf: _cf_options() for cf in COLUMN_FAMILIES},
                access_type=AccessType.read_only() if read_only else AccessType.read_write(),
            )
        except Exception as exc:  # rocksdict raises plain Exception with RocksDB's text
            text = str(exc)
            if "lock" in text.lower():
                raise StorageLocked(
                    f"data directory is in use by another process (RocksDB lock {path / 'LOCK'})"
                ) from exc
            raise
        self._cfs = {cf: self._db.get_column_family(cf) for cf in COLUMN_FAMILIES}
        self._handles = {cf: self._db.get_column_family_handle(cf) for cf in COLUMN_FAMILIES}
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync

    def handle(self, cf: str) -> ColumnFamily:
        return self._handles[cf]

    def view(self) -> View:
        """A consistent read-only view of the whole store as of now (see `View`)."""
        return View(self)

    def batch(self) -> Batch:
        return Batch(self)

    def commit(self, batch: Batch) -> None:
        """Apply `batch` atomically and durably; returns only once RocksDB synced it."""
        if self._failed is not None:
            raise Unavailable(f"storage does not accept writes: {self._failed}")
        with self._commit_lock:
            try:
                self._db.write(batch._wb, self._write_opts)
            except Exception as exc:
                self._failed = str(exc)
                raise Unavailable(f"write failed, storage is now read-only: {exc}") from exc
        if batch.nbytes >= CF_MEMTABLE:
            # A batch larger than a memtable sits in memory whole until its memtable is
            # flushed, and RocksDB switches memtables only at the next write: a bulk load of
            # 64 MiB requests held two of them (~130 MiB) after its last write. Start the
            # flush now, in RocksDB's background threads (the data is already durable in
            # the WAL; this only gives the memory back sooner).
            for family in self._cfs.values():
                size = family.property_int_value("rocksdb.cur-size-active-mem-table") or 0
                if size >= CF_MEMTABLE:
                    family.flush(wait=False)

    def get(self, cf: str, key: bytes) -> bytes | None:
        value = self._cfs[cf].get(key)
        return None if value is None else bytes(value)

    def multi_get(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        found: list[bytes | None] = list(self._cfs[cf][list(keys)] or [])
        return found

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key starting with `prefix`, in key order."""
        opts = ReadOptions()
        opts.set_iterate_upper_bound(prefix_end(prefix))
        # A bulk scan (reopen, rebuild) must not fill the block cache. rocksdict's stub omits
        # the bool argument that the runtime method takes.
        opts.fill_cache(False)  # type: ignore[call-arg]
        opts.set_readahead_size(2 * 2**20)
        it = self._cfs[cf].iter(opts)
        it.seek(prefix)
        while it.valid():
            yield bytes(it.key()), bytes(it.value())
            it.next()

    def scan_range(
        self, cf: str, start: bytes, end: bytes, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key in [start, end), in key order."""
        opts = ReadOptions()
        opts.set_iterate_upper_bound(end)
        opts.fill_cache(fill_cache)  # type: ignore[call-arg]
        it = self._cfs[cf].iter(opts)
        it.seek(start)
        while it.valid():
            yield bytes(it.key()), bytes(it.value())
            it.next()

    def flush(self) -> None:
        """Write every column family's memtable out to table files, releasing its memory
        (after a bulk load the memtables hold up to MEMTABLE_BUDGET of vectors)."""
        for family in self._cfs.values():
            family.flush(wait=True)

    def checkpoint(self, path: Path) -> None:
        """A RocksDB checkpoint of the whole store at `path` (must not exist): memtables are
        flushed, table files hard-linked. The caller stops commits for the instant it runs
        if it needs the checkpoint at a known sequence (see `vecdb.engine.snapshot`)."""
        Checkpoint(self._db).create_checkpoint(str(path))

    def count_prefix(self, cf: str, prefix: bytes) -> int:
        return sum(1 for _ in self.scan_prefix(cf, prefix))

    def close(self) -> None:
        # Column-family objects keep the DB alive (and its LOCK held) until they are dropped.
        self._cfs.clear()
        self._handles.clear()
        self._db.close()
        del self._db
