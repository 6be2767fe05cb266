"""The router's tenant RPCs: placing tenants on shards and following grants across shards.

A new tenant gets a home shard from the catalog (`place_tenant`: the shard with the fewest
tenants of that collection) and is created there; its owned points live there. A grant of
points held on another shard makes the grantee present on that shard too (created there,
and the shard added to its placement), so the grantee's calls reach every shard holding
what it may see and no other. GetTenant adds up the tenant's numbers over its shards;
ListTenants merges the shards' pages by name; DropTenant drops it on every shard of its
placement, then from the catalog, only if every shard dropped it (or had not got it): a
shard that fails or does not answer fails the call naming the shards, and the catalog keeps
the tenant for a retry. A tenant the catalog does not know is sent to shard 0, which answers
as a node would (NOT_FOUND naming it).
"""

from __future__ import annotations

from typing import Any

import grpc

from vecdb.cluster.router_base import RouterBase
from vecdb.engine import validate as v
from vecdb.errors import VecdbError
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.auth_scope import DEFAULT_TENANT_PAGE

SUMMED = ("vectors", "owned", "bytes", "nodes")  # TenantInfo fields that add up over shards


def _sum_infos(infos: list[pb.TenantInfo]) -> pb.TenantInfo:
    """The first (the home's) info with the counters of all of them added up."""
    out = pb.TenantInfo()
    out.CopyFrom(infos[0])
    for name in SUMMED:
        setattr(out, name, sum(getattr(i, name) for i in infos))
    return out


