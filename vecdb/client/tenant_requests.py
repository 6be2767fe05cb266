"""Request builders of the tenant arguments and tenant RPCs, shared by the sync and async
remote clients.

On the wire an empty `tenant` means "none named", so a tenant argument that is not a
non-empty string (None excepted) is judged here by the engine's own rule book
(`vecdb.engine.tenant_rules`), with the message, field and reason an embedded call gives;
any other text travels as given and the server judges it. The same holds for `tenants` (an
empty list is refused here, as embedded) and `grant_to` (an empty list means none). Stored
quotas (`max_vectors`, `max_bytes`) travel when they are int64 values (the server judges the
range); anything else is judged here after the names, in the engine's order.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vecdb.client import requests as rq
from vecdb.engine import tenant_rules as rules
from vecdb.rpc.v1 import vecdb_pb2 as pb


def tenant_arg(tenant: Any, field: str = "tenant") -> str:
    """A tenant name for the wire ("" for None)."""
    if tenant is None:
        return ""
    if isinstance(tenant, str) and tenant:
        return tenant
    rules.check_tenant_name(tenant, field)  # raises: "" and non-text are never valid
    raise AssertionError("unreachable")


def tenants_arg(tenants: Any) -> list[str]:
    """A search's `tenants` for the wire ([] for None; an empty list is refused)."""
    if tenants is None:
        return []
    return rules.check_tenant_list(tenants, "tenants", rules.MAX_SEARCH_TENANTS)


def grant_to_arg(grant_to: Any) -> list[str]:
    if not rules.grant_to_given(grant_to):
        return []
    return rules.check_tenant_list(grant_to, "grant_to", rules.MAX_GRANT_TO)


def scoped(req: Any, tenant: Any) -> Any:
    """`req` with its tenant field set."""
    req.tenant = tenant_arg(tenant)
    return req


def tenant_request(message: Any, name: Any, tenant: Any) -> Any:
    """CreateTenant / GetTenant / DropTenant: the collection, then the tenant."""
    return message(collection=rq.name_arg(name), tenant=tenant_arg(tenant))


def list_request(name: Any, limit: Any, offset: Any) -> pb.ListTenantsRequest:
    collection = rq.name_arg(name)
    n = rules.check_list_limit(limit)
    req = pb.ListTenantsRequest(collection=collection, limit=n)
    if offset is not None:
        req.offset = tenant_arg(offset, "offset")
    return req


def grant_request(name: Any, ids: Any, tenant: Any, owner: Any) -> pb.GrantRequest:
    collection = rq.name_arg(name)
    grantee = tenant_arg(tenant)
    if not grantee:
        rules.check_tenant_name(tenant)  # a grant names its grantee
    caller = tenant_arg(owner, "owner")
    ids_ = rq.judged(name, lambda: rq.ids_msg(ids))
    return pb.GrantRequest(collection=collection, ids=ids_, tenant=grantee, owner=caller)


_QUOTAS = (("max_vectors", rules.MAX_MAX_VECTORS), ("max_bytes", rules.MAX_MAX_BYTES))


def quota_request(message: Any, name: Any, tenant: Any, **quotas: Any) -> Any:
    """CreateTenant / UpdateTenant: the collection, the tenant, the quotas that are given."""
    req = tenant_request(message, name, tenant)
    for field, hi in _QUOTAS:
        value = quotas.get(field)
        if value is None:
            continue
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if not (ok and -(1 << 63) <= int(value) < (1 << 63)):
            rq.judged(name, functools.partial(_uncarried, tenant, value, field, hi))
        setattr(req, field, int(value))
    return req


def _uncarried(tenant: Any, value: Any, field: str, hi: int) -> None:
    """The engine's checks before and of a quota the wire cannot carry (raises)."""
    rules.check_tenant_name(tenant)
    rules.check_quota(value, field, hi)
    raise AssertionError("unreachable")
