"""The Database's document calls (kind="multivector" collections), as a mixin.

Owns the public signatures of upsert_documents, search_documents and get_documents and the
rules create_collection applies to a multivector collection (`collection_index`); the work
is in `doc_writer`, `doc_reader` and `doc_jobs`. Kept apart from `database`, which is at its
size limit. Delete, count, scroll (without vectors), payload calls, filters, snapshots and the tenant
calls (create / drop tenants, grant, revoke, a read's `tenant`) are the dense ones: a
document is a point whose vector row holds its tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vecdb.engine import doc_reader, doc_writer
from vecdb.errors import InvalidArgument
from vecdb.types import CollectionKind, Document, IndexKind, Metric, SearchResult

if TYPE_CHECKING:
    from vecdb.engine.collection import Collection


def collection_index(kind: CollectionKind, index: str, metric: Metric) -> str:
    """The index a new collection of `kind` uses: "multivector" for documents (whose metric
    must be "cosine" or "ip"); dense collections keep theirs (not "multivector")."""
    if kind is CollectionKind.MULTIVECTOR:
        if index not in (IndexKind.SPANN.value, IndexKind.MULTIVECTOR.value):  # spann: default
            raise InvalidArgument(
                f"a multivector collection uses index='multivector', got {index!r}",
                field="index",
            )
        if metric is Metric.L2:
            raise InvalidArgument(
                "a multivector collection scores by MaxSim: metric must be 'cosine' or 'ip'",
                field="metric",
            )
        return IndexKind.MULTIVECTOR.value
    if index == IndexKind.MULTIVECTOR.value:
        raise InvalidArgument("index='multivector' needs kind='multivector'", field="index")
    return index


class DocumentsMixin:
    """upsert_documents / search_documents / get_documents of `Database`."""

    def _get(self, name: object) -> Collection:  # provided by Database
        raise NotImplementedError

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
        """Insert or replace documents: `documents[i]` an (n_i, dim) token matrix, `weights[i]`
        None or n_i per-token salience values, `payloads[i]` a JSON object or None; in a
        multi-tenant collection `tenant` (required) owns them and `grant_to` names more
        tenants that may see them."""
        coll = self._get(name)
        with coll.core.use():
            return doc_writer.upsert_documents(
                coll.core, ids, documents, weights, payloads, coll.worker.notify, tenant, grant_to
            )

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
    ) -> SearchResult:
        """Top-k documents by MaxSim for a query (m, dim) or a list of them; `distances` holds
        the negated MaxSim score (smaller is better). In a multi-tenant collection `tenant`
        (or `tenants`, their union) restricts it to the documents they may see."""
        coll = self._get(name)
        with coll.core.use():
            return doc_reader.search_documents(
                coll.core, query, k, filter, params, with_payload, tenant, tenants
            )

    def get_documents(
        self,
        name: str,
        ids: Any,
        *,
        with_tokens: bool = True,
        with_payload: bool = True,
        tenant: str | None = None,
    ) -> list[Document]:
        """The stored documents among `ids`, in request order (missing ids omitted; with a
        tenant, so are those it may not see)."""
        coll = self._get(name)
        with coll.core.use():
            return doc_reader.get_documents(coll.core, ids, with_tokens, with_payload, tenant)
