"""A shard follows the catalog: creates the catalog's collections, applies its drops.

Owns `ShardSync` and the file `cluster_sync.json` in the shard's data directory (magic,
format version, the shard index the directory belongs to, the last catalog epoch whose
drops were applied, and the incarnation - the engine's collection id - of each collection
known at that epoch). On `start()` and on every catalog change it (1) drops each local
collection tombstoned in the catalog with an epoch newer than the applied one, if it is
still the incarnation known before the drop, (2) records the new applied epoch and
incarnations, (3) creates each catalog collection missing here (`exist_ok=True`); a state
whose collections and tombstones equal the last ones applied without error (a tenant placed)
costs nothing. A catalog older than the applied epoch (etcd restored or replaced) is followed
from its own epoch. A shard that was down catches up on its next start the same way. The incarnation check keeps a
collection a router dropped and re-created on the shard directly (a quick drop + re-create)
from being dropped by the older tombstone when this sync lags behind; a tombstoned collection
it never saw is dropped unless the catalog lists that name again. It never drops a collection
that is not tombstoned; a catalog entry it cannot apply (bad spec, different settings here) is logged
and skipped, never fatal. Start it before the shard serves, so a returning shard never
serves a collection dropped meanwhile. Must not touch points, tenants or any collection's
contents.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from vecdb.cluster.catalog_base import Catalog
from vecdb.cluster.catalog_model import SPEC_KEYS, CatalogState
from vecdb.engine.database import Database
from vecdb.errors import FailedPrecondition, FormatError, InvalidArgument, VecdbError, echo
from vecdb.storage.manifest import write_bytes_atomic

log = logging.getLogger("vecdb.cluster.shard_sync")

SYNC_FILE = "cluster_sync.json"
SYNC_MAGIC = "vecdb-cluster-sync"
SYNC_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_SHARD_INDEX = 1_023  # as many shards as a catalog may name (catalog_model.MAX_SHARDS)
STOP_TIMEOUT_S = 10.0  # stop() waits this long for an apply in progress


def check_shard_index(index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_SHARD_INDEX:
        raise InvalidArgument(
            f"shard_index {echo(index)} is invalid (expected 0-{MAX_SHARD_INDEX})",
            field="shard_index",
        )
    return index


def read_sync_file(path: Path) -> dict[str, Any] | None:
    """The sync record, or None if the directory never followed a catalog."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: unreadable ({e})") from e
    if not isinstance(doc, dict) or doc.get("magic") != SYNC_MAGIC:
        raise FormatError(f"{path}: bad magic, expected {SYNC_MAGIC!r}")
    version = doc.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"{path}: format version {version} is not supported (supported: "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    if not isinstance(doc.get("shard_index"), int) or not isinstance(doc.get("applied_epoch"), int):
        raise FormatError(f"{path}: shard_index and applied_epoch must be integers")
    known = doc.setdefault("incarnations", {})
    if not isinstance(known, dict) or not all(isinstance(c, int) for c in known.values()):
        raise FormatError(f"{path}: incarnations must map names to integers")
    return doc


