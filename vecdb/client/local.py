"""The embedded client: the engine in this process, over a data directory.

Owns nothing but the delegation; the engine is imported lazily so that importing the SDK for
remote use does not load numba kernels or RocksDB.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from vecdb.client.base import Client
from vecdb.types import CollectionInfo, Record, SearchResult, SnapshotInfo


class LocalClient(Client):
    """`vecdb.connect("./dir")` or `vecdb.connect(":memory:")`."""

    def __init__(self, path: str | Path) -> None:
        from vecdb.engine import Database

        self._db = Database(path)
        # A client never closed still closes its database when it is garbage-collected or
        # the interpreter exits: the lock is released and a ":memory:" temp dir deleted.
        self._finalizer = weakref.finalize(self, self._db.close)

    @property
    def path(self) -> Path:
        return self._db.path

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
    ) -> CollectionInfo:
        return self._db.create_collection(
            name,
            dim,
            metric,
            id_type=id_type,
            index=index,
            index_params=index_params,
            kind=kind,
            multi_tenant=multi_tenant,
        )

    def list_collections(self) -> list[CollectionInfo]:
        return self._db.list_collections()

    def get_collection(self, name: str) -> CollectionInfo:
        return self._db.get_collection(name)

    def drop_collection(self, name: str) -> None:
        self._db.drop_collection(name)

    def upsert(self, name: str, ids: Any, vectors: Any, payloads: Any = None) -> int:
        return self._db.upsert(name, ids, vectors, payloads)

    def get(self, name: str, ids: Any) -> list[Record]:
        return self._db.get(name, ids)

    def delete(self, name: str, ids: Any) -> int:
        return self._db.delete(name, ids)

    def count(self, name: str) -> int:
        return self._db.count(name)

    def optimize(self, name: str, wait: bool = True) -> None:
        self._db.optimize(name, wait=wait)

    def search(
        self,
        name: str,
        queries: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
    ) -> SearchResult:
        return self._db.search(
            name, queries, k, filter=filter, params=params, with_payload=with_payload
        )

    def stats(self, name: str | None = None) -> dict[str, Any]:
        return self._db.stats(name)

    def close(self) -> None:
        self._finalizer()  # closes the database once; later calls do nothing

    # -- snapshots ------------------------------------------------------------------------

    def create_snapshot(self, name: str) -> SnapshotInfo:
        return self._db.create_snapshot(name)

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        return self._db.list_snapshots(name)

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        self._db.restore_snapshot(name, snapshot)

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self._db.delete_snapshot(name, snapshot)
