"""The engine's checks that come before an argument, for a remote call refused locally.

A remote call whose argument the wire cannot carry (a k that is not an integer, an empty
list of queries, a payload JSON cannot hold, ...) is judged in the SDK (`vecdb.client.requests`)
and never sent. The engine judges some things before that argument which need the collection:
that it exists, its kind, whether it has tenants, its id type and dimension. So on such a
refusal the client asks the server for the collection (one GetCollection, on the error path
only) and runs these checks with what it says, in the engine's order, before raising the
SDK's own error: both modes then name the same fault first. Whether a named tenant exists is
not asked (a call with that fault and an argument the wire cannot carry may still differ).
Pure functions of a `CollectionInfo` and the call's arguments, from the engine's rule books.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vecdb.engine import tenant_rules as tr
from vecdb.engine import validate as v
from vecdb.engine.doc_rules import dense_refused
from vecdb.types import CollectionInfo, CollectionKind

Before = Callable[[CollectionInfo], None]  # the checks of one call, given the collection


def dense(info: CollectionInfo, call: str, instead: str) -> None:
    """A dense call on a document collection is refused first."""
    if info.kind is CollectionKind.MULTIVECTOR:
        raise dense_refused(info.name, call, instead)


def read_scope(info: CollectionInfo, tenant: Any, tenants: Any = None) -> None:
    """A read's tenant arguments against the collection's mode (`tenant_reads.read_scope`)."""
    if not info.multi_tenant:
        if tenant is not None:
            raise tr.not_multi_tenant(info.name, "tenant")
        if tenants is not None:
            raise tr.not_multi_tenant(info.name, "tenants")
        return
    if tenant is not None and tenants is not None:
        raise tr.both_given()
    if tenant is not None:
        tr.check_tenant_name(tenant)
    elif tenants is not None:
        tr.check_tenant_list(tenants, "tenants", tr.MAX_SEARCH_TENANTS)


def read(info: CollectionInfo, tenant: Any, call: str, with_vectors: Any) -> None:
    """get / scroll: with vectors on a document collection refused, then the tenant."""
    if with_vectors is True:
        dense(info, f"{call} with vectors", "get_documents")
    read_scope(info, tenant)


def search(info: CollectionInfo, tenant: Any, tenants: Any) -> None:
    dense(info, "search", "search_documents")
    read_scope(info, tenant, tenants)


def upsert(info: CollectionInfo, ids: Any, vectors: Any, tenant: Any, grant_to: Any) -> None:
    """An upsert: its kind, its tenant arguments (`tenant_access.upsert_access`), then its
    ids, vectors and their count (`writer.check_batch`) before the payloads."""
    dense(info, "upsert", "upsert_documents")
    tr.check_upsert_tenancy(info.name, info.multi_tenant, tenant, grant_to)
    if info.multi_tenant:
        tr.check_tenant_name(tenant)
        if grant_to is not None and not (isinstance(grant_to, (list, tuple)) and not grant_to):
            tr.check_tenant_list(grant_to, "grant_to", tr.MAX_GRANT_TO)
    id_list = v.prepare_ids(ids, info.id_type)
    rows = v.prepare_vectors(vectors, info.dim, info.metric)
    v.check_row_count(rows.shape[0], len(id_list))


def payload_update(info: CollectionInfo, ids: Any, tenant: Any) -> None:
    """set_payload / overwrite_payload: the tenant (`tenant_access.scope`), then the ids
    (`writer.update_payloads`)."""
    if tenant is not None:
        if not info.multi_tenant:
            raise tr.not_multi_tenant(info.name, "tenant")
        tr.check_tenant_name(tenant)
    v.prepare_ids(ids, info.id_type)
