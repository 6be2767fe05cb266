"""The servicer's document RPCs (kind="multivector" collections), as a mixin.

Owns UpsertDocuments, SearchDocuments and GetDocuments: decode with `vecdb.rpc.documents`,
call the engine's document methods, encode the answer. As for the dense RPCs, inputs reach
the engine as given so that its validator names the field; optional flags are passed only
when the request sets them. The tenant block travels as for the dense RPCs
(`convert.tenant_args`: an empty `tenant` names none; `grant_to` and `tenants` go only when
non-empty), so the engine judges a tenant on a collection that is not multi-tenant, a missing
owner and an unknown tenant exactly as for points. What the proto says SearchDocuments does
not take (`with_vectors`, query weights, several queries with `single`) is refused here,
naming the field, rather than ignored.
"""

from __future__ import annotations

from typing import Any

import grpc

from vecdb.engine.validate import JSON_NULL
from vecdb.errors import InvalidArgument
from vecdb.rpc import convert, documents
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.answer_size import hits_too_large


class DocumentRPCs:
    """UpsertDocuments / SearchDocuments / GetDocuments over `self._db`."""

    _db: Any
    _max_bytes: int  # limits.max_message_bytes

    def UpsertDocuments(
        self, req: pb.UpsertDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.UpsertDocumentsResponse:
        ids = convert.ids_from_proto(req.ids)
        docs, weights = documents.documents_from_proto(req.documents, "documents")
        payloads = convert.payloads_from_proto(req.payloads, JSON_NULL)
        tenant = convert.tenant_args(req.tenant, grant_to=req.grant_to)
        n = self._db.upsert_documents(req.collection, ids, docs, weights, payloads, **tenant)
        return pb.UpsertDocumentsResponse(upserted=n)

    def SearchDocuments(
        self, req: pb.SearchDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.SearchDocumentsResponse:
        opts = req.options
        if opts.with_vectors:
            raise InvalidArgument("options.with_vectors is not supported by SearchDocuments "
                                  "(get_documents returns a hit's tokens)",
                                  field="options.with_vectors")  # fmt: skip
        kwargs: dict[str, Any] = {"with_payload": opts.with_payload}
        kwargs.update(convert.tenant_args(req.tenant, req.tenants))
        if opts.filter:
            kwargs["filter"] = convert.loads_json(opts.filter, "filter")
        if opts.params:
            kwargs["params"] = convert.loads_json(opts.params, "params")
        queries, weights = documents.documents_from_proto(req.queries, "query")
        if weights is not None:
            raise InvalidArgument("query weights are not supported: a query's tokens count "
                                  "alike (send queries without weights / has_weights)",
                                  field="query.weights")  # fmt: skip
        if req.single and len(queries) != 1:
            raise InvalidArgument(f"single is true but queries holds {len(queries)} matrices "
                                  "(single: exactly one)", field="single",
                                  reason="MALFORMED_REQUEST")  # fmt: skip
        too_large = hits_too_large("SearchDocuments", len(queries), opts.k, 0, self._max_bytes)
        if too_large is not None:
            raise too_large
        query: Any = queries[0] if req.single else queries
        res = self._db.search_documents(req.collection, query, opts.k, **kwargs)
        return documents.search_documents_to_proto(res)

    def GetDocuments(
        self, req: pb.GetDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.GetDocumentsResponse:
        ids = convert.ids_from_proto(req.ids)
        with_tokens = req.with_tokens if req.HasField("with_tokens") else True
        with_payload = req.with_payload if req.HasField("with_payload") else True
        found = self._db.get_documents(req.collection, ids, with_tokens=with_tokens,
                                       with_payload=with_payload,
                                       **convert.tenant_args(req.tenant))  # fmt: skip
        return documents.get_documents_to_proto(found, with_tokens, with_payload)
