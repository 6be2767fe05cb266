"""RocksDB (rocksdict, raw mode) as vecdb's key-value store: the source of truth.

Owns the store's options and the commit point (the layout, column families and meta key
heads, is `vecdb.storage.layout`, re-exported here): one request is one
`WriteBatch` written with `sync=True` and acknowledged only after `commit` returns. It knows
nothing about vectors beyond bytes and must not import the index. Never pickles (raw_mode).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from rocksdict import (
    AccessType,
    BottommostLevelCompaction,
    Checkpoint,
    ColumnFamily,
    CompactOptions,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from vecdb.errors import DataLoss, DiskFull, StorageError, Unavailable, VecdbError
from vecdb.storage import faults
from vecdb.storage.keys import cid_prefix as cid_prefix  # re-exported: key encodings
from vecdb.storage.keys import read_u64 as read_u64
from vecdb.storage.keys import u64 as u64
from vecdb.storage.layout import CF_IDS as CF_IDS  # re-exported: the RocksDB layout
from vecdb.storage.layout import CF_META as CF_META
from vecdb.storage.layout import CF_OPLOG as CF_OPLOG
from vecdb.storage.layout import CF_PAYLOAD as CF_PAYLOAD
from vecdb.storage.layout import CF_SLOTS as CF_SLOTS
from vecdb.storage.layout import CF_VECTORS as CF_VECTORS
from vecdb.storage.layout import COLLECTION_META_HEADS as COLLECTION_META_HEADS
from vecdb.storage.layout import COLUMN_FAMILIES as COLUMN_FAMILIES
from vecdb.storage.layout import META_ACL as META_ACL
from vecdb.storage.layout import META_NEXT_SLOT as META_NEXT_SLOT
from vecdb.storage.layout import META_PIDX_DEF as META_PIDX_DEF
from vecdb.storage.layout import META_PIDX_ENTRY as META_PIDX_ENTRY
from vecdb.storage.layout import META_REBUILD as META_REBUILD
from vecdb.storage.layout import META_TENANT as META_TENANT
from vecdb.storage.layout import META_TENANT_NEXT as META_TENANT_NEXT
from vecdb.storage.layout import META_TV as META_TV
from vecdb.storage.layout import REBUILD_REPLACING as REBUILD_REPLACING
from vecdb.storage.layout import REBUILD_UNBUILT as REBUILD_UNBUILT
from vecdb.storage.layout import collection_rows as collection_rows
from vecdb.storage.layout import delete_collection_rows as delete_collection_rows
from vecdb.storage.manifest import write_bytes_atomic
from vecdb.storage.view import Reader as Reader  # re-exported: what reads need
from vecdb.storage.view import View as View  # re-exported: the store at one instant
from vecdb.storage.view import prefix_end as prefix_end  # re-exported


def set_rebuild_marker(kv: KV, prefix: bytes, on: bool, why: bytes = REBUILD_REPLACING) -> None:
    """Set or clear (synced, only if it changes) the rebuild marker of the collection with
    key prefix `prefix`: while it is set, an open rebuilds the index from stored vectors.
    `why` says what the open reports: REBUILD_REPLACING (files being replaced, the default)
    outranks REBUILD_UNBUILT (never built) and is not overwritten by it."""
    key = META_REBUILD + prefix
    now = kv.get(CF_META, key)
    if now is None if not on else now in (why, REBUILD_REPLACING):
        return
    batch = kv.batch()
    if on:
        batch.put(CF_META, key, why)
    else:
        batch.delete(CF_META, key)
    kv.commit(batch)


# Memtables of all column families together stay under this many bytes (RocksDB flushes
# the largest when they pass it). Without it each family may hold 2 x 64 MiB, and a bulk
# load kept ~80 MiB of vectors resident twice (once in the write buffer, once here).
MEMTABLE_BUDGET = 32 * 2**20
CF_MEMTABLE = 8 * 2**20  # one memtable of one family before it is switched
# Write-ahead log files on disk at most (then RocksDB flushes the families that hold the
# oldest one back). A log file goes only once every family's memtable covering it is
# flushed, and a family that takes a few bytes a commit (the sequence numbers) flushed
# rarely: a 1,172 MiB vector load kept all its 1,185 MiB of logs beside the 1,185 MiB of
# table files (200,000 x 1,536 upserted, scratch `up_only.py`).
WAL_MAX_BYTES = 4 * MEMTABLE_BUDGET


# WAL recovery: a damaged record in the middle of the log refuses the open (DataLoss) rather
# than silently dropping every later record (RocksDB's default, point in time); a torn tail
# (a write cut by a crash, never acknowledged) is still dropped. An operator who accepts the
# loss opens with VECDB_WAL_RECOVERY=point_in_time.
WAL_RECOVERY = os.environ.get("VECDB_WAL_RECOVERY", "tolerate_corrupted_tail_records")


def _options(create: bool) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    mode = getattr(DBRecoveryMode, WAL_RECOVERY, None)
    if mode is None or WAL_RECOVERY.startswith("_"):
        raise StorageError(f"VECDB_WAL_RECOVERY={WAL_RECOVERY!r} is not a RocksDB recovery mode")
    opts.set_wal_recovery_mode(mode())
    opts.create_missing_column_families(True)
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET)
    opts.set_max_total_wal_size(WAL_MAX_BYTES)
    return opts


def _cf_options() -> Options:
    opts = Options(raw_mode=True)
    opts.set_write_buffer_size(CF_MEMTABLE)
    return opts


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


CLEAN_CLOSE = "VECDB_CLEAN_CLOSE"  # RocksDB's sequence at the last clean close


class KV:
    """The database's RocksDB instance with vecdb's column families.

    Failure rules (see `faults` for how an error is classified): a commit is refused with
    `DiskFull` while the disk has less than `reserve_bytes` free, before RocksDB is asked.
    After a failed write RocksDB refuses every later one until reopened, so the store turns
    read-only (`write_problem` says why); reads go on. Once the disk has room again, the
    next commit or `try_resume` (the server's health loop calls it) reopens RocksDB in this
    process and writes resume, nothing acknowledged lost. A clean close flushes the
    memtables and records RocksDB's sequence; an open that finds RocksDB behind it (table
    or log files lost or damaged at rest) is `DataLoss`. Creating a store only happens in
    an empty directory: a store missing its CURRENT file is `DataLoss`, never a new one."""

    def __init__(
        self,
        path: Path,
        *,
        sync: bool = True,
        read_only: bool = False,
        reserve_bytes: int = faults.DISK_RESERVE_BYTES,
    ) -> None:
        self.path = path
        self.sync = sync  # False only for throwaway databases (":memory:")
        self.read_only = read_only
        self.reserve_bytes = reserve_bytes  # free disk below which commits are refused
        self._commit_lock = threading.Lock()
        self._shadow: Path | None = None  # read-only on a read-only disk: see `_shadow_of`
        self._failed: VecdbError | None = None  # why writes fail until a reopen
        self._open()
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync

    def _open(self) -> None:
        path = self.path
        try:
            fresh = not path.exists() or not any(path.iterdir())
            if not fresh and not (path / "CURRENT").exists():
                raise DataLoss(f"RocksDB store {path} is damaged: its CURRENT file is missing")
            if fresh and self.read_only:
                raise StorageError(f"RocksDB store {path} does not exist")
            where = path
            if self.read_only and not os.access(path, os.W_OK):
                where = self._shadow = _shadow_of(path)
            self._db = Rdict(
                str(where),
                _options(create=fresh),
                column_families={cf: _cf_options() for cf in COLUMN_FAMILIES},
                access_type=AccessType.read_only() if self.read_only else AccessType.read_write(),
            )
        except VecdbError:
            self._drop_shadow()
            raise
        except Exception as exc:  # rocksdict raises plain Exception with RocksDB's text
            self._drop_shadow()
            raise faults.classify(exc, path, "opening", self.reserve_bytes) from exc
        try:
            self._cfs = {cf: self._db.get_column_family(cf) for cf in COLUMN_FAMILIES}
            self._handles = {cf: self._db.get_column_family_handle(cf) for cf in COLUMN_FAMILIES}
            self._check_clean_close()
        except BaseException as exc:
            self._drop()
            if isinstance(exc, Exception) and not isinstance(exc, VecdbError):
                raise faults.classify(exc, path, "opening", self.reserve_bytes) from exc
            raise
        faults.hold(path)

    def _check_clean_close(self) -> None:
        record = self.path / CLEAN_CLOSE
        try:
            recorded = int(record.read_text().strip() or 0)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise DataLoss(f"{record}: unreadable ({exc})") from exc
        now = int(self._db.latest_sequence_number())
        if now < recorded:
            raise DataLoss(
                f"RocksDB store {self.path} is behind its last clean close (sequence {now} < "
                f"{recorded}): table or log files were lost or damaged"
            )

    def _drop(self) -> None:
        # Column-family objects keep the DB alive (and its LOCK held) until they are dropped.
        self._cfs, self._handles = {}, {}
        db = getattr(self, "_db", None)
        if db is not None:
            try:
                db.close()
            finally:
                del self._db
        self._drop_shadow()
        faults.release(self.path)

    def _drop_shadow(self) -> None:
        shadow = getattr(self, "_shadow", None)
        if shadow is not None:
            shutil.rmtree(shadow, ignore_errors=True)
            self._shadow = None

    def handle(self, cf: str) -> ColumnFamily:
        """A column family's handle for batches. A batch keeps only the family's id, which a
        reopen (`try_resume`) does not change, so a batch built before one commits after."""
        try:
            return self._handles[cf]
        except KeyError:
            raise Unavailable(f"storage {self.path} is being reopened; retry") from None

    def view(self) -> View:
        """A consistent read-only view of the whole store as of now (see `View`)."""
        return View(self)

    def batch(self) -> Batch:
        return Batch(self)

    # -- writes and their failures --------------------------------------------------------

    def write_problem(self) -> str:
        """Why writes are refused now ("" when they are accepted)."""
        if self.read_only:
            return "opened read-only"
        if self._failed is not None:
            return self._failed.message
        if faults.disk_full(self.path, self.reserve_bytes):
            return f"disk of {self.path} below the {self.reserve_bytes >> 20} MiB free reserve"
        return ""

    def try_resume(self) -> bool:
        """After a failed write: reopen RocksDB if the disk has room again; True when
        writes are accepted (now or already)."""
        if self._failed is None:
            return True
        if faults.disk_full(self.path, self.reserve_bytes):
            return False
        with self._commit_lock:
            if self._failed is None:
                return True
            try:
                self._drop()
                self._open()
            except VecdbError as exc:  # a view or scan still holds the old instance
                self._failed = exc
                return False
            self._failed = None
        return True

    def commit(self, batch: Batch, after: int = 0) -> None:
        """Apply `batch` atomically and durably; returns only once RocksDB synced it.
        `DiskFull` first, nothing written, unless the disk has room for the batch, the
        `after` bytes its caller writes to the same disk once it is acknowledged (a document
        upsert's token rows: an acknowledged write must not fail on them) and the reserve."""
        if self.read_only:
            raise Unavailable(f"storage {self.path} is open read-only")
        if self._failed is not None and not self.try_resume():
            raise type(self._failed)(f"storage does not accept writes: {self._failed.message}")
        need = self.reserve_bytes + batch.nbytes + after
        if faults.disk_full(self.path, need):
            free = faults.free_bytes(self.path)
            this = need - self.reserve_bytes
            parts = (
                f" ({_mib_up(this)} MiB for this write and the {self.reserve_bytes >> 20} MiB "
                "reserve)" if this else ""
            )  # fmt: skip
            raise DiskFull(
                f"disk of {self.path} is full: {free >> 20} MiB free, writes need "
                f"{_mib_up(need)} MiB{parts}; retry once space is freed"
            )
        with self._commit_lock:
            try:
                self._db.write(batch._wb, self._write_opts)
            except Exception as exc:
                err = faults.classify(exc, self.path, "writing to", self.reserve_bytes)
                self._failed = err  # RocksDB refuses every later write until reopened
                raise err from exc
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

    # -- reads ----------------------------------------------------------------------------

    def memory(self) -> dict[str, dict[str, int]]:
        """Bytes RocksDB holds in memory, by column family: `block_cache` (each family has
        RocksDB's default LRU block cache of 32 MiB, not set here: blocks read recently,
        those of dropped collections too until evicted) and `memtables` (MEMTABLE_BUDGET for
        all families together)."""
        out: dict[str, dict[str, int]] = {"block_cache": {}, "memtables": {}}
        try:
            for cf, family in self._cfs.items():
                out["block_cache"][cf] = family.property_int_value("rocksdb.block-cache-usage") or 0
                out["memtables"][cf] = family.property_int_value("rocksdb.size-all-mem-tables") or 0
        except Exception as exc:
            raise faults.classify(exc, self.path, "reading", self.reserve_bytes) from exc
        return out

    def get(self, cf: str, key: bytes) -> bytes | None:
        try:
            value = self._cfs[cf].get(key)
        except Exception as exc:
            raise faults.classify(exc, self.path, "reading", self.reserve_bytes) from exc
        return None if value is None else bytes(value)

    def multi_get(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            found: list[bytes | None] = list(self._cfs[cf][list(keys)] or [])
        except Exception as exc:
            raise faults.classify(exc, self.path, "reading", self.reserve_bytes) from exc
        return found

    def get_uncached(self, cf: str, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of ascending `keys` without filling the block cache (rocksdict's multi-get
        ignores a per-call `fill_cache`, so one iterator seeks each key)."""
        opts = ReadOptions()
        opts.fill_cache(False)  # type: ignore[call-arg]
        out: list[bytes | None] = []
        try:
            it = self._cfs[cf].iter(opts)
            for want in keys:
                it.seek(want)
                out.append(bytes(it.value()) if it.valid() and bytes(it.key()) == want else None)
            it.status()
        except Exception as exc:
            raise faults.classify(exc, self.path, "reading", self.reserve_bytes) from exc
        return out

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key starting with `prefix`, in key order."""
        opts = ReadOptions()
        opts.set_iterate_upper_bound(prefix_end(prefix))
        # A bulk scan (reopen, rebuild) must not fill the block cache. rocksdict's stub omits
        # the bool argument that the runtime method takes.
        opts.fill_cache(False)  # type: ignore[call-arg]
        opts.set_readahead_size(2 * 2**20)
        return self._iterate(cf, opts, prefix)

    def scan_range(
        self, cf: str, start: bytes, end: bytes, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key in [start, end), in key order."""
        opts = ReadOptions()
        opts.set_iterate_upper_bound(end)
        opts.fill_cache(fill_cache)  # type: ignore[call-arg]
        return self._iterate(cf, opts, start)

    def _iterate(self, cf: str, opts: ReadOptions, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            it = self._cfs[cf].iter(opts)
            it.seek(start)
            while it.valid():
                yield bytes(it.key()), bytes(it.value())
                it.next()
            it.status()  # an iterator stops early on corruption: say so
        except VecdbError:
            raise
        except Exception as exc:
            raise faults.classify(exc, self.path, "reading", self.reserve_bytes) from exc

    def flush(self) -> None:
        """Write every column family's memtable out to table files, releasing its memory
        (after a bulk load the memtables hold up to MEMTABLE_BUDGET of vectors)."""
        try:
            for family in self._cfs.values():
                family.flush(wait=True)
        except Exception as exc:
            raise faults.classify(exc, self.path, "flushing", self.reserve_bytes) from exc

    def compact_dropped(self, prefix: bytes) -> None:
        """Compact away a dropped collection's key range `prefix` in every column family
        (its meta rows by their heads). A drop leaves one range tombstone per family; RocksDB
        moves a table file that holds only such a tombstone (a family the collection never
        wrote) to the bottom level as it is and never rewrites it, so without this each drop
        left a table file on disk, open for good (max_open_files is unlimited): 1,200 drops of
        collections without payloads left 1,200 files and file descriptors. A forced
        compaction of the range rewrites those files, which drops the tombstone and the
        rows it covers. Best effort: a failure leaves the files to RocksDB."""
        if self.read_only or self._failed is not None:
            return
        opts = CompactOptions()
        opts.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        for cf in COLUMN_FAMILIES:
            heads = COLLECTION_META_HEADS if cf == CF_META else (b"",)
            for head in heads:
                start = head + prefix
                try:
                    self._cfs[cf].compact_range(start, prefix_end(start), opts)
                except Exception:  # rocksdict raises plain Exception; the drop is done
                    return

    def checkpoint(self, path: Path) -> None:
        """A RocksDB checkpoint of the whole store at `path` (must not exist): memtables are
        flushed, table files hard-linked. The caller stops commits for the instant it runs
        if it needs the checkpoint at a known sequence (see `vecdb.engine.snapshot`)."""
        try:
            Checkpoint(self._db).create_checkpoint(str(path))
        except Exception as exc:
            raise faults.classify(exc, path, "checkpointing to", self.reserve_bytes) from exc

    def sequence(self) -> int:
        """RocksDB's latest sequence number: it moves with every committed write."""
        return int(self._db.latest_sequence_number())

    def count_prefix(self, cf: str, prefix: bytes) -> int:
        return sum(1 for _ in self.scan_prefix(cf, prefix))

    def close(self) -> None:
        """Flush, record the sequence of this clean close, and release RocksDB. A store
        that cannot be flushed (disk full) is closed all the same: its WAL holds it."""
        if not self.read_only and self._failed is None and hasattr(self, "_db"):
            try:
                self.flush()
                seq = int(self._db.latest_sequence_number())
                write_bytes_atomic(self.path / CLEAN_CLOSE, f"{seq}\n".encode())
            except (VecdbError, OSError):
                pass  # no record: the next open cannot compare, and needs not
        self._drop()


# What an open writes into a store's directory even when read-only: RocksDB's info log (and
# its rotation), rocksdict's configuration file; and the write lock, unused read-only.
_SHADOW_OWN = ("LOCK", "LOG", "rocksdict-config.json")


def _shadow_of(path: Path) -> Path:
    """A writable stand-in for a store on a read-only file system (a backup mounted read-only,
    a volume snapshot): a temporary directory of symbolic links to its files, where RocksDB
    and rocksdict may write what a read-only open writes. rocksdict's configuration is copied
    (it is read, then rewritten)."""
    shadow = Path(tempfile.mkdtemp(prefix="vecdb-readonly-"))
    try:
        for entry in path.iterdir():
            if entry.name == "rocksdict-config.json":
                shutil.copyfile(entry, shadow / entry.name)
            elif entry.name not in _SHADOW_OWN and not entry.name.startswith("LOG.old"):
                (shadow / entry.name).symlink_to(entry)
    except OSError as exc:
        shutil.rmtree(shadow, ignore_errors=True)
        raise faults.classify(exc, path, "opening", 0) from exc
    return shadow


def _mib_up(n: int) -> int:
    """n bytes in MiB, rounded up (a need is never shown smaller than it is)."""
    return -(-n // (1 << 20))
