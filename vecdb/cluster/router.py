"""The router's `vecdb.v1.VectorDB` servicer: the same API as a node, answered by shards.

The RPCs are grouped by concern in mixins (points and search: `router_points`; tenants:
`router_tenants`; snapshots, keys, stats: `router_admin`; documents: `router_documents`; GetRoute
for client-side routing: `router_routes`); this module holds the
collection RPCs and puts the servicer together. Collections live in the catalog: Create checks
its arguments with the engine's validators (a node's errors, nothing recorded on a refusal),
records the collection by compare-and-swap, then creates it on every live shard with
`exist_ok` (a shard that is down creates it when it comes back, through its ShardSync);
Drop records a tombstone the same way, then drops it on the live shards. Get/List answer the
catalog's collections with the shards' counts added up. The servicer holds no data and no
state besides the catalog cache and the shard channels, so routers can run side by side.
"""

from __future__ import annotations

from typing import Any

import grpc

from vecdb.cluster.router_admin import AdminRpcs
from vecdb.cluster.router_documents import DocumentRpcs
from vecdb.cluster.router_points import PointRpcs
from vecdb.cluster.router_routes import RouteRpcs
from vecdb.cluster.router_tenants import TenantRpcs
from vecdb.engine import core
from vecdb.engine.database import collection_settings
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc
from vecdb.server.servicer import list_page_size, page_token
from vecdb.types import CollectionKind, IdType, Metric

SUMMED = ("count", "indexed", "buffered")  # CollectionInfo fields that add up over shards
# The collection's index state is its least finished shard's: a failed job first, then running
# work (a first build before buffer applies before maintenance), then writes waiting.
STATE_ORDER = (core.STATE_ERROR, core.STATE_BUILDING, core.STATE_INDEXING,
               core.STATE_MAINTAINING, core.STATE_IDLE, core.STATE_READY)  # fmt: skip


def collection_spec(req: pb.CreateCollectionRequest) -> dict[str, Any]:
    """The catalog spec of a CreateCollection request, checked as a node checks it (the
    same errors, in the same order), with the defaults filled in."""
    metric = convert.enum_from_proto(convert.METRICS, req.metric, "metric", Metric.COSINE)
    id_type = convert.enum_from_proto(convert.ID_TYPES, req.id_type, "id_type", IdType.INT)
    kind = convert.enum_from_proto(convert.COLLECTION_KINDS, req.kind, "kind",
                                   CollectionKind.DENSE)  # fmt: skip
    index = (convert.enum_from_proto(convert.INDEX_KINDS, req.index, "index").value
             if req.index else None)  # fmt: skip
    params = convert.optional_from_json(req.index_params, "index_params")
    spec = collection_settings(req.name, req.dim, metric.value, id_type=id_type.value,
                               index=index, index_params=params, kind=kind.value,
                               multi_tenant=bool(req.multi_tenant))  # fmt: skip
    spec["index_params"] = spec["index_params"] or None  # the catalog's form of "defaults"
    return spec


def _rank(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else 0  # unknown: as an error


def _sum_info(infos: list[pb.CollectionInfo]) -> pb.CollectionInfo:
    """One collection's info over its shards: counts added up; the index state of the least
    finished shard, with the lowest progress among the shards in that state (shard 0's
    "ready" while shard 1 still buffers its writes would end `vecdb optimize` at once); the
    longest last build (the shards build side by side); every shard's payload indexes."""
    out = pb.CollectionInfo()
    out.CopyFrom(infos[0])
    for name in SUMMED:
        setattr(out, name, sum(getattr(i, name) for i in infos))
    state = min((i.index_state for i in infos), key=_rank)
    out.index_state = state
    out.index_progress = min(i.index_progress for i in infos if i.index_state == state)
    builds = [i.last_build_seconds for i in infos if i.HasField("last_build_seconds")]
    if builds:
        out.last_build_seconds = max(builds)
    for i in infos:
        out.payload_indexes.update(i.payload_indexes)
    return out


class RouterServicer(
    PointRpcs, TenantRpcs, AdminRpcs, DocumentRpcs, RouteRpcs, pb_grpc.VectorDBServicer
):
    """Every VectorDB RPC, answered through the shards (see the module docstring)."""

    # -- collections -----------------------------------------------------------------------

    def CreateCollection(
        self, req: pb.CreateCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateCollectionResponse:
        spec = collection_spec(req)
        st = self._state()
        known = req.name in st.collections
        if known:  # a node says ALREADY_EXISTS naming the setting, or answers (exist_ok)
            self._one("CreateCollection", req, ctx)
        else:
            self._catalog.create_collection(req.name, spec)
        push = pb.CreateCollectionRequest()
        push.CopyFrom(req)
        push.exist_ok = True
        out = self._shards.fan_out("CreateCollection", dict.fromkeys(self._all(), push), ctx,
                                   check=False)  # fmt: skip
        if out.errors:
            if not known:  # a shard refused what the validators let through: undo
                self._catalog.drop_collection(req.name)
            raise out.errors[min(out.errors)]
        if not out.answers:
            raise self._shards.missing_error(out.missing)
        infos = [out.answers[s].info for s in sorted(out.answers)]
        return pb.CreateCollectionResponse(info=_sum_info(infos))

    def CollectionExists(
        self, req: pb.CollectionExistsRequest, ctx: grpc.ServicerContext
    ) -> pb.CollectionExistsResponse:
        return pb.CollectionExistsResponse(exists=req.name in self._state().collections)

    def GetCollection(
        self, req: pb.GetCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.GetCollectionResponse:
        if req.name not in self._state().collections:
            return self._one("GetCollection", req, ctx)  # type: ignore[no-any-return]
        out = self._each("GetCollection", req, ctx)
        infos = [out.answers[s].info for s in sorted(out.answers)]
        return pb.GetCollectionResponse(info=_sum_info(infos))

    def ListCollections(
        self, req: pb.ListCollectionsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListCollectionsResponse:
        size = list_page_size(req.page_size)
        names = self._state().collections
        out = self._each("ListCollections", req, ctx)
        by_name: dict[str, list[pb.CollectionInfo]] = {}
        for shard in sorted(out.answers):
            for info in out.answers[shard].collections:
                if info.name in names:
                    by_name.setdefault(info.name, []).append(info)
        ordered = sorted(by_name)
        page = ordered[:size]
        more = len(ordered) > size or any(a.next_page_token for a in out.answers.values())
        token = page_token(page[-1]) if page and more else ""
        return pb.ListCollectionsResponse(
            collections=[_sum_info(by_name[n]) for n in page], next_page_token=token
        )

    def DropCollection(
        self, req: pb.DropCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.DropCollectionResponse:
        if req.name not in self._state().collections:
            return self._one("DropCollection", req, ctx)  # type: ignore[no-any-return]
        self._catalog.drop_collection(req.name)
        out = self._shards.fan_out("DropCollection", dict.fromkeys(self._all(), req), ctx,
                                   check=False)  # fmt: skip
        real = {s: e for s, e in out.errors.items() if e.code != "NOT_FOUND"}
        if real:  # the tombstone stands: the shard's ShardSync drops it later
            raise real[min(real)]
        return pb.DropCollectionResponse()
