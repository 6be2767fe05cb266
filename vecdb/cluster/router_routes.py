"""The router's GetRoute: where a tenant lives, for clients that route its reads themselves.

The answer is the tenant's placement in the router's cached catalog (home first, then the
shards holding points granted to it), the shard map's addresses of those shards, and the
catalog epoch read. Empty when there is no direct route: a collection the catalog does not
know or that is not multi-tenant, a tenant it does not know (then the router's own answer,
through shard 0, carries a node's error, as before). The client goes direct only to a
placement of exactly one shard, and that shard checks the route on every call
(`vecdb.cluster.shard_routes`).
"""

from __future__ import annotations

import grpc

from vecdb.cluster.router_base import RouterBase
from vecdb.rpc.v1 import vecdb_pb2 as pb


class RouteRpcs(RouterBase):
    """GetRoute."""

    def GetRoute(self, req: pb.GetRouteRequest, ctx: grpc.ServicerContext) -> pb.GetRouteResponse:
        st = self._state()
        resp = pb.GetRouteResponse(epoch=st.epoch)
        entry = st.collections.get(req.collection)
        placed = st.tenants.get((req.collection, req.tenant))
        if entry is None or not self._multi_tenant(entry) or placed is None:
            return resp
        shards = [placed.home, *sorted(s for s in placed.shards if s != placed.home)]
        if any(s >= len(st.shards) for s in shards):  # a map shrunk under a placement
            return resp
        resp.shards.extend(shards)
        resp.addresses.extend(st.shards[s] for s in shards)
        return resp
