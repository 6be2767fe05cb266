"""The read path of multivector collections: search_documents and get_documents.

Owns how a document query is checked (one (m, dim) matrix, or a list of them, of finite
numbers with 1 <= m <= MAX_QUERY_TOKENS; field "query" or "query[i]"), how a tenant scope
and a filter become the set of documents the index may return (the scope's cached bitmap, or
the filter's exact matches from the collection's `Selector` as a mask over slots), and how the
index's answer becomes a `SearchResult`: ids, `distances` = the negated MaxSim score (smaller
is better, as for every dense metric; for "cosine" the score is the sum over query tokens of
the best cosine), optional payloads, and the call's stats. Documents deleted while the
search ran are dropped from the answer. Takes no collection lock.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import filters
from vecdb.engine import scope as scopes
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.doc_rules import prepare_document_queries
from vecdb.engine.doc_writer import check_kind, decode_document
from vecdb.engine.tenant_reads import read_scope
from vecdb.errors import InvalidArgument
from vecdb.index.base import SearchStats
from vecdb.index.multivector.params import MVSearchParams
from vecdb.storage import kv as kvmod
from vecdb.types import Document, IdType, SearchResult

F32 = npt.NDArray[np.float32]


def search_documents(
    coll: CollectionCore,
    query: object,
    k: object,
    flt: object,
    params: object,
    with_payload: bool,
    tenant: object = None,
    tenants: object = None,
) -> SearchResult:
    check_kind(coll, "search_documents")
    k_ = v.check_k(k)
    compiled = filters.parse(flt)
    v.check_flag("with_payload", with_payload)
    if params is not None and not isinstance(params, dict):
        raise InvalidArgument("params must be a JSON object of search parameter -> value",
                              field="params")  # fmt: skip
    parsed = MVSearchParams.parse(params)  # bad parameters before any work
    qs = prepare_document_queries(query, coll.cfg.dim, coll.metric)
    scope = read_scope(coll, tenant, tenants)  # the tenants' documents (None: all)
    visible: Any = None if scope is None else scope.visible  # a bitmap, cached per set
    if compiled is not None:
        # the filter's matches (within the scope) as a mask over slots
        visible = (coll.selector.matching(compiled) if scope is None
                   else scopes.matching(coll, compiled, scope))  # fmt: skip
    mv = coll.index.mv  # type: ignore[attr-defined]
    slots, scores, stats = mv.search(qs, k_, parsed, visible)
    with coll.io_lock:
        coll.io.add(_cumulative(stats))
    ids = coll.points.ids_of(slots)
    pad: Any = None if coll.id_type is IdType.STR else -1
    dist = np.where(slots >= 0, -scores, np.inf).astype(np.float32)
    missing = (slots >= 0) & (ids == pad)
    if missing.any():  # deleted while we searched: drop, re-pad at the end of the row
        order = np.argsort(missing, axis=1, kind="stable")
        slots = np.take_along_axis(np.where(missing, -1, slots), order, 1)
        ids = np.take_along_axis(np.where(missing, pad, ids), order, 1)
        dist = np.take_along_axis(np.where(missing, np.inf, dist), order, 1).astype(np.float32)
    pays = None
    if with_payload:
        pays = [
            [p if s >= 0 else None for s, p in zip(row, coll.points.payloads(row), strict=True)]
            for row in slots.tolist()
        ]
    return SearchResult(ids=ids, distances=dist, payloads=pays, stats=dict(stats))


# the extras a document search adds to the collection's cumulative statistics, summed over calls
SUMMED = ("candidates", "docs_scored", "tokens_scored", "exact", "docs_refined")


def _cumulative(stats: dict[str, float]) -> SearchStats:
    """A document search's counters as the collection's cumulative search statistics keep
    them (`stats()["index"]`): queries and bytes read in their fields, the documents and
    tokens scored, the candidates, the exact searches and the documents refined as extras
    (sums over calls); the per-call ratio and widths (`maxsim_work_saved`, `nprobe`) are not
    summed."""
    return SearchStats(
        queries=int(stats["queries"]), bytes_read=int(stats["bytes_read"]),
        extra={k: stats[k] for k in SUMMED},
    )  # fmt: skip


def get_documents(
    coll: CollectionCore,
    ids: object,
    with_tokens: bool = True,
    with_payload: bool = True,
    tenant: object = None,
) -> list[Document]:
    """The stored documents among `ids`, in request order (missing ids omitted; with a
    tenant, so are the documents it may not see)."""
    check_kind(coll, "get_documents")
    id_list = v.prepare_ids(ids, coll.id_type)
    v.check_flag("with_tokens", with_tokens)
    v.check_flag("with_payload", with_payload)
    scope = read_scope(coll, tenant)
    keys = [v.encode_id(i) for i in id_list]
    out: list[Document] = []
    with coll.kv.view() as view:
        slots = [
            None if r is None else kvmod.read_u64(r)
            for r in view.multi_get(kvmod.CF_IDS, [coll.points.id_key(k) for k in keys])
        ]
        found = [(i, s) for i, s in zip(id_list, slots, strict=True) if s is not None]
        if scope is not None:
            found = scope.within(found)
        skeys = [coll.points.slot_key(s) for _, s in found]
        rows = view.multi_get(kvmod.CF_VECTORS, skeys)
        pays = view.multi_get(kvmod.CF_PAYLOAD, skeys) if with_payload else [None] * len(skeys)
    for (pid, _), raw, pay in zip(found, rows, pays, strict=True):
        if raw is None:
            continue
        tokens, weights = decode_document(raw, coll.cfg.dim)
        payload = None if pay is None else _json(pay)
        out.append(Document(pid, tokens if with_tokens else None, payload,
                            weights if with_tokens else None))  # fmt: skip
    return out


def _json(raw: bytes) -> Any:
    import json

    return json.loads(raw)
