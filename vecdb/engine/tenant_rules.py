"""The rule book of tenant arguments: names, lists of names, and the tenant limits.

Pure functions and constants, no storage and no state, so the remote SDKs can judge a tenant
argument the wire cannot carry with the very check the engine makes (same message, field and
reason in both modes). The engine's tenant layer (`vecdb.engine.tenants`) applies the rules
that need stored state (does the tenant exist, is the collection multi-tenant).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from vecdb.errors import InvalidArgument, NotFound, echo

# Tenant names: identifiers safe in keys, logs and metric labels (a dot is allowed, unlike
# collection names, so "acme.eu" style names work).
TENANT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TENANT_NAME_LEN = 64

MAX_TENANTS = 100_000  # tenants of one collection, those being dropped included
MAX_GRANT_TO = 1_024  # tenants named by one upsert's grant_to
MAX_SEARCH_TENANTS = 1_024  # tenants named by one search's tenants=[...]
MAX_GRANTS_PER_POINT = 4_096  # tenants a point is granted to, its owner not counted
DEFAULT_LIST_LIMIT = 100  # tenants per list_tenants page
MAX_LIST_LIMIT = 10_000
DROP_BATCH = 2_048  # (tenant, point) rows one slice of a drop's cleanup handles
# Stored per-tenant quotas (`tenant_quota`); 0 means unlimited.
DEFAULT_MAX_VECTORS, MIN_MAX_VECTORS, MAX_MAX_VECTORS = 0, 0, 1 << 40  # points it may see
DEFAULT_MAX_BYTES, MIN_MAX_BYTES, MAX_MAX_BYTES = 0, 0, 1 << 50  # vector bytes it owns


def check_tenant_name(name: object, field: str = "tenant") -> str:
    """A tenant name: 1-64 characters of A-Z a-z 0-9 _ . -"""
    if not isinstance(name, str) or not TENANT_NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"{field} name {echo(name)} is invalid: use 1-{MAX_TENANT_NAME_LEN} characters "
            "from A-Z a-z 0-9 _ . -",
            field=field,
            reason="BAD_NAME",
        )
    return name


def not_multi_tenant(collection: str, what: str) -> InvalidArgument:
    """The error of a tenant argument (`what`) given to a collection without tenants."""
    return InvalidArgument(
        f"collection {collection!r} is not multi-tenant: {what} must not be given",
        field=what,
        reason="NOT_MULTI_TENANT",
    )


def tenant_not_found(collection: str, name: object, field: str = "tenant") -> NotFound:
    """The error for a tenant the collection does not have (or no longer: being dropped)."""
    return NotFound(f"tenant {name!r} does not exist in collection {collection!r}",
                    field=field, reason="TENANT_NOT_FOUND")  # fmt: skip


def grant_to_owner(field: str, name: str) -> InvalidArgument:
    """The error of an upsert granting its points to their owner."""
    return InvalidArgument(
        f"{field}: tenant {name!r} owns these points already; grant to other tenants",
        field=field,
        reason="GRANT_TO_OWNER",
    )


def both_given() -> InvalidArgument:
    """The error of a read naming `tenant` and `tenants` at once."""
    return InvalidArgument("give tenant or tenants, not both", field="tenants")


def grant_to_given(grant_to: object) -> bool:
    """Whether an upsert's `grant_to` names anyone: None and an empty list are none."""
    return grant_to is not None and not (isinstance(grant_to, (list, tuple)) and not grant_to)


def check_upsert_tenancy(
    collection: str, multi_tenant: bool, tenant: object, grant_to: object
) -> None:
    """An upsert's tenant arguments against the collection's mode, before anything else of
    the call is judged: none on a collection without tenants (an empty `grant_to` is none),
    an owner on a multi-tenant one."""
    if not multi_tenant:
        if tenant is not None:
            raise not_multi_tenant(collection, "tenant")
        if grant_to_given(grant_to):
            raise not_multi_tenant(collection, "grant_to")
    elif tenant is None:
        raise InvalidArgument(
            f"collection {collection!r} is multi-tenant: upsert needs tenant=<owner>",
            field="tenant",
            reason="MISSING_TENANT",
        )


def check_tenant_list(names: object, field: str, cap: int) -> list[str]:
    """A list of tenant names (duplicates removed, order kept); empty is refused."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise InvalidArgument(f"{field} must be an array of tenant names", field=field)
    if not names:
        raise InvalidArgument(f"{field} is empty: name at least one tenant", field=field,
                              reason="EMPTY")  # fmt: skip
    if len(names) > cap:
        raise InvalidArgument(f"{field} names {len(names)} tenants (max {cap})", field=field,
                              reason="TOO_MANY")  # fmt: skip
    out: dict[str, None] = {}
    for i, n in enumerate(names):
        out[check_tenant_name(n, f"{field}[{i}]")] = None
    return list(out)


def check_list_limit(limit: object) -> int:
    """The page size of list_tenants, 1..MAX_LIST_LIMIT."""
    n = None
    if isinstance(limit, (int, np.integer)) and not isinstance(limit, (bool, np.bool_)):
        n = int(limit)
    if n is None or not 1 <= n <= MAX_LIST_LIMIT:
        raise InvalidArgument(
            f"limit {echo(limit)} is out of range [1, {MAX_LIST_LIMIT}]",
            field="limit",
            reason="OUT_OF_RANGE",
        )
    return n


def check_quota(value: object, field: str, hi: int) -> int | None:
    """A stored quota (`max_vectors`, `max_bytes`): None (not given) or an integer in
    [0, hi], 0 meaning unlimited."""
    if value is None:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(
            f"{field} must be an integer (0: unlimited), got {echo(value)}",
            field=field,
            reason="BAD_TYPE",
        )
    if 0 <= int(value) <= hi:
        return int(value)
    raise InvalidArgument(
        f"{field} {echo(value)} is out of range [0, {hi}] (0: unlimited)",
        field=field,
        reason="OUT_OF_RANGE",
    )
