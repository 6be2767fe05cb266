"""Online snapshots of one collection: create, list, restore, delete, and recovery on open.

A snapshot holds a collection at one sequence number S while writes and searches go on:
1. the collection's index jobs are paused (its `job_lock`: no drain, maintenance slice or
   checkpoint of it runs, and only the worker writes index files), and the index's files are
   copied as its last checkpoint left them (that checkpoint's sequence A <= S is inside);
2. still inside that pause, commits are held for an instant (the sequencer's lock) while
   RocksDB takes a checkpoint of the whole store (hard links) at exactly S; the op log then
   holds every entry after A, because only the paused worker truncates it;
3. the collection's rows (points, op log, and its meta rows: slot counter, payload index
   definitions and entries, `kv.collection_rows`) are exported from the checkpoint without a
   lock (`rows.bin`), then
   the manifest (sha256 of every file) and completion marker are written and the directory is
   renamed into place (`snapshot_files`).
Restoring replays the op log past A into the restored index, exactly as opening after a
crash does (`recovery`), so the restored collection holds the points of sequence S, with the
payload indexes it had then (entries written in the same batches as the points, so they are
in step at S; an index still being built at S is built after the switch).

Restore writes the snapshot under a fresh collection id that nothing names yet (a marker in
the meta column family records it), opens it, and then switches the collection's name to it
in one RocksDB batch that also deletes the old rows. A crash before the switch leaves the
old collection whole; the marker's rows and index directory are removed on the next open
(`recover`). Owns no file format (see `snapshot_files`) and no public names.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vecdb.engine import snapshot_files as sf
from vecdb.engine import validate as v
from vecdb.engine.collection import Collection
from vecdb.engine.core import CollectionConfig, CollectionCore
from vecdb.engine.recovery import collection_dir, open_collection
from vecdb.errors import DiskFull, InvalidArgument, NotFound, os_error
from vecdb.index.spann.killpoints import kill_point
from vecdb.storage import kv as kvmod
from vecdb.storage.disk import du
from vecdb.storage.kv import KV
from vecdb.storage.manifest import fsync_dir
from vecdb.types import SnapshotInfo

if TYPE_CHECKING:
    from vecdb.engine.database import Database

log = logging.getLogger("vecdb.engine")

RESTORE_MARKER = b"snapshot_restore:"  # meta key + cid: rows of a restore not yet switched in
CONFIG_PREFIX = b"collection:"  # the catalog's key prefix (same as `database.CONFIG_PREFIX`)
IMPORT_BATCH_BYTES = 8 * 2**20  # restored rows are committed in batches of about this size
ROW_OVERHEAD = 64  # estimated RocksDB bytes per point besides its vector (ids, slots, op log)
_naming = threading.Lock()  # two creates in the same microsecond get different names


def _export_rows(kv: KV, prefix: bytes, writer: sf.RowWriter) -> None:
    """Every row of the collection with key prefix `prefix`, re-keyable (see RowWriter): its
    points, op log, slot counter and payload index definitions and entries."""
    for cf, head, tail, value in kvmod.collection_rows(kv, prefix):
        writer.add(cf, head, tail, value)


def _delete_rows(batch: kvmod.Batch, prefix: bytes) -> None:
    kvmod.delete_collection_rows(batch, prefix)


def _check_space(where: Path, need: int, what: str, keep: int) -> None:
    """`DiskFull` (a ResourceExhausted) unless the disk of `where` has `need` bytes free
    beyond the `keep` bytes that must stay free for writes."""
    free = sf.free_bytes(where)
    if free < need + keep:
        raise DiskFull(
            f"not enough disk space for {what}: about {need / 2**20:.1f} MiB needed and "
            f"{keep / 2**20:.0f} MiB must stay free for writes, {free / 2**20:.1f} MiB free "
            f"under {where}",
            need=need,
        )


def _unique_name(root: Path, seq: int) -> str:
    with _naming:
        base = f"s{seq}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        name, n = base, 1
        while (root / name).exists() or (root / (name + sf.TMP)).exists():
            n += 1
            name = f"{base}-{n}"
        (root / (name + sf.TMP)).mkdir(parents=True)
        return name


# -- create ---------------------------------------------------------------------------------


def create(db: Database, name: str) -> SnapshotInfo:
    coll = db._get(name)
    core = coll.core
    with core.use():  # a drop or restore of this collection waits for us
        root = sf.collection_root(db.path, name)
        if not root.is_dir():  # the entries of new directories made durable, as the rename
            root.mkdir(parents=True, exist_ok=True)  # into `root` will be (`sf.publish`)
            fsync_dir(root.parent)
            fsync_dir(db.path)
        index_bytes = du(core.directory)[0]  # the worker may drop files meanwhile
        need = index_bytes + _rows_bytes(core) + kvmod.MEMTABLE_BUDGET
        keep = db.kv.reserve_bytes  # a snapshot must not take the room writes need
        _check_space(root, need, f"a snapshot of {name!r}", keep)
        snap = _unique_name(root, db.seq.value)
        tmp = root / (snap + sf.TMP)
        try:
            return _write(db, core, root, snap, tmp, keep)
        except OSError as exc:  # ENOSPC beside a concurrent writer, EIO: named, typed
            shutil.rmtree(tmp, ignore_errors=True)
            raise os_error(exc, f"writing snapshot {tmp}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _rows_bytes(core: CollectionCore) -> int:
    """About the bytes of the collection's rows in a snapshot: its vectors, or a document
    collection's tokens (and their weights), plus ROW_OVERHEAD a row; payloads are not
    counted (the writes themselves stop short of the reserve, `sf.RowWriter`)."""
    count, dim = core.points.count, core.cfg.dim
    if core.cfg.kind == "multivector":
        mv: Any = core.index.mv  # type: ignore[attr-defined]  # a document collection's
        tokens = int(mv.live_bytes())  # float32 bytes of its live tokens
        return tokens + tokens // dim + count * ROW_OVERHEAD
    return count * (4 * dim + ROW_OVERHEAD)


def _write(
    db: Database, core: CollectionCore, root: Path, snap: str, tmp: Path, keep: int
) -> SnapshotInfo:
    files: dict[str, dict[str, Any]] = {}
    (tmp / sf.INDEX).mkdir()
    checkpoint = tmp / "kv.checkpoint"
    with core.job_lock:
        # Pass 1: the index files of the last checkpoint (nothing writes them now)
        if core.directory.is_dir():
            for src in sorted(core.directory.iterdir()):
                if src.is_file() and not src.name.endswith(sf.TMP):
                    rel = f"{sf.INDEX}/{src.name}"
                    files[rel] = sf.copy_hashed(src, tmp / rel, keep)
        # Pass 2: RocksDB at one sequence (no commit runs while the lock is held)
        with db.seq.lock:
            seq = db.seq.value
            db.kv.checkpoint(checkpoint)
    # Pass 3: the collection's rows, from the checkpoint
    writer = sf.RowWriter(tmp / sf.ROWS, keep)
    store = KV(checkpoint, read_only=True)
    try:
        _export_rows(store, core.prefix, writer)
    finally:
        store.close()
        writer.close()
    shutil.rmtree(checkpoint)
    files[sf.ROWS] = sf.describe_file(tmp / sf.ROWS)
    kill_point("snapshot")
    # Pass 4: manifest, marker, rename
    cfg = asdict(core.cfg)
    cfg.pop("cid")
    body = {
        "snapshot_format": sf.SNAPSHOT_FORMAT,
        "name": snap,
        "collection": core.name,
        "seq": seq,
        "created": time.time(),
        "config": cfg,
        "rows": writer.count,
        "files": files,
        "bytes": sum(f["bytes"] for f in files.values()),
    }
    sf.publish(tmp, root / snap, body)
    log.info("snapshot created", extra={"collection": core.name, "snapshot": snap, "seq": seq})
    return sf.info_of(body)


# -- list / delete ----------------------------------------------------------------------------


def list_all(db: Database, name: str) -> list[SnapshotInfo]:
    db._check_open()
    v.check_name("collection", name)
    infos = sf.list_complete(db.path, name)
    if not infos and name not in db.collections:
        raise NotFound(f"collection {name!r} does not exist")
    return infos


def delete(db: Database, name: str, snapshot: str) -> None:
    db._check_open()
    v.check_name("collection", name)
    sf.check_snapshot_name(snapshot)
    with db._ddl:  # not while a restore reads it
        directory = sf.existing(db.path, name, snapshot)  # a damaged one too
        doomed = directory.with_name(f"{snapshot}.deleting{sf.TMP}")
        directory.rename(doomed)  # never listed from here on, even if we crash now
        fsync_dir(directory.parent)
        shutil.rmtree(doomed, ignore_errors=True)


# -- restore ----------------------------------------------------------------------------------


def restore(db: Database, name: str, snapshot: str) -> None:
    db._check_open()
    v.check_name("collection", name)
    sf.check_snapshot_name(snapshot)
    with db._ddl:
        directory, body = sf.find(db.path, name, snapshot)
        if body.get("collection") != name:
            raise InvalidArgument(
                f"snapshot {snapshot!r} holds collection {body.get('collection')!r}, not {name!r}"
            )
        need = int(body["bytes"]) + kvmod.MEMTABLE_BUDGET  # the rows' WAL until a flush
        _check_space(db.path, need, f"restoring snapshot {snapshot!r}", db.kv.reserve_bytes)
        sf.verify(directory, body)  # every file, before anything changes
        # Pass 1: a fresh collection id, marked so that a crash before the switch is undone
        raw = db.kv.get(kvmod.CF_META, b"next_cid")
        cid = 1 if raw is None else kvmod.read_u64(raw)
        prefix = kvmod.cid_prefix(cid)
        batch = db.kv.batch()
        batch.put(kvmod.CF_META, b"next_cid", kvmod.u64(cid + 1))
        batch.put(kvmod.CF_META, RESTORE_MARKER + prefix, name.encode())
        _commit_past(db, batch, int(body["seq"]))
        cfg = replace(CollectionConfig(**{**body["config"], "cid": cid}), name=name)
        target = collection_dir(db.path, cid)
        core: CollectionCore | None = None
        try:
            # Pass 2: rows and index files under the new id (nothing names it yet)
            _import_rows(db.kv, directory / sf.ROWS, prefix)
            try:
                target.mkdir(parents=True)
                for rel in body["files"]:
                    if rel.startswith(sf.INDEX + "/"):
                        # fsynced: the switch below makes RocksDB name these files, and a
                        # power cut must not leave it naming unwritten pages
                        sf.copy_hashed(directory / rel, target / rel[len(sf.INDEX) + 1 :])
                fsync_dir(target)
            except OSError as exc:
                raise os_error(exc, f"copying the index files of snapshot {snapshot!r}") from exc
            kill_point("restore")
            # Pass 3: open it (the op log past the index's checkpoint is replayed)
            core = open_collection(cfg, db.kv, db.seq, db.path, db.settings)
            # Pass 4: switch the name to it, delete the old rows, in one batch
            restored = Collection(core, db.worker)
            _switch(db, name, cfg, restored)
        except BaseException:
            if db.kv.get(kvmod.CF_META, RESTORE_MARKER + prefix) is None:
                raise  # the switch was committed: the restore happened
            if core is not None:
                core.index.close()
            undo = db.kv.batch()
            _delete_rows(undo, prefix)
            undo.delete(kvmod.CF_META, RESTORE_MARKER + prefix)
            db.kv.commit(undo)
            shutil.rmtree(target, ignore_errors=True)
            raise
        # Pass 5: payload indexes the snapshot caught mid-build are built now (they are
        # maintained by writes meanwhile, and used once ready)
        restored.finish_payload_indexes()
    log.info("snapshot restored", extra={"collection": name, "snapshot": snapshot})


def _commit_past(db: Database, batch: kvmod.Batch, snap_seq: int) -> None:
    """Commit `batch` at a sequence above both the database's and the snapshot's. A snapshot
    copied from another data directory may be ahead of this one: its index checkpoint and op
    log count in that directory's sequence, and an open replays only the entries above the
    checkpoint, so writes numbered below it would never reach the index after a reopen."""
    with db.seq.lock:
        seq = max(db.seq.value, snap_seq) + 1
        batch.put(kvmod.CF_META, b"seq", kvmod.u64(seq))
        db.kv.commit(batch)
        db.seq.value = seq


def _import_rows(kv: KV, rows: Path, prefix: bytes) -> None:
    batch, size = kv.batch(), 0
    for frame in sf.read_rows(rows):
        for cf, head, tail, value in frame:
            batch.put(cf, head + prefix + tail, value)
            size += len(head) + len(tail) + len(value) + len(prefix)
            if size >= IMPORT_BATCH_BYTES:
                kv.commit(batch)
                batch, size = kv.batch(), 0
    if batch.ops:
        kv.commit(batch)


def _switch(db: Database, name: str, cfg: CollectionConfig, new: Collection) -> None:
    """Make `new` the collection called `name`. Callers inside the old collection finish
    first; calls that reach it from now on get `Unavailable` until the switch is done."""
    old = db.collections.get(name)
    batch = db.kv.batch()
    batch.put(kvmod.CF_META, CONFIG_PREFIX + name.encode(), cfg.to_json())
    batch.delete(kvmod.CF_META, RESTORE_MARKER + kvmod.cid_prefix(cfg.cid))
    if old is None:
        db.seq.commit(batch)
        db.collections[name] = new
        db.worker.notify(new.core)
        return
    old.core.shut()
    with old.core.job_lock, old.core.write_lock:
        _delete_rows(batch, old.core.prefix)
        db.seq.commit(batch)
        db.collections[name] = new
        old.core.index.close()
    with old.core.status_cond:
        old.core.status_cond.notify_all()  # optimize(wait=True) callers: Unavailable
    shutil.rmtree(old.core.directory, ignore_errors=True)
    db.worker.notify(new.core)


# -- on open ----------------------------------------------------------------------------------


def recover(data_dir: Path, kv: KV) -> None:
    """Undo restores a crash interrupted before their switch, remove interrupted snapshots
    (their index directories are orphans the database removes) and name damaged ones."""
    for key, raw in list(kv.scan_prefix(kvmod.CF_META, RESTORE_MARKER)):
        prefix = key[len(RESTORE_MARKER) :]
        batch = kv.batch()
        _delete_rows(batch, prefix)
        batch.delete(kvmod.CF_META, key)
        kv.commit(batch)
        log.warning(
            "an interrupted snapshot restore was undone",
            extra={"collection": raw.decode(errors="replace")},
        )
    for path in sf.cleanup(data_dir):
        log.warning("an interrupted snapshot was removed", extra={"path": str(path)})
    for path, why in sf.damaged(data_dir):
        log.error(
            "a snapshot cannot be used; its files are kept (vecdb inspect --verify)",
            extra={"path": str(path), "error": why},
        )
