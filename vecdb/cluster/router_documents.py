"""The router's multi-vector document RPCs (kind="multivector" collections).

A document lives on the shard of its id (the jump hash of dense points). UpsertDocuments is
checked whole with the engine's own rules first (ids, token matrices, payloads, in a node's
order), so a bad batch gets a node's error and no shard writes any of it, then split per
shard and sent in parallel. GetDocuments asks each shard for its ids and answers in request
order. SearchDocuments asks every shard for its top-k by MaxSim and merges by distance
(ties in shard order), summing the shards' numeric stats. Anything the router cannot place
(unknown or dense collection, a tenant or grantee, one shard) goes whole to one shard. No
multi-tenant document collection exists through a router (CreateCollection refuses it,
`router.collection_spec`), so a call naming tenants is refused by the shards as by a node
("not multi-tenant"), never split with its tenant fields dropped.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from vecdb.cluster import merge, routing
from vecdb.cluster.router_base import RouterBase
from vecdb.engine import validate as v
from vecdb.engine.doc_rules import prepare_documents
from vecdb.engine.validate import JSON_NULL
from vecdb.errors import InvalidArgument
from vecdb.rpc import convert, documents
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import IdType, Metric


class DocumentRpcs(RouterBase):
    """UpsertDocuments, GetDocuments and SearchDocuments through the router."""

    def _documents_entry(self, name: str, names_tenants: bool) -> Any:
        """The catalog entry when the call can be split by id, else None."""
        entry = self._entry(name)
        if entry is None or self._dense(entry) or names_tenants or len(self._all()) == 1:
            return None
        return entry

    def UpsertDocuments(
        self, req: pb.UpsertDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.UpsertDocumentsResponse:
        entry = self._documents_entry(req.collection, bool(req.tenant or req.grant_to))
        if entry is None:
            return self._one("UpsertDocuments", req, ctx)  # type: ignore[no-any-return]
        spec = entry.spec
        # Pass 1: a node's checks, in its order (servicer decoding, then the engine's rules).
        raw_ids = convert.ids_from_proto(req.ids)
        raw_docs, raw_weights = documents.documents_from_proto(req.documents, "documents")
        payloads = convert.payloads_from_proto(req.payloads, JSON_NULL)
        ids = v.prepare_ids(raw_ids, IdType(spec.get("id_type", "int")))
        docs, _ = prepare_documents(raw_docs, raw_weights, int(spec["dim"]),
                                     Metric(spec.get("metric", "cosine")))  # fmt: skip
        if len(docs) != len(ids):
            raise InvalidArgument(f"documents has {len(docs)} entries but ids has {len(ids)}",
                                  field="documents", reason="COUNT_MISMATCH")  # fmt: skip
        v.prepare_payloads(payloads, len(ids))
        # Pass 2: one request per shard (the documents as decoded), sent together.
        parts = {}
        by_shard = routing.split_positions(req.ids, len(self._all())) or {0: list(range(len(ids)))}
        for shard, pos in by_shard.items():
            part = pb.UpsertDocumentsRequest(
                collection=req.collection, ids=routing.sub_ids(req.ids, pos),
                documents=documents.documents_to_proto(
                    [raw_docs[p] for p in pos],
                    None if raw_weights is None else [raw_weights[p] for p in pos],
                ),
            )  # fmt: skip
            if req.payloads:
                part.payloads.extend(req.payloads[p] for p in pos)
            parts[shard] = part
        out = self._shards.fan_out("UpsertDocuments", parts, ctx, check=False)
        if out.errors or out.missing:
            raise self._partial_write("upsert_documents", out.answers, out.errors, out.missing)
        return pb.UpsertDocumentsResponse(upserted=sum(a.upserted for a in out.answers.values()))

    def GetDocuments(
        self, req: pb.GetDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.GetDocumentsResponse:
        entry = self._documents_entry(req.collection, bool(req.tenant))
        if entry is None or req.ids.HasField("mixed"):
            return self._one("GetDocuments", req, ctx)  # type: ignore[no-any-return]
        self._check_ids(entry, req.ids)
        by_shard = routing.split_positions(req.ids, len(self._all())) or {}
        parts = {}
        for shard, pos in by_shard.items():
            part = pb.GetDocumentsRequest()
            part.CopyFrom(req)
            part.ids.CopyFrom(routing.sub_ids(req.ids, pos))
            parts[shard] = part
        out = self._shards.fan_out("GetDocuments", parts, ctx)
        found = {d.id: d for a in out.answers.values()
                 for d in documents.get_documents_from_proto(a)}  # fmt: skip
        wanted = dict.fromkeys(convert.ids_from_proto(req.ids))
        with_tokens = req.with_tokens if req.HasField("with_tokens") else True
        with_payload = req.with_payload if req.HasField("with_payload") else True
        return documents.get_documents_to_proto(
            [found[i] for i in wanted if i in found], with_tokens, with_payload
        )

    def SearchDocuments(
        self, req: pb.SearchDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.SearchDocumentsResponse:
        if self._entry(req.collection) is None:
            return self._one("SearchDocuments", req, ctx)  # type: ignore[no-any-return]
        out = self._each("SearchDocuments", req, ctx, allow_partial=req.allow_partial)
        answers = [out.answers[s] for s in sorted(out.answers)]
        stats: dict[str, Any] = {}
        for a in answers:
            for key, value in json.loads(a.stats or "{}").items():
                if isinstance(value, (int, float)):
                    stats[key] = stats.get(key, 0) + value
        stats["shards"] = len(answers)
        resp = pb.SearchDocumentsResponse(
            result=merge.merge_search([a.result for a in answers], int(req.options.k)),
            stats=json.dumps(stats),
        )
        resp.missing_shards.extend(self._shards.missing_names(out.missing))
        return resp
