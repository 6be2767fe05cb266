"""The engine's checks that come before an argument, for a remote call refused locally.

A remote call whose argument the wire cannot carry (a k that is not an integer, an empty
list of queries, a payload JSON cannot hold, ...) is judged in the SDK (`vecdb.client.requests`)
and never sent. The engine judges some things before that argument which need the collection:
that it exists, its kind, whether it has tenants, its id type and dimension. So on such a
refusal the client asks the server for the collection (one GetCollection, on the error path
only) and runs these checks with what it says, in the engine's order, before raising the
SDK's own error: both modes then name the same fault first. In a multi-tenant collection the
tenants the call names are asked for too (`missing`: those that do not exist or are being
dropped; at most `MAX_ASKED` names, the rest taken as existing). Pure functions of a
`CollectionInfo`, `missing` and the call's arguments, from the engine's rule books.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from vecdb.engine import tenant_rules as tr
from vecdb.engine import validate as v
from vecdb.engine.doc_rules import dense_refused
from vecdb.types import CollectionInfo, CollectionKind

Before = Callable[[CollectionInfo, Collection[str]], None]  # one call's checks
MAX_ASKED = 16  # tenants a refused call's judging asks the server about


def named(*args: Any) -> list[str]:
    """The tenant names a call's tenant arguments give (a name, or lists of names)."""
    out: list[str] = []
    for a in args:
        if isinstance(a, str):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(n for n in a if isinstance(n, str))
    return list(dict.fromkeys(out))[:MAX_ASKED]


def dense(info: CollectionInfo, call: str, instead: str) -> None:
    """A dense call on a document collection is refused first."""
    if info.kind is CollectionKind.MULTIVECTOR:
        raise dense_refused(info.name, call, instead)


def tenant(
    info: CollectionInfo, missing: Collection[str], name: Any, field: str = "tenant"
) -> None:
    """A named tenant of a multi-tenant collection (`tenant_access.resolve`)."""
    tr.check_tenant_name(name, field)
    if name in missing:
        raise tr.tenant_not_found(info.name, name, field)


def tenant_list(
    info: CollectionInfo, missing: Collection[str], names: Any, field: str, cap: int
) -> list[str]:
    """A list of named tenants (`tenant_access.resolve_list`)."""
    checked = tr.check_tenant_list(names, field, cap)
    for i, n in enumerate(checked):
        tenant(info, missing, n, f"{field}[{i}]")
    return checked


def read_scope(info: CollectionInfo, missing: Collection[str], tenant_: Any,
               tenants: Any = None) -> None:  # fmt: skip
    """A read's tenant arguments (`tenant_reads.read_scope`)."""
    if not info.multi_tenant:
        if tenant_ is not None:
            raise tr.not_multi_tenant(info.name, "tenant")
        if tenants is not None:
            raise tr.not_multi_tenant(info.name, "tenants")
        return
    if tenant_ is not None and tenants is not None:
        raise tr.both_given()
    if tenant_ is not None:
        tenant(info, missing, tenant_)
    elif tenants is not None:
        tenant_list(info, missing, tenants, "tenants", tr.MAX_SEARCH_TENANTS)


def read(info: CollectionInfo, missing: Collection[str], tenant_: Any, call: str,
         with_vectors: Any) -> None:  # fmt: skip
    """get / scroll: with vectors on a document collection refused, then the tenant."""
    if with_vectors is True:
        dense(info, f"{call} with vectors", "get_documents")
    read_scope(info, missing, tenant_)


def search(info: CollectionInfo, missing: Collection[str], tenant_: Any, tenants: Any) -> None:
    dense(info, "search", "search_documents")
    read_scope(info, missing, tenant_, tenants)


def owner(info: CollectionInfo, missing: Collection[str], tenant_: Any, grant_to: Any) -> None:
    """An upsert's tenant arguments (`tenant_access.upsert_access`)."""
    tr.check_upsert_tenancy(info.name, info.multi_tenant, tenant_, grant_to)
    if not info.multi_tenant:
        return
    tenant(info, missing, tenant_)
    if tr.grant_to_given(grant_to):
        for i, n in enumerate(tenant_list(info, missing, grant_to, "grant_to", tr.MAX_GRANT_TO)):
            if n == tenant_:
                raise tr.grant_to_owner(f"grant_to[{i}]", n)


def upsert(info: CollectionInfo, missing: Collection[str], ids: Any, vectors: Any,
           tenant_: Any, grant_to: Any) -> None:  # fmt: skip
    """An upsert: its kind, its tenant arguments, then its ids, vectors and their count
    (`writer.check_batch`) before the payloads."""
    dense(info, "upsert", "upsert_documents")
    owner(info, missing, tenant_, grant_to)
    id_list = v.prepare_ids(ids, info.id_type)
    rows = v.prepare_vectors(vectors, info.dim, info.metric)
    v.check_row_count(rows.shape[0], len(id_list))


def payload_update(info: CollectionInfo, missing: Collection[str], ids: Any,
                   tenant_: Any) -> None:  # fmt: skip
    """set_payload / overwrite_payload: the tenant (`tenant_access.scope`), then the ids
    (`writer.update_payloads`)."""
    if tenant_ is not None:
        if not info.multi_tenant:
            raise tr.not_multi_tenant(info.name, "tenant")
        tenant(info, missing, tenant_)
    v.prepare_ids(ids, info.id_type)
