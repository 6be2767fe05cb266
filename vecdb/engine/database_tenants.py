"""The `Database` methods on points and tenants that take tenant arguments.

Owns the public signatures of point calls with their tenant keywords (upsert's `tenant` owner
and `grant_to`; get, scroll, count, delete, set/overwrite_payload's `tenant`; search's `tenant`
or `tenants`, and `with_stats`) and of the tenant calls (create/update/list/get/drop_tenant,
grant, revoke). A mixin
`Database` inherits; each method only finds the collection and delegates to `Collection`.
The rules are in `tenant_access` (writes), `tenant_reads` (reads) and `tenant_ops`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

from vecdb.engine import query_stats
from vecdb.engine import validate as v
from vecdb.engine.tenant_rules import DEFAULT_LIST_LIMIT
from vecdb.types import Id, Record, SearchResult, TenantInfo

if TYPE_CHECKING:
    from vecdb.engine.collection import Collection


class TenantMethods:
    """Point and tenant calls of `Database` (see the module docstring)."""

    def _get(self, name: object) -> Collection:  # pragma: no cover - Database's own
        raise NotImplementedError

    # -- points ---------------------------------------------------------------------------

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
        """Insert or replace points; in a multi-tenant collection `tenant` (required) owns
        them and `grant_to` names more tenants that may see them."""
        return self._get(name).upsert(ids, vectors, payloads, tenant, grant_to)

    def get(
        self, name: str, ids: Any, *, with_vectors: bool = True, tenant: str | None = None
    ) -> list[Record]:
        return self._get(name).get(ids, with_vectors, tenant)

    def delete(
        self,
        name: str,
        ids: Any = None,
        *,
        filter: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> int:
        """Delete the points with these ids, or those the filter selects (exactly one of
        the two); returns how many were deleted. With a tenant: only points it owns."""
        return self._get(name).delete(ids, filter, tenant)

    def count(
        self, name: str, filter: dict[str, Any] | None = None, *, tenant: str | None = None
    ) -> int:
        return self._get(name).count_matching(filter, tenant)

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
        """A page of points in ascending id order (see `reader.scroll`)."""
        return self._get(name).scroll(filter, limit, offset, with_vectors, with_payload, tenant)

    def set_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        """Merge `payload`'s keys into each existing point's payload; missing ids are
        skipped; returns how many points were updated."""
        return self._get(name).set_payload(ids, payload, merge=True, tenant=tenant)

    def overwrite_payload(
        self, name: str, ids: Any, payload: dict[str, Any], *, tenant: str | None = None
    ) -> int:
        """Replace each existing point's payload with `payload`."""
        return self._get(name).set_payload(ids, payload, merge=False, tenant=tenant)

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
    ) -> SearchResult:
        """Top-k of each query; `with_stats` adds what the call read (`query_stats`)."""
        v.check_flag("with_stats", with_stats)
        coll = self._get(name)
        # the usual call (no stats asked) runs without a collector
        with query_stats.collect() if with_stats else contextlib.nullcontext() as sink:
            res = coll.search(
                queries,
                k,
                filter=filter,
                params=params,
                with_payload=with_payload,
                with_vectors=with_vectors,
                tenant=tenant,
                tenants=tenants,
            )
        if sink is None:
            return res
        return dataclasses.replace(res, stats=query_stats.as_dict(sink))

    # -- tenants --------------------------------------------------------------------------

    def create_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        """Register a tenant of a multi-tenant collection (`AlreadyExists` if it exists or
        is still being dropped), with its stored quotas (None or 0: unlimited; see
        `tenant_quota`)."""
        return self._get(name).create_tenant(tenant, max_vectors, max_bytes)

    def update_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        """Change a tenant's stored quotas (None: unchanged, 0: unlimited); an admin's call."""
        return self._get(name).update_tenant(tenant, max_vectors, max_bytes)

    def get_tenant(self, name: str, tenant: str) -> TenantInfo:
        return self._get(name).get_tenant(tenant)

    def list_tenants(
        self, name: str, *, limit: int = DEFAULT_LIST_LIMIT, offset: str | None = None
    ) -> tuple[list[TenantInfo], str | None]:
        """A page of tenants in name order from `offset` (inclusive) and the next offset."""
        return self._get(name).list_tenants(limit, offset)

    def drop_tenant(self, name: str, tenant: str) -> None:
        """Drop a tenant at once (its cleanup runs in the background, see `tenant_jobs`)."""
        self._get(name).drop_tenant(tenant)

    def grant(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        """Let `tenant` see these points; `owner` (None: an admin) must own them. Returns
        how many points changed."""
        return self._get(name).change_access(ids, tenant, owner, on=True)

    def revoke(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        """Take `tenant`'s access to these points away (not its own points')."""
        return self._get(name).change_access(ids, tenant, owner, on=False)
