"""The tenant RPCs of `vecdb.v1.VectorDB`: CreateTenant, GetTenant, ListTenants, DropTenant,
Grant and Revoke, as a mixin the servicer inherits.

Like the rest of the servicer: decode with `vecdb.rpc.convert`, call the `Database` method of
the same name, encode the answer; validation is the engine's, errors and auth are the
interceptors'. The tenant scope of the point RPCs (the `tenant` fields of Upsert, Get, ...)
is passed on by the servicer itself. In Grant and Revoke `tenant` is the grantee and
`owner` the caller (a tenant-scoped key's tenant belongs in `owner`).
"""

from __future__ import annotations

from typing import Any

import grpc

from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb


class TenantRpcs:
    """Tenant RPCs; the servicer provides `_db` (the engine's `Database`)."""

    _db: Any

    def CreateTenant(
        self, req: pb.CreateTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateTenantResponse:
        info = self._db.create_tenant(req.collection, req.tenant)
        return pb.CreateTenantResponse(info=convert.tenant_to_proto(info))

    def GetTenant(
        self, req: pb.GetTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.GetTenantResponse:
        info = self._db.get_tenant(req.collection, req.tenant)
        return pb.GetTenantResponse(info=convert.tenant_to_proto(info))

    def ListTenants(
        self, req: pb.ListTenantsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListTenantsResponse:
        kwargs: dict[str, Any] = {}
        if req.HasField("limit"):
            kwargs["limit"] = req.limit
        if req.offset:
            kwargs["offset"] = req.offset
        infos, nxt = self._db.list_tenants(req.collection, **kwargs)
        return pb.ListTenantsResponse(
            tenants=[convert.tenant_to_proto(i) for i in infos], next_offset=nxt or ""
        )

    def DropTenant(
        self, req: pb.DropTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.DropTenantResponse:
        self._db.drop_tenant(req.collection, req.tenant)
        return pb.DropTenantResponse()

    def _access(self, req: pb.GrantRequest, method: str) -> pb.GrantResponse:
        ids = convert.ids_from_proto(req.ids)
        owner = req.owner or None
        n = getattr(self._db, method)(req.collection, ids, tenant=req.tenant, owner=owner)
        return pb.GrantResponse(changed=n)

    def Grant(self, req: pb.GrantRequest, ctx: grpc.ServicerContext) -> pb.GrantResponse:
        return self._access(req, "grant")

    def Revoke(self, req: pb.GrantRequest, ctx: grpc.ServicerContext) -> pb.GrantResponse:
        return self._access(req, "revoke")
