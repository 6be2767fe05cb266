"""The router's point and search RPCs: where each request goes and how answers merge.

Dense collections that are not multi-tenant: an id lives on `routing.shard_of(id, n)`. An
upsert is checked whole first with the engine's own validators (ids, vectors, payloads, in a
node's order, so a bad batch gets a node's error naming the caller's positions and no shard
writes any of it), then split by shard and sent in parallel; each shard's part is atomic.
If a shard then fails, the error names the shards that applied their part and those that did
not; a retry of the whole batch is safe (an upsert by id is idempotent). Get / Delete /
SetPayload by ids are split the same way; by filter they go to every shard. Multi-tenant
collections: an owner's points live on its home shard (the catalog's placement), so an upsert
goes whole to the owner's home, and a tenant's reads go only to the shards of its placement
(home + shards holding points granted to it). Searches go to every shard (or the tenants'
shards) with the same k, and merge (`vecdb.cluster.merge`); `stats["shards"]` says how many
shards answered. Requests the router cannot place (unknown collection, mixed id kinds,
malformed bodies, arguments a collection refuses) go whole to one shard, whose validator
answers as a single node would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from vecdb.cluster import merge, routing
from vecdb.cluster.router_base import RouterBase
from vecdb.engine import writer
from vecdb.engine.validate import DEFAULT_SCROLL_LIMIT, JSON_NULL
from vecdb.errors import Unavailable
from vecdb.index import registry
from vecdb.index.params import MAX_FLOAT16, BuildParams
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.servicer import stream_upserts
from vecdb.types import IdType, IndexKind, Metric


def max_abs_component(spec: dict[str, Any]) -> float | None:
    """The largest component a node's index of this catalog spec stores: SPANN with float16
    postings or a float16 rerank store (the defaults below and from BITS_MIN_DIM
    dimensions) holds up to MAX_FLOAT16, as `SpannIndex` says."""
    if (spec.get("index") or registry.DEFAULT_KIND.value) != IndexKind.SPANN.value:
        return None
    dim = int(spec["dim"]) if "dim" in spec else None
    params = BuildParams.parse(spec.get("index_params") or {}, dim)
    return MAX_FLOAT16 if params.float16_rows else None


class PointRpcs(RouterBase):
    """Upsert, Get, Delete, Count, Scroll, payload updates and Search through the router."""

    # -- upsert ----------------------------------------------------------------------------

    def _upsert(self, req: pb.UpsertRequest, ctx: grpc.ServicerContext | None) -> int:
        entry = self._entry(req.collection)
        if entry is None or not self._dense(entry):
            return int(self._one("Upsert", req, ctx).upserted)
        if self._multi_tenant(entry):
            return self._upsert_owned(req, ctx)
        if req.tenant or req.grant_to or len(self._shards) == 1:
            return int(self._one("Upsert", req, ctx).upserted)  # the node refuses or takes it
        self._check_upsert(entry.spec, req)
        parts = routing.split_upsert(req, len(self._shards))
        if parts is None:  # not placeable as sent: a node's validator names why
            return int(self._one("Upsert", req, ctx).upserted)
        out = self._shards.fan_out("Upsert", parts, ctx, check=False)
        if out.errors or out.missing:
            raise self._partial_write("upsert", out.answers, out.errors, out.missing)
        return sum(int(a.upserted) for a in out.answers.values())

    @staticmethod
    def _check_upsert(spec: dict[str, Any], req: pb.UpsertRequest) -> None:
        """A node's checks of an upsert batch, in its order (`engine.writer.check_batch`)."""
        writer.check_batch(
            convert.ids_from_proto(req.ids), convert.vectors_from_proto(req.vectors),
            convert.payloads_from_proto(req.payloads, JSON_NULL),
            id_type=IdType(spec.get("id_type", "int")), dim=int(spec["dim"]),
            metric=Metric(spec.get("metric", "cosine")), max_abs=max_abs_component(spec),
        )  # fmt: skip

    def _upsert_owned(self, req: pb.UpsertRequest, ctx: grpc.ServicerContext | None) -> int:
        """A multi-tenant upsert: whole, to the owner's home shard (grantees made present
        there first). Ids another shard already holds are refused, as a node refuses ids of
        another owner."""
        home = self._home(req.collection, req.tenant) if req.tenant else None
        if home is None:
            return int(self._one("Upsert", req, ctx).upserted)  # MISSING_TENANT / NOT_FOUND
        for grantee in dict.fromkeys(req.grant_to):
            self._ensure_tenant_on(req.collection, grantee, home, ctx)
        self._check_foreign_ids(req, home, ctx)
        self._check_vector_quotas(req.collection, {home: req.ids}, self._seers(req), ctx)
        return int(self._one("Upsert", req, ctx, home).upserted)

    def Upsert(self, req: pb.UpsertRequest, ctx: grpc.ServicerContext) -> pb.UpsertResponse:
        return pb.UpsertResponse(upserted=self._upsert(req, ctx))

    def UpsertStream(
        self, requests: Iterator[pb.UpsertStreamRequest], ctx: grpc.ServicerContext
    ) -> Iterator[pb.UpsertStreamAck]:
        return stream_upserts(requests, lambda batch: self._upsert(batch, ctx), self._window)

    # -- by id -----------------------------------------------------------------------------

    def _by_id(self, req: Any, ctx: grpc.ServicerContext | None) -> dict[int, Any] | None:
        """`req` split by the shard of each id (dense, not multi-tenant), or None when it must
        go elsewhere. Ids are checked whole first, as a node checks them."""
        entry = self._entry(req.collection)
        if entry is None or not self._dense(entry) or self._multi_tenant(entry):
            return None
        if len(self._shards) == 1 or req.ids.HasField("mixed"):
            return None
        self._check_ids(entry, req.ids)
        by_shard = routing.split_positions(req.ids, len(self._shards))
        if by_shard is None:
            return None
        parts = {}
        for shard, pos in by_shard.items():
            part = type(req)()
            part.CopyFrom(req)
            part.ids.CopyFrom(routing.sub_ids(req.ids, pos))
            parts[shard] = part
        return parts

    def Get(self, req: pb.GetRequest, ctx: grpc.ServicerContext) -> pb.GetResponse:
        parts = self._by_id(req, ctx)
        if parts is None:
            shards = self._scope(req.collection, [req.tenant] if req.tenant else [])
            if shards is not None and len(shards) == 1:
                return self._one("Get", req, ctx, shards[0])  # type: ignore[no-any-return]
            out = self._each("Get", req, ctx, shards)
        else:
            out = self._shards.fan_out("Get", parts, ctx)
        return merge.merge_get(req.ids, [out.answers[s] for s in sorted(out.answers)])

    def _write_by_id(self, method: str, req: Any, ctx: grpc.ServicerContext | None) -> int:
        """Delete / SetPayload: split by id, or to the tenant's shards, or to every shard."""
        field = "deleted" if method == "Delete" else "updated"
        parts = self._by_id(req, ctx) if req.HasField("ids") else None
        if parts is None:
            # a collection the catalog does not know: one shard answers, as a node would
            shards = [0] if self._entry(req.collection) is None else self._scope(
                req.collection, [req.tenant] if req.tenant else [])  # fmt: skip
            if method == "Delete" and req.HasField("ids") and req.filter:
                shards = [0]  # both given: a node names the fault
            if shards is not None and len(shards) == 1:
                return int(getattr(self._one(method, req, ctx, shards[0]), field))
            parts = dict.fromkeys(self._all() if shards is None else shards, req)
        out = self._shards.fan_out(method, parts, ctx, check=False)
        if out.errors or out.missing:
            raise self._partial_write(method, out.answers, out.errors, out.missing)
        return sum(int(getattr(a, field)) for a in out.answers.values())

    def Delete(self, req: pb.DeleteRequest, ctx: grpc.ServicerContext) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=self._write_by_id("Delete", req, ctx))

    def SetPayload(
        self, req: pb.SetPayloadRequest, ctx: grpc.ServicerContext
    ) -> pb.SetPayloadResponse:
        return pb.SetPayloadResponse(updated=self._write_by_id("SetPayload", req, ctx))

    def OverwritePayload(
        self, req: pb.SetPayloadRequest, ctx: grpc.ServicerContext
    ) -> pb.SetPayloadResponse:
        return pb.SetPayloadResponse(updated=self._write_by_id("OverwritePayload", req, ctx))

    # -- whole collection ------------------------------------------------------------------

    def Count(self, req: pb.CountRequest, ctx: grpc.ServicerContext) -> pb.CountResponse:
        shards = self._scope(req.collection, [req.tenant] if req.tenant else [])
        out = self._each("Count", req, ctx, shards, allow_partial=req.allow_partial)
        resp = pb.CountResponse(count=sum(int(a.count) for a in out.answers.values()))
        resp.missing_shards.extend(self._shards.missing_names(out.missing))
        return resp

    def Scroll(self, req: pb.ScrollRequest, ctx: grpc.ServicerContext) -> pb.ScrollResponse:
        shards = self._scope(req.collection, [req.tenant] if req.tenant else [])
        if shards is not None and len(shards) == 1:
            return self._one("Scroll", req, ctx, shards[0])  # type: ignore[no-any-return]
        out = self._each("Scroll", req, ctx, shards)
        limit = req.limit if req.HasField("limit") else DEFAULT_SCROLL_LIMIT
        return merge.merge_scroll([out.answers[s] for s in sorted(out.answers)], int(limit))

    # -- search ----------------------------------------------------------------------------

    def Search(self, req: pb.SearchRequest, ctx: grpc.ServicerContext) -> pb.SearchResponse:
        tenants = ([req.tenant] if req.tenant else []) + list(req.tenants)
        shards = self._scope(req.collection, tenants)
        targets = self._all() if shards is None else shards
        parts = self._per_shard_tenants(req, tenants, targets)
        out = self._shards.fan_out("Search", parts, ctx, allow_partial=req.allow_partial)
        answers = [out.answers[s] for s in sorted(out.answers)]
        resp = merge.merge_search(answers, int(req.options.k))
        if len(answers) == 1:  # merge_search hands a lone answer on: count it too
            stats = pb.SearchStats()
            stats.CopyFrom(resp.stats)
            stats.extra["shards"] = 1.0
            resp.stats.CopyFrom(stats)
        resp.missing_shards.extend(self._shards.missing_names(out.missing))
        if not answers:  # pragma: no cover - check() refuses a call no shard answered
            raise Unavailable("no shard answered")
        return resp

    SearchBatch = Search

    def SearchStream(
        self, requests: Iterator[pb.SearchRequest], ctx: grpc.ServicerContext
    ) -> Iterator[pb.SearchResponse]:
        """Searches on one stream, each answered as Search (the guard runs them one by one)."""
        for req in requests:
            yield self.Search(req, ctx)
