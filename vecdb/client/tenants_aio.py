"""The tenant calls of `vecdb.AsyncClient` (create/list/get/drop_tenant, grant, revoke), as a
mixin: embedded targets run the embedded client's method in a worker thread, remote ones send
the request that `vecdb.client.tenant_requests` builds (the sync client's, so both agree).
"""

from __future__ import annotations

from typing import Any

from vecdb.client import tenant_requests as tq
from vecdb.client.base import DEFAULT_TENANT_PAGE
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import TenantInfo


class AsyncTenantMethods:
    """Needs the host's `_local`, `_local_call` and `_call` (see `AsyncClient`)."""

    _local: Any

    async def _local_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # pragma: no cover - AsyncClient's own

    async def _call(
        self, rpc: str, request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        raise NotImplementedError  # pragma: no cover - AsyncClient's own

    async def create_tenant(self, name: str, tenant: str) -> TenantInfo:
        """See `vecdb.Client.create_tenant`."""
        if self._local is not None:
            return await self._local_call("create_tenant", name, tenant)  # type: ignore[no-any-return]
        req = tq.tenant_request(pb.CreateTenantRequest, name, tenant)
        return convert.tenant_from_proto(
            (await self._call("CreateTenant", req, idempotent=False)).info
        )

    async def list_tenants(
        self, name: str, *, limit: int = DEFAULT_TENANT_PAGE, offset: str | None = None
    ) -> tuple[list[TenantInfo], str | None]:
        """See `vecdb.Client.list_tenants`."""
        if self._local is not None:
            return await self._local_call("list_tenants", name, limit=limit, offset=offset)  # type: ignore[no-any-return]
        req = tq.list_request(name, limit, offset)
        resp = await self._call("ListTenants", req, idempotent=True)
        return [convert.tenant_from_proto(t) for t in resp.tenants], resp.next_offset or None

    async def get_tenant(self, name: str, tenant: str) -> TenantInfo:
        """See `vecdb.Client.get_tenant`."""
        if self._local is not None:
            return await self._local_call("get_tenant", name, tenant)  # type: ignore[no-any-return]
        req = tq.tenant_request(pb.GetTenantRequest, name, tenant)
        return convert.tenant_from_proto((await self._call("GetTenant", req, idempotent=True)).info)

    async def drop_tenant(self, name: str, tenant: str) -> None:
        """See `vecdb.Client.drop_tenant`."""
        if self._local is not None:
            await self._local_call("drop_tenant", name, tenant)
            return
        req = tq.tenant_request(pb.DropTenantRequest, name, tenant)
        await self._call("DropTenant", req, idempotent=False)

    async def grant(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        """See `vecdb.Client.grant`."""
        return await self._access("grant", "Grant", name, ids, tenant, owner)

    async def revoke(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        """See `vecdb.Client.revoke`."""
        return await self._access("revoke", "Revoke", name, ids, tenant, owner)

    async def _access(
        self, method: str, rpc: str, name: str, ids: Any, tenant: str, owner: str | None
    ) -> int:
        if self._local is not None:
            return await self._local_call(method, name, ids, tenant=tenant, owner=owner)  # type: ignore[no-any-return]
        req = tq.grant_request(name, ids, tenant, owner)
        return int((await self._call(rpc, req, idempotent=True)).changed)
