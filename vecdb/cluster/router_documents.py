"""The router's multi-vector document RPCs (kind="multivector" collections).

A document lives on the shard of its id (the jump hash of dense points). UpsertDocuments is
checked whole with the engine's own rules first (ids, token matrices, payloads, in a node's
order), so a bad batch gets a node's error and no shard writes any of it, then split per
shard and sent in parallel. GetDocuments asks each shard for its ids and answers in request
order. SearchDocuments asks every shard for its top-k by MaxSim and merges by distance
(ties in shard order), summing the shards' numeric stats. Anything the router cannot place
(unknown or dense collection, one shard) goes whole to one shard; a call naming tenants on a
collection that is not multi-tenant is refused by the shard as by a node, never split with
its tenant fields dropped.

A multi-tenant document collection places documents as points are placed
(`router_points`, `router_tenants`): an upsert goes whole to its owner's home shard (its
grantees made present there first; ids another shard holds are refused), a tenant's get and
search go to the shards of its placement (a union search asks each shard about the tenants
present there), and a get without a tenant asks every shard. Delete, count, scroll, grants
and the tenant calls are the points' own.
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

    def _tenant_documents(self, name: str) -> bool:
        """Whether `name` is a multi-tenant document collection in the catalog."""
        entry = self._entry(name)
        return entry is not None and not self._dense(entry) and self._multi_tenant(entry)

    def _upsert_documents_owned(
        self, req: pb.UpsertDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.UpsertDocumentsResponse:
        """Whole, to the owner's home shard, as a multi-tenant point upsert."""
        home = self._home(req.collection, req.tenant) if req.tenant else None
        if home is None:  # MISSING_TENANT / NOT_FOUND, in a node's words
            return self._one("UpsertDocuments", req, ctx)  # type: ignore[no-any-return]
        for grantee in dict.fromkeys(req.grant_to):
            self._ensure_tenant_on(req.collection, grantee, home, ctx)
        self._check_foreign_ids(req, home, ctx)
        self._check_vector_quotas(req.collection, {home: req.ids}, self._seers(req), ctx)
        return self._one("UpsertDocuments", req, ctx, home)  # type: ignore[no-any-return]

    def UpsertDocuments(
        self, req: pb.UpsertDocumentsRequest, ctx: grpc.ServicerContext
    ) -> pb.UpsertDocumentsResponse:
        if self._tenant_documents(req.collection):
            return self._upsert_documents_owned(req, ctx)
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
        if self._tenant_documents(req.collection):  # the tenant's shards, or all: as `Get`
            shards = self._scope(req.collection, [req.tenant] if req.tenant else []) or self._all()
            if len(shards) == 1:
                return self._one("GetDocuments", req, ctx, shards[0])  # type: ignore[no-any-return]
            return self._merged_get(req, self._each("GetDocuments", req, ctx, shards))
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
        return self._merged_get(req, self._shards.fan_out("GetDocuments", parts, ctx))

    @staticmethod
    def _merged_get(req: pb.GetDocumentsRequest, out: Any) -> pb.GetDocumentsResponse:
        """The shards' documents in request order."""
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
        # every shard (also for a collection the catalog does not know: `_scope`); in a
        # multi-tenant collection the shards of the tenants named, as for points
        # (`_scope`, `_per_shard_tenants`)
        tenants = ([req.tenant] if req.tenant else []) + list(req.tenants)
        shards = self._scope(req.collection, tenants)
        parts = self._per_shard_tenants(req, tenants, self._all() if shards is None else shards)
        out = self._shards.fan_out("SearchDocuments", parts, ctx, allow_partial=req.allow_partial)
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
