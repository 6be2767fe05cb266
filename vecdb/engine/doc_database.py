"""The Database's document calls (kind="multivector" collections), as a mixin.

Owns the public signatures of upsert_documents, search_documents and get_documents and the
rules create_collection applies to a multivector collection (`collection_index`); the work
is in `doc_writer`, `doc_reader` and `doc_jobs`. Kept apart from `database`, which is at its
size limit. Delete, count, scroll (without vectors), payload calls, filters and snapshots are
the dense ones: a document is a point whose vector row holds its tokens.
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
    ) -> int:
        """Insert or replace documents: `documents[i]` an (n_i, dim) token matrix, `weights[i]`
        None or n_i per-token salience values, `payloads[i]` a JSON object or None."""
        coll = self._get(name)
        with coll.core.use():
            return doc_writer.upsert_documents(
                coll.core, ids, documents, weights, payloads, coll.worker.notify
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
    ) -> SearchResult:
        """Top-k documents by MaxSim for a query (m, dim) or a list of them; `distances` holds
        the negated MaxSim score (smaller is better)."""
        coll = self._get(name)
        with coll.core.use():
            return doc_reader.search_documents(coll.core, query, k, filter, params, with_payload)

    def get_documents(
        self, name: str, ids: Any, *, with_tokens: bool = True, with_payload: bool = True
    ) -> list[Document]:
        """The stored documents among `ids`, in request order (missing ids omitted)."""
        coll = self._get(name)
        with coll.core.use():
            return doc_reader.get_documents(coll.core, ids, with_tokens, with_payload)
