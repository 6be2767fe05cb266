"""The embedded client: the engine in this process, over a data directory.

Owns nothing but the delegation; the engine is imported lazily so that importing the SDK for
remote use does not load numba kernels or RocksDB.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecdb.client.base import DEFAULT_TENANT_PAGE, Client
from vecdb.client.documents import LocalDocuments
from vecdb.types import (
    CollectionInfo,
    Count,
    Id,
    Record,
    SearchResult,
    SnapshotInfo,
    TenantInfo,
)


class LocalClient(LocalDocuments, Client):
    """`vecdb.connect("./dir")` or `vecdb.connect(":memory:")`."""

    def __init__(self, path: str | Path, *, engine: Mapping[str, Any] | None = None) -> None:
        from vecdb.engine import Database

        self._db = Database(path, settings=engine)
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

    def upsert(
        self,
        name: str,
        ids: Any,
        vectors: Any,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        return self._db.upsert(name, ids, vectors, payloads, tenant=tenant, grant_to=grant_to)

    def get(
        self, name: str, ids: Any, *, with_vectors: bool = True, tenant: str | None = None
    ) -> list[Record]:
        return self._db.get(name, ids, with_vectors=with_vectors, tenant=tenant)

    def delete(
        self,
        name: str,
        ids: Any = None,
        *,
        filter: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> int:
        return self._db.delete(name, ids, filter=filter, tenant=tenant)

    def count(
        self,
        name: str,
        filter: dict[str, Any] | None = None,
        *,
        tenant: str | None = None,
        allow_partial: bool = False,
    ) -> Count:
        del allow_partial  # one node has no shard to miss: never partial
        return Count(self._db.count(name, filter, tenant=tenant))

    def scroll(
        self,
        name: str,
        *,
        filter: dict[str, Any] | None = None,
        limit: int = 1000,
        offset: Id | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> tuple[list[Record], Id | None]:
        return self._db.scroll(
            name,
            filter=filter,
            limit=limit,
            offset=offset,
            with_vectors=with_vectors,
            with_payload=with_payload,
            tenant=tenant,
        )

    def set_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        return self._db.set_payload(name, ids, payload, tenant=tenant)

    def overwrite_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        return self._db.overwrite_payload(name, ids, payload, tenant=tenant)

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
        tenant: str | None = None,
        tenants: list[str] | None = None,
        with_stats: bool = False,
        allow_partial: bool = False,
    ) -> SearchResult:
        del allow_partial  # one node has no shard to miss: never partial
        return self._db.search(
            name,
            queries,
            k,
            filter=filter,
            params=params,
            with_payload=with_payload,
            with_vectors=with_vectors,
            tenant=tenant,
            tenants=tenants,
            with_stats=with_stats,
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

    # -- tenants --------------------------------------------------------------------------

    def create_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        return self._db.create_tenant(name, tenant, max_vectors=max_vectors, max_bytes=max_bytes)

    def update_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        return self._db.update_tenant(name, tenant, max_vectors=max_vectors, max_bytes=max_bytes)

    def list_tenants(
        self, name: str, *, limit: int = DEFAULT_TENANT_PAGE, offset: str | None = None
    ) -> tuple[list[TenantInfo], str | None]:
        return self._db.list_tenants(name, limit=limit, offset=offset)

    def get_tenant(self, name: str, tenant: str) -> TenantInfo:
        return self._db.get_tenant(name, tenant)

    def drop_tenant(self, name: str, tenant: str) -> None:
        self._db.drop_tenant(name, tenant)

    def grant(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        return self._db.grant(name, ids, tenant=tenant, owner=owner)

    def revoke(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        return self._db.revoke(name, ids, tenant=tenant, owner=owner)
