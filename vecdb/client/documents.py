"""The SDK's document calls (kind="multivector" collections): embedded, remote and their
request builders.

Owns upsert_documents / search_documents / get_documents for `LocalClient` (delegation to
the engine) and `RemoteClient` / `AsyncClient` (the `Documents` wire message, see
`vecdb.rpc.documents`). As for dense calls the wire carries the input as given and the
server's engine judges it; only values the wire cannot carry (a document that is not a
matrix of numbers, a value beyond float32, weights that do not line up with the tokens) are
judged here, by the engine's own rules (`vecdb.engine.doc_rules`), after asking the server
for the collection's dimension, metric, kind, id type and tenant mode, and for the tenants an
upsert names (its tenant arguments are judged first, as the engine does:
`vecdb.client.prejudge`), so both modes raise the same error.
The tenant arguments (`tenant`, `grant_to`, `tenants`) travel in the requests' tenant fields
as for dense calls (`vecdb.client.tenant_requests`). Remote calls too big for one message go
in parts (`vecdb.client.splits`): a document upsert by documents, a search by queries, and a
get_documents whose answer the server refuses as too large by halves of its ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vecdb.client import prejudge, splits
from vecdb.client import requests as rq
from vecdb.client import tenant_requests as tq
from vecdb.engine import filters
from vecdb.engine import validate as rules
from vecdb.engine.doc_rules import (
    check_document_count,
    prepare_document_queries,
    prepare_documents,
    wrong_kind,
)
from vecdb.errors import InvalidArgument
from vecdb.rpc import documents as wire
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import CollectionInfo, CollectionKind, Document, SearchResult

if TYPE_CHECKING:
    from vecdb.engine import Database

Info = Callable[[], CollectionInfo]
Missing = Callable[[], Collection[str]]  # the named tenants the collection does not have
_F32_MAX = float(np.finfo(np.float32).max)


class Uncarried(Exception):
    """The documents or queries cannot travel as given."""


def _matrix(value: Any) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise Uncarried() from None
    if arr.dtype.kind not in "fiu" or arr.ndim != 2:
        raise Uncarried()
    if arr.size and arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        if finite.size and np.abs(finite).max() > _F32_MAX:
            raise Uncarried()
    return arr


def _matrices(value: Any) -> list[npt.NDArray[Any]]:
    if isinstance(value, np.ndarray) and value.ndim == 3:
        return [_matrix(x) for x in value]
    if not isinstance(value, (list, tuple)) or not value:
        raise Uncarried()
    return [_matrix(x) for x in value]


def _weights(value: Any, docs: list[npt.NDArray[Any]]) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != len(docs):
        raise Uncarried()
    out: list[Any] = []
    for w, d in zip(value, docs, strict=True):
        if w is None:
            out.append(None)
            continue
        try:
            arr = np.asarray(w)
        except (TypeError, ValueError):
            raise Uncarried() from None
        if arr.dtype.kind not in "fiu" or arr.shape != (len(d),):
            raise Uncarried()
        out.append(arr)
    return out


def _check_kind(info: CollectionInfo, call: str) -> None:
    if info.kind is not CollectionKind.MULTIVECTOR:
        raise wrong_kind(call, info.name, info.kind.value)


def upsert_documents_request(
    name: Any, ids: Any, documents: Any, weights: Any, payloads: Any, info: Info,
    tenant: Any = None, grant_to: Any = None, missing: Missing = lambda: (),
) -> pb.UpsertDocumentsRequest:  # fmt: skip
    collection = rq.name_arg(name)
    try:
        docs = _matrices(documents)
        ws = _weights(weights, docs)
        ids_ = rq.ids_msg(ids)
        pays = rq.payloads_msg(payloads)
        owner, grants = tq.tenant_arg(tenant), tq.grant_to_arg(grant_to)
    except (Uncarried, InvalidArgument) as exc:
        # the engine's order: kind, tenant arguments, ids, documents (and weights), their
        # count, then payloads
        got = info()  # NotFound as embedded
        _check_kind(got, "upsert_documents")
        prejudge.owner(got, missing() if got.multi_tenant else (), tenant, grant_to)
        id_list = rules.prepare_ids(ids, got.id_type)
        prepared, _ = prepare_documents(documents, weights, got.dim, got.metric)
        check_document_count(len(prepared), len(id_list))
        if isinstance(exc, InvalidArgument):
            raise exc from None
        raise InvalidArgument("documents cannot be sent as given", field="documents") from None
    req = pb.UpsertDocumentsRequest(
        collection=collection, ids=ids_, documents=wire.documents_to_proto(docs, ws),
        payloads=pays,
    )  # fmt: skip
    req.tenant = owner
    req.grant_to.extend(grants)
    return req


def search_documents_request(
    name: Any, query: Any, k: Any, filter: Any, params: Any, with_payload: Any, info: Info,
    tenant: Any = None, tenants: Any = None,
) -> pb.SearchDocumentsRequest:  # fmt: skip
    collection = rq.name_arg(name)
    k_ = rq.judged(name, lambda: rq._int_arg(k, rules.check_k))
    flt = rq.judged(name, lambda: rq.json_arg(filter, "filter"), lambda: rules.check_k(k_))
    earlier: tuple[Callable[[], object], ...] = (
        lambda: rules.check_k(k_),
        lambda: filters.parse(filter),
    )
    rq.judged(name, lambda: rq.flags(("with_payload", with_payload)), *earlier)
    params_ = rq.judged(name, lambda: rq.json_arg(params, "params"), *earlier)
    try:
        single = isinstance(query, np.ndarray) and query.ndim == 2
        if not single and isinstance(query, (list, tuple)) and query:
            first = np.asarray(query[0]) if _numeric(query[0]) else None
            single = first is not None and first.ndim == 1
        qs = [_matrix(query)] if single else _matrices(query)
    except Uncarried:
        got = info()
        _check_kind(got, "search_documents")
        for check in earlier:
            check()
        if params is not None and not isinstance(params, dict):
            raise InvalidArgument("params must be a JSON object of search parameter -> value",
                                  field="params") from None  # fmt: skip
        from vecdb.index.multivector.params import MVSearchParams  # numba-free, but lazily

        MVSearchParams.parse(params)
        prepare_document_queries(query, got.dim, got.metric)
        raise InvalidArgument("query cannot be sent as given", field="query") from None
    options = pb.SearchOptions(k=k_, filter=flt, params=params_, with_payload=with_payload)
    req = pb.SearchDocumentsRequest(collection=collection, queries=wire.documents_to_proto(qs),
                                    options=options, single=single)  # fmt: skip
    req.tenant = tq.tenant_arg(tenant)
    req.tenants.extend(tq.tenants_arg(tenants))
    return req


def _numeric(value: Any) -> bool:
    try:
        return np.asarray(value).dtype.kind in "fiu"
    except (TypeError, ValueError):
        return False


def get_documents_request(
    name: Any, ids: Any, with_tokens: Any, with_payload: Any, tenant: Any = None
) -> pb.GetDocumentsRequest:
    collection = rq.name_arg(name)
    ids_ = rq.judged(name, lambda: rq.ids_msg(ids))
    rq.judged(name, lambda: rq.flags(("with_tokens", with_tokens), ("with_payload", with_payload)))
    return pb.GetDocumentsRequest(collection=collection, ids=ids_, with_tokens=with_tokens,
                                  with_payload=with_payload,
                                  tenant=tq.tenant_arg(tenant))  # fmt: skip


class LocalDocuments:
    """The embedded client's document calls."""

    _db: Database

    def upsert_documents(
        self,
        name: str,
        ids: Any,
        documents: Any,
        weights: Any = None,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        return int(self._db.upsert_documents(name, ids, documents, weights, payloads,
                                             tenant=tenant, grant_to=grant_to))  # fmt: skip

    def search_documents(
        self,
        name: str,
        query: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        tenant: str | None = None,
        tenants: list[str] | None = None,
        allow_partial: bool = False,
    ) -> SearchResult:
        del allow_partial  # one node has no shard to miss: never partial
        res: SearchResult = self._db.search_documents(
            name, query, k, filter=filter, params=params, with_payload=with_payload,
            tenant=tenant, tenants=tenants,
        )  # fmt: skip
        return res

    def get_documents(
        self,
        name: str,
        ids: Any,
        *,
        with_tokens: bool = True,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> list[Document]:
        out: list[Document] = self._db.get_documents(
            name, ids, with_tokens=with_tokens, with_payload=with_payload, tenant=tenant
        )
        return out


class RemoteDocuments:
    """The gRPC client's document calls (its `_call`, `_budget` and `get_collection`);
    big requests and answers in parts as `vecdb.client.splits` says."""

    _call: Callable[..., Any]
    _budget: splits.Budget
    get_collection: Callable[[str], CollectionInfo]
    _missing: Callable[[str, tuple[Any, ...]], set[str]]

    def upsert_documents(
        self,
        name: str,
        ids: Any,
        documents: Any,
        weights: Any = None,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        req = upsert_documents_request(name, ids, documents, weights, payloads,
                                       lambda: self.get_collection(name), tenant, grant_to,
                                       lambda: self._missing(name, (tenant, grant_to)))  # fmt: skip
        answers = splits.sent(lambda r: self._call("UpsertDocuments", r, idempotent=True),
                              req, splits.split_documents, self._budget)  # fmt: skip
        return sum(int(a.upserted) for a in answers)

    def search_documents(
        self,
        name: str,
        query: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        tenant: str | None = None,
        tenants: list[str] | None = None,
        allow_partial: bool = False,
    ) -> SearchResult:
        req = search_documents_request(name, query, k, filter, params, with_payload,
                                       lambda: self.get_collection(name),
                                       tenant, tenants)  # fmt: skip
        req.allow_partial = bool(allow_partial)
        results = splits.sent(
            lambda r: wire.search_documents_from_proto(
                self._call("SearchDocuments", r, idempotent=True)),
            req, splits.split_document_search, self._budget, splits.halve_document_search,
        )  # fmt: skip
        return splits.merge_results(results, splits.AVERAGED_DOC_STATS)

    def get_documents(
        self,
        name: str,
        ids: Any,
        *,
        with_tokens: bool = True,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> list[Document]:
        req = get_documents_request(name, ids, with_tokens, with_payload, tenant)
        answers = splits.fitted(lambda r: self._call("GetDocuments", r, idempotent=True), [req],
                                splits.halve_ids)  # fmt: skip
        return [d for a in answers for d in wire.get_documents_from_proto(a)]


class AsyncDocuments:
    """`vecdb.AsyncClient`'s document calls (its `_local`, `_local_call`, `_call`,
    `_budget` and `get_collection`)."""

    _local: Any
    _local_call: Callable[..., Awaitable[Any]]
    _call: Callable[..., Awaitable[Any]]
    _budget: splits.Budget
    get_collection: Callable[[str], Awaitable[CollectionInfo]]
    _missing: Callable[[str, tuple[Any, ...]], Awaitable[set[str]]]

    async def _with_info(self, name: str, make: Any, tenant_args: tuple[Any, ...] = ()) -> Any:
        """`make(info, missing)`; when it needs the collection's settings (a value the wire
        cannot carry is judged locally), they (and which tenants of `tenant_args` it does not
        have) are fetched first and `make` runs again."""

        class _Need(Exception):
            pass

        def ask() -> Any:
            raise _Need()

        try:
            return make(ask, ask)
        except _Need:
            got = await self.get_collection(name)
            gone = await self._missing(name, tenant_args) if got.multi_tenant else set()
            return make(lambda: got, lambda: gone)

    async def upsert_documents(
        self,
        name: str,
        ids: Any,
        documents: Any,
        weights: Any = None,
        payloads: Any = None,
        *,
        tenant: str | None = None,
        grant_to: list[str] | None = None,
    ) -> int:
        """See `vecdb.Client.upsert_documents`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "upsert_documents", name, ids, documents, weights, payloads, tenant=tenant,
                grant_to=grant_to,
            )  # fmt: skip
        req = await self._with_info(name, lambda info, missing: upsert_documents_request(
            name, ids, documents, weights, payloads, info, tenant, grant_to, missing),
            (tenant, grant_to))  # fmt: skip
        answers = await splits.asent(lambda r: self._call("UpsertDocuments", r, idempotent=True),
                                     req, splits.split_documents, self._budget)  # fmt: skip
        return sum(int(a.upserted) for a in answers)

    async def search_documents(
        self,
        name: str,
        query: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        tenant: str | None = None,
        tenants: list[str] | None = None,
        allow_partial: bool = False,
    ) -> SearchResult:
        """See `vecdb.Client.search_documents`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "search_documents", name, query, k, filter=filter, params=params,
                with_payload=with_payload, tenant=tenant, tenants=tenants,
            )  # fmt: skip
        req = await self._with_info(name, lambda info, _: search_documents_request(
            name, query, k, filter, params, with_payload, info, tenant, tenants))  # fmt: skip
        req.allow_partial = bool(allow_partial)

        async def one(part: pb.SearchDocumentsRequest) -> SearchResult:
            resp = await self._call("SearchDocuments", part, idempotent=True)
            return wire.search_documents_from_proto(resp)

        results = await splits.asent(one, req, splits.split_document_search, self._budget,
                                     splits.halve_document_search)  # fmt: skip
        return splits.merge_results(results, splits.AVERAGED_DOC_STATS)

    async def get_documents(
        self,
        name: str,
        ids: Any,
        *,
        with_tokens: bool = True,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> list[Document]:
        """See `vecdb.Client.get_documents`."""
        if self._local is not None:
            return await self._local_call(  # type: ignore[no-any-return]
                "get_documents", name, ids, with_tokens=with_tokens, with_payload=with_payload,
                tenant=tenant,
            )  # fmt: skip
        req = get_documents_request(name, ids, with_tokens, with_payload, tenant)
        answers = await splits.afitted(
            lambda r: self._call("GetDocuments", r, idempotent=True), [req], splits.halve_ids
        )
        return [d for a in answers for d in wire.get_documents_from_proto(a)]