class TenantRpcs(RouterBase):
    """CreateTenant, GetTenant, ListTenants, DropTenant, UpdateTenant, Grant and Revoke."""

    def _placed(self, collection: str, tenant: str) -> list[int] | None:
        """The tenant's shards, home first, or None when the catalog does not know it."""
        placement = self._state().tenants.get((collection, tenant))
        if placement is None:
            return None
        others = sorted(s for s in placement.shards if s != placement.home)
        return [placement.home] + others

    def CreateTenant(
        self, req: pb.CreateTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateTenantResponse:
        entry = self._entry(req.collection)
        if entry is None or not self._multi_tenant(entry) or not req.tenant:
            return self._one("CreateTenant", req, ctx)  # type: ignore[no-any-return]
        placed = self._placed(req.collection, req.tenant)
        if placed is None:
            try:  # a name a node refuses must not reach the catalog
                v.check_name("tenant", req.tenant)
            except VecdbError:
                return self._one("CreateTenant", req, ctx)  # type: ignore[no-any-return]
            home = self._catalog.place_tenant(req.collection, req.tenant).home
        else:
            home = placed[0]
        return self._one("CreateTenant", req, ctx, home)  # type: ignore[no-any-return]

    def GetTenant(
        self, req: pb.GetTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.GetTenantResponse:
        placed = self._placed(req.collection, req.tenant)
        if placed is None or len(placed) == 1:
            shard = 0 if placed is None else placed[0]
            return self._one("GetTenant", req, ctx, shard)  # type: ignore[no-any-return]
        out = self._each("GetTenant", req, ctx, placed)
        infos = [out.answers[s].info for s in placed]
        return pb.GetTenantResponse(info=_sum_infos(infos))

    def ListTenants(
        self, req: pb.ListTenantsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListTenantsResponse:
        if len(self._all()) == 1:
            return self._one("ListTenants", req, ctx)  # type: ignore[no-any-return]
        out = self._each("ListTenants", req, ctx)
        st = self._state()
        by_name: dict[str, list[tuple[int, pb.TenantInfo]]] = {}
        for shard in sorted(out.answers):
            for info in out.answers[shard].tenants:
                by_name.setdefault(info.name, []).append((shard, info))
        limit = int(req.limit) if req.HasField("limit") else DEFAULT_TENANT_PAGE
        names = sorted(by_name)
        page = names[:limit]
        resp = pb.ListTenantsResponse()
        for name in page:
            placement = st.tenants.get((req.collection, name))
            home = placement.home if placement is not None else by_name[name][0][0]
            infos = sorted(by_name[name], key=lambda si: si[0] != home)
            resp.tenants.append(_sum_infos([i for _, i in infos]))
        nexts = [a.next_offset for a in out.answers.values() if a.next_offset]
        rest = names[limit : limit + 1] + nexts
        if rest:
            resp.next_offset = min(rest)
        return resp

    def DropTenant(
        self, req: pb.DropTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.DropTenantResponse:
        placed = self._placed(req.collection, req.tenant)
        if placed is None:
            return self._one("DropTenant", req, ctx)  # type: ignore[no-any-return]
        out = self._shards.fan_out("DropTenant", dict.fromkeys(placed, req), ctx, check=False)
        # NOT_FOUND: already gone there (e.g. a retry). Anything else keeps the catalog entry,
        # so the tenant and its grants are never left on a shard the catalog forgot.
        failed = {s: e for s, e in out.errors.items() if e.code != "NOT_FOUND"}
        if failed or out.missing:
            raise self._partial_write("DropTenant", out.answers, failed, out.missing)
        self._catalog.drop_tenant(req.collection, req.tenant)
        if not out.answers:  # no shard had it: a node's NOT_FOUND
            raise out.errors[placed[0]]
        return pb.DropTenantResponse()

    def UpdateTenant(
        self, req: pb.UpdateTenantRequest, ctx: grpc.ServicerContext
    ) -> pb.UpdateTenantResponse:
        placed = self._placed(req.collection, req.tenant) or [0]
        out = self._each("UpdateTenant", req, ctx, placed)
        # the counts over every shard, as GetTenant gives them (not the home's part alone)
        return pb.UpdateTenantResponse(info=_sum_infos([out.answers[s].info for s in placed]))

    # -- grants ----------------------------------------------------------------------------

    def _holders(
        self, req: pb.GrantRequest, ctx: grpc.ServicerContext | None
    ) -> dict[int, pb.GrantRequest]:
        """Which shards hold the points of a grant: the owner's home when the request names
        one, else every shard that has any of the ids (asked without vectors)."""
        if req.owner:
            home = self._home(req.collection, req.owner)
            return {0 if home is None else home: req}
        probe = pb.GetRequest(collection=req.collection, ids=req.ids, with_vectors=False)
        out = self._each("Get", probe, ctx)
        parts: dict[int, pb.GrantRequest] = {}
        for shard in sorted(out.answers):
            held = out.answers[shard].points.ids
            if held.WhichOneof("kind") is not None and convert.ids_from_proto(held):
                part = pb.GrantRequest()
                part.CopyFrom(req)
                part.ids.CopyFrom(held)
                parts[shard] = part
        return parts or {self._home(req.collection, req.tenant) or 0: req}

    def _grant_call(self, method: str, req: pb.GrantRequest, ctx: grpc.ServicerContext) -> Any:
        entry = self._entry(req.collection)
        if entry is None or not self._multi_tenant(entry) or len(self._all()) == 1:
            return self._one(method, req, ctx)
        parts = self._holders(req, ctx)
        if method == "Grant":
            for shard in parts:
                self._ensure_tenant_on(req.collection, req.tenant, shard, ctx)
            self._check_vector_quotas(req.collection, {s: p.ids for s, p in parts.items()},
                                      {req.tenant: "tenant"}, ctx, held_by=req.owner)  # fmt: skip
        out = self._shards.fan_out(method, parts, ctx, check=False)
        if out.errors or out.missing:
            raise self._partial_write(method, out.answers, out.errors, out.missing)
        return pb.GrantResponse(changed=sum(int(a.changed) for a in out.answers.values()))

    def Grant(self, req: pb.GrantRequest, ctx: grpc.ServicerContext) -> pb.GrantResponse:
        return self._grant_call("Grant", req, ctx)  # type: ignore[no-any-return]

    def Revoke(self, req: pb.GrantRequest, ctx: grpc.ServicerContext) -> pb.GrantResponse:
        return self._grant_call("Revoke", req, ctx)  # type: ignore[no-any-return]
