"""The `vecdb.v1.VectorDB` servicer: decode each request, call the engine, encode the answer.

One method per RPC, each a few lines: all decoding and encoding goes through
`vecdb.rpc.convert`, all validation happens in the engine (which raises `VecdbError`), and
all error-to-status mapping, auth and metrics live in `vecdb.server.interceptors`. The
servicer holds the `Database` but never opens or closes it (`vecdb.server.app` does).
`UpsertStream` acknowledges each batch after the engine returned, i.e. once it is durable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from vecdb.errors import InvalidArgument, VecdbError
from vecdb.rpc import convert
from vecdb.rpc import vecdb_pb2 as pb
from vecdb.rpc import vecdb_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from vecdb.engine import Database
    from vecdb.server.metrics import ServerMetrics


class VectorDBServicer(pb_grpc.VectorDBServicer):
    """Maps each RPC onto the `Database` method of the same name."""

    def __init__(self, db: Database, metrics: ServerMetrics, stream_window: int) -> None:
        self._db = db  # the engine, thread-safe
        self._metrics = metrics  # for counting written vectors
        self._window = stream_window  # credits advertised to streaming clients

    # -- collections -----------------------------------------------------------------------

    def CreateCollection(
        self, req: pb.CreateCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.CreateCollectionResponse:
        kwargs: dict[str, Any] = {
            "id_type": req.id_type or "int",
            "kind": req.kind or "dense",
            "multi_tenant": req.multi_tenant,
            "index_params": convert.optional_from_json(req.index_params_json, "index_params"),
        }
        if req.index:
            kwargs["index"] = req.index
        info = self._db.create_collection(req.name, req.dim, req.metric or "cosine", **kwargs)
        return pb.CreateCollectionResponse(info=convert.info_to_proto(info))

    def ListCollections(
        self, req: pb.ListCollectionsRequest, ctx: grpc.ServicerContext
    ) -> pb.ListCollectionsResponse:
        infos = [convert.info_to_proto(i) for i in self._db.list_collections()]
        return pb.ListCollectionsResponse(collections=infos)

    def GetCollection(
        self, req: pb.GetCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.GetCollectionResponse:
        return pb.GetCollectionResponse(
            info=convert.info_to_proto(self._db.get_collection(req.name))
        )

    def DropCollection(
        self, req: pb.DropCollectionRequest, ctx: grpc.ServicerContext
    ) -> pb.DropCollectionResponse:
        self._db.drop_collection(req.name)
        return pb.DropCollectionResponse()

    # -- points ----------------------------------------------------------------------------

    def _upsert(self, req: pb.UpsertRequest) -> int:
        n = self._db.upsert(
            req.collection,
            convert.ids_from_proto(req.ids),
            convert.vectors_from_proto(req.vectors),
            convert.payloads_from_proto(req.payloads),
        )
        self._metrics.vectors_written.inc(n)
        return int(n)

    def Upsert(self, req: pb.UpsertRequest, ctx: grpc.ServicerContext) -> pb.UpsertResponse:
        return pb.UpsertResponse(upserted=self._upsert(req))

    def UpsertStream(
        self, requests: Iterator[pb.UpsertStreamRequest], ctx: grpc.ServicerContext
    ) -> Iterator[pb.UpsertStreamAck]:
        last_seq: int | None = None
        for req in requests:
            if last_seq is not None and req.seq <= last_seq:
                raise InvalidArgument(
                    f"stream batch seq={req.seq} does not increase (previous {last_seq})"
                )
            last_seq = req.seq
            try:
                n = self._upsert(req.batch)
            except VecdbError as exc:  # say which batch; the class (status) stays the same
                raise type(exc)(f"batch seq={req.seq}: {exc.message}") from None
            yield pb.UpsertStreamAck(seq=req.seq, upserted=n, credits=self._window)

    def Get(self, req: pb.GetRequest, ctx: grpc.ServicerContext) -> pb.GetResponse:
        records = self._db.get(req.collection, convert.ids_from_proto(req.ids))
        return convert.records_to_proto(records)

    def Delete(self, req: pb.DeleteRequest, ctx: grpc.ServicerContext) -> pb.DeleteResponse:
        n = self._db.delete(req.collection, convert.ids_from_proto(req.ids))
        return pb.DeleteResponse(deleted=n)

    def Count(self, req: pb.CountRequest, ctx: grpc.ServicerContext) -> pb.CountResponse:
        return pb.CountResponse(count=self._db.count(req.collection))

    def Optimize(self, req: pb.OptimizeRequest, ctx: grpc.ServicerContext) -> pb.OptimizeResponse:
        self._db.optimize(req.collection, wait=not req.no_wait)
        return pb.OptimizeResponse()

    # -- search ----------------------------------------------------------------------------

    def _search(self, collection: str, queries: Any, opts: pb.SearchOptions) -> pb.SearchResponse:
        res = self._db.search(
            collection,
            queries,
            opts.k,
            filter=convert.optional_from_json(opts.filter_json, "filter"),
            params=convert.optional_from_json(opts.params_json, "params"),
            with_payload=opts.with_payload,
        )
        return convert.result_to_proto(res)

    def Search(self, req: pb.SearchRequest, ctx: grpc.ServicerContext) -> pb.SearchResponse:
        return self._search(req.collection, convert.vector_from_bytes(req.query), req.options)

    def SearchBatch(
        self, req: pb.SearchBatchRequest, ctx: grpc.ServicerContext
    ) -> pb.SearchResponse:
        queries = convert.vectors_from_proto(req.queries, "queries")
        return self._search(req.collection, queries, req.options)

    # -- admin -----------------------------------------------------------------------------

    def Stats(self, req: pb.StatsRequest, ctx: grpc.ServicerContext) -> pb.StatsResponse:
        stats = self._db.stats(req.collection or None)
        return pb.StatsResponse(stats_json=json.dumps(stats, default=str, sort_keys=True))
