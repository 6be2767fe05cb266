"""The embedded client: the engine in this process, over a data directory.

Owns nothing but the delegation; the engine is imported lazily so that importing the SDK for
remote use does not load numba kernels or RocksDB.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from vecdb.client.base import Client
from vecdb.client.documents import LocalDocuments
from vecdb.types import CollectionInfo, Id, Record, SearchResult, SnapshotInfo


class LocalClient(LocalDocuments, Client):
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
        exist_ok: bool = False,
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
            exist_ok=exist_ok,
        )

    def collection_exists(self, name: str) -> bool:
        return self._db.collection_exists(name)

    def list_collections(self) -> list[CollectionInfo]:
        return self._db.list_collections()

    def get_collection(self, name: str) -> CollectionInfo:
        return self._db.get_collection(name)

    def drop_collection(self, name: str) -> None:
        self._db.drop_collection(name)

    def upsert(self, name: str, ids: Any, vectors: Any, payloads: Any = None) -> int:
        return self._db.upsert(name, ids, vectors, payloads)

    def get(self, name: str, ids: Any, *, with_vectors: bool = True) -> list[Record]:
        return self._db.get(name, ids, with_vectors=with_vectors)

    def delete(self, name: str, ids: Any = None, *, filter: dict[str, Any] | None = None) -> int:
        return self._db.delete(name, ids, filter=filter)

    def count(self, name: str, filter: dict[str, Any] | None = None) -> int:
        return self._db.count(name, filter)

    def scroll(
        self,
        name: str,
        *,
        filter: dict[str, Any] | None = None,
        limit: int = 1000,
        offset: Id | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> tuple[list[Record], Id | None]:
        return self._db.scroll(
            name,
            filter=filter,
            limit=limit,
            offset=offset,
            with_vectors=with_vectors,
            with_payload=with_payload,
        )

    def set_payload(self, name: str, ids: Any, payload: dict[str, Any]) -> int:
        return self._db.set_payload(name, ids, payload)

    def overwrite_payload(self, name: str, ids: Any, payload: dict[str, Any]) -> int:
        return self._db.overwrite_payload(name, ids, payload)

    def create_payload_index(self, name: str, key: str, type: str) -> None:
        self._db.create_payload_index(name, key, type)

    def drop_payload_index(self, name: str, key: str) -> None:
        self._db.drop_payload_index(name, key)

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
        with_vectors: bool = False,
    ) -> SearchResult:
        return self._db.search(
            name,
            queries,
            k,
            filter=filter,
            params=params,
            with_payload=with_payload,
            with_vectors=with_vectors,
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
