"""The tenant calls of `vecdb.RemoteClient` (create/update/list/get/drop_tenant, grant, revoke)
as a mixin: each builds its request with `vecdb.client.tenant_requests` (shared with the async
client, so both send the same bytes) and decodes the answer with `vecdb.rpc.convert`.
"""

from __future__ import annotations

from typing import Any

from vecdb.client import tenant_requests as tq
from vecdb.client.base import DEFAULT_TENANT_PAGE
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import TenantInfo


class RemoteTenantMethods:
    """Needs the host's `_call` (see `RemoteClient`)."""

    def _call(
        self, rpc: str, request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        raise NotImplementedError  # pragma: no cover - RemoteClient's own

    def create_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        req = tq.quota_request(pb.CreateTenantRequest, name, tenant, max_vectors=max_vectors,
                               max_bytes=max_bytes)  # fmt: skip
        return convert.tenant_from_proto(self._call("CreateTenant", req, idempotent=False).info)

    def update_tenant(
        self,
        name: str,
        tenant: str,
        *,
        max_vectors: int | None = None,
        max_bytes: int | None = None,
    ) -> TenantInfo:
        req = tq.quota_request(pb.UpdateTenantRequest, name, tenant, max_vectors=max_vectors,
                               max_bytes=max_bytes)  # fmt: skip
        return convert.tenant_from_proto(self._call("UpdateTenant", req, idempotent=True).info)

    def list_tenants(
        self, name: str, *, limit: int = DEFAULT_TENANT_PAGE, offset: str | None = None
    ) -> tuple[list[TenantInfo], str | None]:
        resp = self._call("ListTenants", tq.list_request(name, limit, offset), idempotent=True)
        return [convert.tenant_from_proto(t) for t in resp.tenants], resp.next_offset or None

    def get_tenant(self, name: str, tenant: str) -> TenantInfo:
        req = tq.tenant_request(pb.GetTenantRequest, name, tenant)
        return convert.tenant_from_proto(self._call("GetTenant", req, idempotent=True).info)

    def drop_tenant(self, name: str, tenant: str) -> None:
        req = tq.tenant_request(pb.DropTenantRequest, name, tenant)
        self._call("DropTenant", req, idempotent=False)

    def grant(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        req = tq.grant_request(name, ids, tenant, owner)
        return int(self._call("Grant", req, idempotent=True).changed)

    def revoke(self, name: str, ids: Any, *, tenant: str, owner: str | None = None) -> int:
        req = tq.grant_request(name, ids, tenant, owner)
        return int(self._call("Revoke", req, idempotent=True).changed)
