"""The database: a data directory holding any number of collections.

Owns the directory layout (manifest, process lock, RocksDB under `kv/`, index files under
`collections/`), the catalog of collections, the maintenance worker that does their index
work in the background, and the public methods the SDK and the server call. Collection
internals live in `core` and its phase modules; reopening in `recovery`.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecdb.allocator import tune_allocator
from vecdb.engine import snapshot as snapshots
from vecdb.engine import validate as v
from vecdb.engine.collection import Collection
from vecdb.engine.commit import Sequencer
from vecdb.engine.core import CollectionConfig, CollectionCore
from vecdb.engine.database_tenants import TenantMethods
from vecdb.engine.doc_database import DocumentsMixin, collection_index
from vecdb.engine.maintenance import MaintenanceWorker
from vecdb.engine.recovery import collection_dir, open_collection
from vecdb.engine.settings import EngineSettings
from vecdb.errors import (
    AlreadyExists,
    FormatError,
    InvalidArgument,
    NotFound,
    Unavailable,
    os_error,
)
from vecdb.index import registry
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV
from vecdb.storage.lock import DirLock
from vecdb.storage.manifest import read_manifest, remove_stale_tmp, write_manifest
from vecdb.types import CollectionInfo, CollectionKind, IdType, Metric, SnapshotInfo

DATA_FORMAT = 1  # layout version of a data directory
MANIFEST_NAME = "MANIFEST.json"
CONFIG_PREFIX = b"collection:"


class Database(TenantMethods, DocumentsMixin):
    """An open data directory. Thread-safe; one process at a time (see `DirLock`)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        sync: bool = True,
        settings: EngineSettings | Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = (
            settings if isinstance(settings, EngineSettings) else EngineSettings.parse(settings)
        )
        tune_allocator()
        self._temporary = path is None or str(path) == ":memory:"
        if self._temporary:
            path = tempfile.mkdtemp(prefix="vecdb-mem-")
            sync = False  # nothing survives close anyway
        assert path is not None
        self.path = Path(path).resolve()  # the data directory
        make_data_dir(self.path)
        self._lock = DirLock(self.path)  # keeps a second process out
        self._lock.acquire()
        try:
            self._open_manifest()
            self.kv = KV(self.path / "kv", sync=sync)  # ids, payloads, vectors, op log
            snapshots.recover(self.path, self.kv)  # interrupted snapshots and restores
        except BaseException:
            self._lock.release()
            raise
        raw_seq = self.kv.get(kvmod.CF_META, b"seq")
        self.seq = Sequencer(self.kv, 0 if raw_seq is None else kvmod.read_u64(raw_seq))
        self._ddl = threading.Lock()  # serialises create/drop
        self._closed = False
        self.collections: dict[str, Collection] = {}  # open collections by name
        self.worker = MaintenanceWorker(self._cores)
        try:
            for _, raw in self.kv.scan_prefix(kvmod.CF_META, CONFIG_PREFIX):
                cfg = CollectionConfig.from_json(raw)
                core = open_collection(cfg, self.kv, self.seq, self.path, self.settings)
                self.collections[cfg.name] = Collection(core, self.worker)
            for coll in self.collections.values():
                coll.finish_payload_indexes()  # builds a crash interrupted
            self._remove_orphan_dirs()
        except BaseException:
            for coll in self.collections.values():
                coll.close()
            self.kv.close()
            self._lock.release()
            raise
        self.worker.start()

    def _cores(self) -> list[CollectionCore]:
        return [c.core for c in list(self.collections.values())]

    def _open_manifest(self) -> None:
        """Check the data format before anything in the directory is touched: a directory a
        newer vecdb wrote is refused (FormatError) with its files as they were (its *.tmp
        files were deleted first)."""
        manifest = self.path / MANIFEST_NAME
        if manifest.exists():
            body = read_manifest(manifest)
            if body.get("data_format") != DATA_FORMAT:
                raise FormatError(
                    f"{manifest}: data format {body.get('data_format')} is not supported "
                    f"by this vecdb (supported: {DATA_FORMAT})"
                )
        remove_stale_tmp(self.path)
        if not manifest.exists():
            write_manifest(manifest, {"data_format": DATA_FORMAT, "created": time.time()})

    def _remove_orphan_dirs(self) -> None:
        """Index directories of dropped collections (drop crashed midway) are deleted."""
        root = self.path / "collections"
        if not root.is_dir():
            return
        live = {c.core.directory.name for c in self.collections.values()}
        for child in root.iterdir():
            if child.name not in live:
                shutil.rmtree(child, ignore_errors=True)

    # -- collections ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the database is closed")

    def _get(self, name: object) -> Collection:
        self._check_open()
        v.check_name("collection", name)
        coll = self.collections.get(str(name))
        if coll is None:
            raise NotFound(f"collection {name!r} does not exist")
        return coll

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        id_type: str = "int",
        index: str | None = None,
        index_params: dict[str, Any] | None = None,
        kind: str = "dense",
        multi_tenant: bool = False,
        exist_ok: bool = False,
    ) -> CollectionInfo:
        """Create a collection; with `exist_ok`, an existing one with the same settings is
        returned (different settings: `AlreadyExists` naming the first that differs)."""
        self._check_open()
        asked = collection_settings(name, dim, metric, id_type=id_type, index=index,
                                    index_params=index_params, kind=kind,
                                    multi_tenant=multi_tenant, exist_ok=exist_ok)  # fmt: skip
        dim, index, params = asked["dim"], asked["index"], asked["index_params"]
        metric_, id_type_ = Metric(asked["metric"]), IdType(asked["id_type"])
        kind_ = CollectionKind(asked["kind"])
        with self._ddl:
            if name in self.collections:
                have = self.collections[name].core.cfg
                for setting, value in asked.items():
                    if getattr(have, setting) != value:
                        raise AlreadyExists(
                            f"collection {name!r} already exists with {setting}="
                            f"{_shown(getattr(have, setting))} (asked {setting}={_shown(value)})"
                        )
                if not exist_ok:
                    raise AlreadyExists(f"collection {name!r} already exists")
                return self.collections[name].info()
            raw = self.kv.get(kvmod.CF_META, b"next_cid")
            cid = 1 if raw is None else kvmod.read_u64(raw)
            cfg = CollectionConfig(
                name=name,
                cid=cid,
                dim=dim,
                metric=metric_.value,
                id_type=id_type_.value,
                index=index,
                index_params=params,
                multi_tenant=multi_tenant,
                kind=kind_.value,
            )
            registry.check_params(index, cfg.index_params)  # before anything is written
            batch = self.kv.batch()
            batch.put(kvmod.CF_META, CONFIG_PREFIX + name.encode(), cfg.to_json())
            batch.put(kvmod.CF_META, b"next_cid", kvmod.u64(cid + 1))
            self.seq.commit(batch)
            core = open_collection(cfg, self.kv, self.seq, self.path, self.settings)
            coll = Collection(core, self.worker)
            self.collections[name] = coll
            return coll.info()

    def list_collections(self) -> list[CollectionInfo]:
        self._check_open()
        return [self.collections[n].info() for n in sorted(self.collections)]

    def get_collection(self, name: str) -> CollectionInfo:
        return self._get(name).info()

    def collection_exists(self, name: str) -> bool:
        self._check_open()
        v.check_name("collection", name)
        return name in self.collections

    def drop_collection(self, name: str) -> None:
        coll = self._get(name)
        core = coll.core
        with self._ddl:
            core.shut(dropped=True)  # new calls: NotFound; the worker abandons its job
            with core.job_lock, core.write_lock:
                batch = self.kv.batch()
                core.points.delete_all(batch)
                core.pindex.delete_all(batch)
                batch.delete(kvmod.CF_META, CONFIG_PREFIX + name.encode())
                self.seq.commit(batch)
                self.collections.pop(name, None)
                core.index.close()
            with core.status_cond:
                core.status_cond.notify_all()  # optimize(wait=True) callers: Unavailable
            shutil.rmtree(core.directory, ignore_errors=True)
            self.kv.compact_dropped(core.points.prefix)  # no table file left behind per drop
        alive = weakref.ref(core)
        del coll, core
        if alive() is not None:  # freed at once unless something made a reference cycle
            _release_cycles()

    # -- points ---------------------------------------------------------------------------

    def create_payload_index(self, name: str, key: str, type: str) -> None:
        """Index a payload field for filters ("int" | "float" | "str" | "bool")."""
        coll = self._get(name)
        with self._ddl:
            coll.create_payload_index(key, type)

    def drop_payload_index(self, name: str, key: str) -> None:
        coll = self._get(name)
        with self._ddl:
            coll.drop_payload_index(key)

    def optimize(self, name: str, wait: bool = True, timeout: float | None = None) -> None:
        """Ask the maintenance worker for every pending index job of `name` now (bulk build,
        buffer drain, maintenance, checkpoint); with `wait`, return once done."""
        v.check_flag("wait", wait)
        self._get(name).optimize(wait, timeout)

    def stats(self, name: str | None = None) -> dict[str, Any]:
        if name is not None:
            return self._get(name).stats()
        self._check_open()
        return {
            "path": str(self.path),
            "seq": self.seq.value,
            "engine": self.settings.spec(),
            "rocksdb_memory": self.kv.memory(),  # block cache and memtables, by family
            "collections": {n: c.stats() for n, c in sorted(self.collections.items())},
        }

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per collection, the cheap numbers of `Collection.summary` (for metrics)."""
        self._check_open()
        return {n: c.summary() for n, c in sorted(self.collections.items())}

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work (a running job is abandoned; its writes stay in the op log
        and are indexed after the next open), close the indexes and the store."""
        if self._closed:
            return
        with self._ddl:
            self._closed = True
            for coll in self.collections.values():
                coll.core.closing = True
            self.worker.stop()
            for coll in self.collections.values():
                with coll.core.status_cond:
                    coll.core.status_cond.notify_all()
                coll.close()
            self.kv.close()
            self._lock.release()
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- snapshots (vecdb.engine.snapshot) ------------------------------------------------

    def create_snapshot(self, name: str) -> SnapshotInfo:
        """A consistent snapshot of collection `name` at one sequence number, taken while
        writes and searches go on: background index work pauses while the index files are
        copied, and commits of every collection wait for the instant of a RocksDB checkpoint.
        `ResourceExhausted` when free disk space is below the snapshot's estimated size."""
        return snapshots.create(self, name)

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """The complete snapshots of collection `name`, oldest first (snapshots outlive a
        dropped collection; `NotFound` if there is neither the collection nor a snapshot)."""
        return snapshots.list_all(self, name)

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Replace collection `name` (or create it, if it was dropped) with the contents of
        its snapshot `snapshot`: every file's sha256 is checked first (`DataLoss` if one
        does not match; nothing changes), the snapshot is loaded beside the live collection,
        then the name is switched to it in one batch. During the switch the collection is
        briefly unavailable: calls already inside it finish first, calls that reach it
        meanwhile raise `Unavailable` (retryable); later calls see exactly the snapshot's
        points. Other collections are not affected."""
        snapshots.restore(self, name, snapshot)
        _release_cycles()  # the replaced collection's index files

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete snapshot `snapshot` of collection `name` (`NotFound` if absent)."""
        snapshots.delete(self, name, snapshot)