class ShardSync:
    """Keeps `db` (the data directory of shard `shard_index`) in step with `catalog`."""

    def __init__(self, db: Database, catalog: Catalog, shard_index: int) -> None:
        self.db = db  # this shard's database
        self.catalog = catalog  # the cluster catalog it follows
        self.shard_index = check_shard_index(shard_index)
        self.path = Path(db.path) / SYNC_FILE  # the applied epoch, published by rename
        self.applied_epoch = 0  # drops tombstoned at or before this epoch are done
        self.incarnations: dict[str, int] = {}  # name -> collection id known at that epoch
        self._claimed = False  # the sync record was read (or written) by this process
        self._done: tuple[Any, Any] | None = None  # (collections, dropped) applied cleanly
        self._apply_lock = threading.Lock()  # one apply at a time
        self._latest: CatalogState | None = None  # newest state not yet applied
        self._latest_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancel_watch: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Check the directory belongs to this shard, apply the catalog's current state,
        then follow its changes in a thread. A shard index outside the catalog's shard map
        is refused (the routers would never send it a call)."""
        state = self.catalog.state()
        if state.shards and self.shard_index >= len(state.shards):
            raise FailedPrecondition(
                f"this process was started as shard {self.shard_index}, but the catalog's "
                f"shard map has {len(state.shards)} shards (0-{len(state.shards) - 1}): fix "
                "shard_index (or the StatefulSet's replicas)",
                field="shard_index",
                reason="WRONG_SHARD",
            )
        self.apply(state)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="vecdb-shard-sync", daemon=True)
        self._thread.start()
        self._cancel_watch = self.catalog.watch(self._on_state)

    def _claim(self) -> None:
        """Read the sync record (or write the first one, claiming the directory for this
        shard index); FailedPrecondition if the directory is another shard's."""
        if self._claimed:
            return
        record = read_sync_file(self.path)
        if record is None:
            self._save()
        elif record["shard_index"] != self.shard_index:
            raise FailedPrecondition(
                f"{self.db.path} holds shard {record['shard_index']}'s data; this process "
                f"was started as shard {self.shard_index} (fix shard_index or --data)",
                field="shard_index",
                reason="WRONG_SHARD",
            )
        else:
            self.applied_epoch = record["applied_epoch"]
            self.incarnations = dict(record["incarnations"])
        self._claimed = True

    def stop(self) -> None:
        if self._cancel_watch is not None:
            self._cancel_watch()
            self._cancel_watch = None
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None

    def _on_state(self, state: CatalogState) -> None:
        with self._latest_lock:  # called on the catalog's thread: only hand over
            self._latest = state
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._latest_lock:
                state, self._latest = self._latest, None
            if state is None or self._stopping.is_set():
                continue
            try:
                self.apply(state)
            except VecdbError as e:  # e.g. the database closed under us, disk full
                log.error("shard %d: catalog epoch %d not applied: %s", self.shard_index,
                          state.epoch, e.message)  # fmt: skip

    def apply(self, state: CatalogState) -> list[str]:
        """Bring the database in line with `state`; returns what changed ("drop x",
        "create y")."""
        with self._apply_lock:
            self._claim()
            if state.epoch == 0 and not state.collections:
                return []  # an empty cache (etcd not read yet): nothing to learn from it
            if (state.collections, state.dropped) == self._done:
                return []  # e.g. a tenant placed: no new tombstone, nothing to create
            if state.epoch < self.applied_epoch:
                log.warning("shard %d: catalog epoch %d is older than the applied %d (etcd "
                            "restored or replaced, or a new prefix?): following it from there",
                            self.shard_index, state.epoch, self.applied_epoch)  # fmt: skip
                # Its tombstones are all at or before its epoch (none dropped now); the drops
                # made after it, at epochs the old catalog had used, must not be skipped.
                self.applied_epoch = state.epoch
            local = self._local()
            changes: list[str] = []
            # Pass 1: drops tombstoned since the last applied epoch, of the incarnation known
            # before the drop (another one was made after it: a router re-created it). One
            # never seen here is stale unless the catalog lists the name again.
            for name, epoch in sorted(state.dropped.items()):
                if epoch <= self.applied_epoch or name not in local:
                    continue
                known = self.incarnations.get(name)
                stale = name not in state.collections if known is None else known == local[name]
                if not stale:
                    log.info("shard %d: collection %r kept: made after its drop at catalog "
                             "epoch %d", self.shard_index, name, epoch)  # fmt: skip
                    continue
                self.db.drop_collection(name)
                del local[name]
                changes.append(f"drop {name}")
                log.info("shard %d: dropped collection %r (catalog epoch %d)",
                         self.shard_index, name, epoch)  # fmt: skip
            # Pass 2: record the epoch and the incarnations before creating, so a crash right
            # after a create can never drop the new collection again on restart. A collection
            # with a newer tombstone already known keeps its old record (it may be the
            # re-created one; the next apply judges it).
            self.applied_epoch = max(self.applied_epoch, state.epoch)
            newest = self.catalog.state().dropped
            record = {}
            for name, cid in local.items():
                if newest.get(name, 0) <= self.applied_epoch:
                    record[name] = cid
                elif name in self.incarnations:
                    record[name] = self.incarnations[name]
            self.incarnations = record
            self._save()
            # Pass 3: create what the catalog has and this shard lacks.
            # Present ones are checked too: different settings here are logged, not changed.
            created, clean = False, True
            for name, entry in sorted(state.collections.items()):
                if self.catalog.state().dropped.get(name, 0) > state.epoch:
                    continue  # dropped since this state: do not bring it back
                try:
                    self.db.create_collection(name, **_arguments(entry.spec), exist_ok=True)
                except (VecdbError, TypeError) as e:
                    log.error("shard %d: catalog collection %r not applied: %s", self.shard_index,
                              name, getattr(e, "message", e))  # fmt: skip
                    clean = False  # tried again with the next state
                    continue
                if name in local:
                    continue
                made = self._local().get(name)
                if made is not None and name not in self.incarnations:
                    self.incarnations[name] = made
                    created = True
                changes.append(f"create {name}")
                log.info("shard %d: created collection %r (catalog epoch %d)",
                         self.shard_index, name, state.epoch)  # fmt: skip
            if created:
                self._save()
            self._done = (state.collections, state.dropped) if clean else None
            return changes

    def _local(self) -> dict[str, int]:
        """This shard's collections and their incarnations (the engine's collection ids)."""
        return {name: coll.core.cfg.cid for name, coll in list(self.db.collections.items())}

    def _save(self) -> None:
        doc = {
            "magic": SYNC_MAGIC,
            "format_version": SYNC_VERSION,
            "shard_index": self.shard_index,
            "applied_epoch": self.applied_epoch,
            "incarnations": self.incarnations,
        }
        write_bytes_atomic(self.path, json.dumps(doc, sort_keys=True, indent=1).encode())


def _arguments(spec: object) -> dict[str, Any]:
    """create_collection's keyword arguments from a catalog spec (unknown keys: TypeError)."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec is {type(spec).__name__}, not an object")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise TypeError(f"spec has unknown keys {unknown}")
    return dict(spec)