def _release_cycles() -> None:
    """Free a dropped or replaced collection now. Where its objects refer to each other only
    Python's cycle collector frees them, and on an idle server that may not run for hours:
    meanwhile its index files, deleted from disk, stay open and mapped, their space not
    freed (seen with `vecdb serve`: a dropped collection's posting and vector files). A full
    collection costs 10-300 ms by the heap's size, so a drop runs it only when the dropped
    collection outlived its last reference (a cycle)."""
    gc.collect()


def _shown(value: Any) -> str:
    """A collection setting in a message: JSON text for index_params, repr otherwise."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else repr(value)


__all__ = ["CONFIG_PREFIX", "MANIFEST_NAME", "Database", "collection_dir"]


def make_data_dir(path: Path) -> None:
    """Create the data directory `path` (and its parents) if missing. A file in its place, or
    in a parent's, is `InvalidArgument` naming that file (not the first file that could not
    be opened under it); a directory that cannot be made is the `StorageError` (or
    `DiskFull`) of its OSError."""
    missing = path
    while not missing.exists() and missing.parent != missing:
        missing = missing.parent
    if missing.exists() and not missing.is_dir():
        if missing == path:
            raise InvalidArgument(f"data directory {path} is a file, not a directory")
        raise InvalidArgument(
            f"cannot create data directory {path}: {missing} is a file, not a directory"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, f"cannot create data directory {path}") from None


def collection_settings(
    name: str,
    dim: int,
    metric: str,
    *,
    id_type: str = "int",
    index: str | None = None,
    index_params: dict[str, Any] | None = None,
    kind: str = "dense",
    multi_tenant: bool = False,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """The checked settings of a new collection (`create_collection`'s arguments, in its
    order of checks, with defaults filled in): dim, metric, id_type, index, index_params,
    kind and multi_tenant, as the collection records them. Shared with the cluster router,
    which checks a CreateCollection exactly as a node does before it reaches the catalog."""
    v.check_name("collection", name)
    v.check_flag("exist_ok", exist_ok)
    dim = v.check_dim(dim)
    metric_ = v.check_metric(metric)
    id_type_ = v.check_id_type(id_type)
    index = registry.DEFAULT_KIND.value if index is None else index
    registry.spec(index)
    params = v.check_index_params(index_params)
    kind_ = v.check_kind(kind)
    index = collection_index(kind_, index, metric_)  # documents: engine.doc_database
    v.check_flag("multi_tenant", multi_tenant)
    return {"dim": dim, "metric": metric_.value, "id_type": id_type_.value, "index": index,
            "index_params": params, "kind": kind_.value, "multi_tenant": multi_tenant}  # fmt: skip
