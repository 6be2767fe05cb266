"""What a key bound to tenants or collections may name inside a request, decided on the
decoded message, and which tenants a call acts for (quotas and per-tenant metrics).

Tenants travel in top-level fields of the request (the common convention): `tenant` and
`owner` name one tenant, `tenants` (several, a search over their union) and `grant_to` (extra
grantees of an upsert) name more; a streamed message carries its request in `batch`. The rules
for a tenant-scoped key, applied before the servicer sees the message:
- a request naming no tenant gets the key's tenant written into `tenant` (and `owner`) when the
  key has exactly one; with several it is INVALID_ARGUMENT (reason TENANT_REQUIRED): the
  request must say which, the server never picks one;
- every name in `tenant`, `owner`, `tenants[]`, `grant_to[]` must be in the key's set, else
  PERMISSION_DENIED (TENANT_NOT_ALLOWED) with a message built from the request alone, so it is
  the same whether that tenant exists or not;
- an RPC whose request has no tenant field acts on the whole collection or database (create /
  drop collection, snapshots, payload indexes, optimize, stats, key management) and is
  PERMISSION_DENIED (TENANT_SCOPED_KEY), except the collection-level reads in TENANT_NEUTRAL;
  ListTenants answers hold only the key's tenants, and their paging only its names
  (`scoped_call`);
- stored quotas (UpdateTenant, a CreateTenant setting `max_vectors` / `max_bytes`) are for
  keys not bound to tenants: a tenant's key must not raise its own limits;
- a TENANT_NEUTRAL call of a tenant-bound key acts for the key's tenants: `scope` returns
  them, so their request quotas and metrics count it.
Collection-scoped keys work the same way on `collection` (or `name` for the collection RPCs):
another collection is PERMISSION_DENIED (COLLECTION_NOT_ALLOWED) whether it exists or not,
ListCollections answers only the key's collections (one page, no token), and requests without
a collection are refused. The message tables
here are by field name, so new RPCs that follow the convention are covered without an edit, and
new RPCs that do not are refused to scoped keys (fail closed). Must not import the engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vecdb.errors import InvalidArgument, PermissionDenied, echo
from vecdb.server.auth import KEY_METHODS, Principal, Role

TENANT_FIELDS = ("tenant", "owner")  # string fields naming one tenant (injected when empty)
TENANT_LISTS = ("tenants", "grant_to")  # repeated string fields naming tenants (checked)
SELECTORS = ("tenant", "tenants")  # fields that choose what a call reads or writes as
CARRIERS = ("batch",)  # message fields holding the scoped request (UpsertStreamRequest.batch)
NAMED_BY_NAME = frozenset({"CreateCollection", "CollectionExists", "GetCollection",
                           "DropCollection"})  # their collection is in `name`  # fmt: skip
TENANT_NEUTRAL = frozenset({"CollectionExists", "ListCollections", "GetCollection",
                            "ListTenants"})  # no tenant field, allowed to tenant keys  # fmt: skip
DEFAULT_TENANT_PAGE = 100  # ListTenants without `limit` (the engine's default page)
QUOTA_FIELDS = ("max_vectors", "max_bytes")  # stored quotas: never set by a tenant's own key


def _fields(msg: Any) -> Any:
    return msg.DESCRIPTOR.fields_by_name


@functools.cache
def _carrier(kind: type) -> str | None:
    """The field of a message type holding the scoped request (None: the message itself):
    read once per type, every call asks (issue 12)."""
    fields = kind.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    if any(f in fields for f in (*TENANT_FIELDS, *TENANT_LISTS, "collection")):
        return None
    for name in CARRIERS:
        if name in fields and fields[name].message_type is not None:
            return name
    return None


@functools.cache
def _naming(kind: type) -> tuple[tuple[str, ...], bool]:
    """(the `tenant` / `owner` fields, whether there is a `tenants` list) of a message type."""
    fields = kind.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    return tuple(f for f in ("tenant", "owner") if f in fields), "tenants" in fields


def _target(msg: Any) -> Any:
    """The message holding the tenant fields: `msg` itself or its carried request."""
    name = _carrier(msg.__class__)
    return msg if name is None else getattr(msg, name)


def named_tenants(msg: Any) -> tuple[str, ...]:
    """The tenants `msg` acts for (`tenant`, `owner`, `tenants[]`; grantees are not), in
    order, without duplicates."""
    target = _target(msg)
    single, listed = _naming(target.__class__)
    out = [value for f in single if (value := getattr(target, f))]
    if listed and target.tenants:
        out.extend(target.tenants)
    return tuple(dict.fromkeys(out)) if out else ()


def scope(p: Principal, method: str, msg: Any) -> tuple[str, ...]:
    """Check `msg` against `p`, fill in the key's tenant where the request names none, and
    return the tenants the call acts for. Raises PermissionDenied / InvalidArgument."""
    if method in KEY_METHODS:  # their `tenants` describe a key, not the call
        if p.scoped:
            raise PermissionDenied(f"a key bound to tenants or collections may not call "
                                   f"{method}", reason="SCOPED_KEY")  # fmt: skip
        return ()
    if p.collections is not None:
        _check_collection(p, method, msg)
    if p.tenants is not None:
        _check_tenants(p, method, _target(msg))
        if method in TENANT_NEUTRAL:  # names no tenant: acts for (and is charged to) the key's
            return _key_tenants(p.tenants)
    return named_tenants(msg)


@functools.lru_cache(maxsize=1024)
def _key_tenants(tenants: frozenset[str]) -> tuple[str, ...]:
    """A tenant-bound key's tenants, in name order: who its calls naming no tenant act for,
    so its quotas and metrics count them (a key over its requests/s still listed collections
    at any rate)."""
    return tuple(sorted(tenants))


def _check_collection(p: Principal, method: str, msg: Any) -> None:
    assert p.collections is not None
    target = _target(msg)
    fields = _fields(target)
    field = "collection" if "collection" in fields else "name" if method in NAMED_BY_NAME else ""
    name = getattr(target, field) if field else ""
    if not name:
        if method == "ListCollections":
            return  # answered, then filtered
        raise PermissionDenied(f"a key bound to collections may not call {method} without a "
                               "collection", reason="COLLECTION_SCOPED_KEY")  # fmt: skip
    if name not in p.collections:
        raise PermissionDenied(f"this API key may not access collection {echo(name)}",
                               field=field, reason="COLLECTION_NOT_ALLOWED")  # fmt: skip


def _check_tenants(p: Principal, method: str, msg: Any) -> None:
    allowed = p.tenants
    assert allowed is not None
    fields = _fields(msg)
    if method == "UpdateTenant" or any(_has(msg, f) for f in QUOTA_FIELDS if f in fields):
        raise PermissionDenied(f"a key bound to tenants may not set tenant quotas ({method})",
                               reason="TENANT_SCOPED_KEY")  # fmt: skip
    present = [f for f in (*TENANT_FIELDS, *TENANT_LISTS) if f in fields]
    if not present:
        if method in TENANT_NEUTRAL:
            return
        raise PermissionDenied(f"a key bound to tenants may not call {method}: it acts on "
                               "the whole collection or database", reason="TENANT_SCOPED_KEY")  # fmt: skip
    # Pass 1: names the request gives must all be the key's.
    for name in TENANT_FIELDS:
        if name in fields and getattr(msg, name):
            _allowed(allowed, getattr(msg, name), name)
    for name in TENANT_LISTS:
        if name in fields:
            for i, value in enumerate(getattr(msg, name)):
                _allowed(allowed, value, f"{name}[{i}]")
    # Pass 2: a request that chooses no tenant acts as the key's only tenant.
    chosen = any(getattr(msg, f) for f in SELECTORS if f in fields)
    for name in TENANT_FIELDS:
        if name not in fields or getattr(msg, name) or (name == "tenant" and chosen):
            continue
        if len(allowed) != 1:
            raise InvalidArgument(
                f"this API key is bound to {len(allowed)} tenants: name one in `{name}`",
                field=name, reason="TENANT_REQUIRED",
            )  # fmt: skip
        setattr(msg, name, next(iter(allowed)))


def _allowed(allowed: frozenset[str], tenant: str, field: str) -> None:
    if tenant not in allowed:  # built from the request alone: existence does not show
        raise PermissionDenied(f"this API key may not access tenant {echo(tenant)}",
                               field=field, reason="TENANT_NOT_ALLOWED")  # fmt: skip


def scoped_call(p: Principal, method: str, request: Any, call: Callable[[Any], Any]) -> Any:
    """`call(request)`, except for the listings of a scoped key: their pages must not carry
    the names of others (ListTenants' `next_offset` and ListCollections' `next_page_token`
    are the next name on the server), so they are answered from the key's own names."""
    if method == "ListTenants" and p.tenants is not None:
        return _own_tenants(p.tenants, request, call)
    if method == "ListCollections" and p.collections is not None:
        return _own_collections(p.collections, request, call)
    return call(request)


def _own_tenants(allowed: frozenset[str], request: Any, call: Callable[[Any], Any]) -> Any:
    """A page of the key's tenants that exist: each is asked for by name (offset = the name,
    limit 1), so what the answer holds, its `next_offset` (the key's next name, or empty) and
    its size depend only on the key's own tenants. The request is first sent as given, so a
    bad collection, limit or offset is answered exactly as for anyone."""
    fields = _fields(request)
    first = call(request)
    if "offset" not in fields or "next_offset" not in _fields(first):
        return filter_response(Principal(Role.READ, tenants=allowed), "ListTenants", first)
    limit = request.limit if _has(request, "limit") else DEFAULT_TENANT_PAGE
    names = sorted(t for t in allowed if t >= request.offset)
    kept: list[Any] = []
    nxt = ""
    for i, name in enumerate(names):
        if len(kept) >= limit:
            nxt = names[i]
            break
        probe = type(request)()
        probe.CopyFrom(request)
        probe.offset, probe.limit = name, 1
        page = call(probe)
        if page.tenants and page.tenants[0].name == name:
            kept.append(page.tenants[0])
    out = type(first)()
    out.tenants.extend(kept)
    out.next_offset = nxt
    return out


def _own_collections(allowed: frozenset[str], request: Any, call: Callable[[Any], Any]) -> Any:
    """All the key's existing collections in one page (at most MAX_SCOPE_NAMES), gathered
    from every page of the server's listing; never a page token. A page token (which this
    answer never hands out) gets an empty page."""
    first = call(request)  # validates page_size and page_token as for anyone
    if "page_token" not in _fields(request) or "next_page_token" not in _fields(first):
        return filter_response(Principal(Role.READ, collections=allowed), "ListCollections",
                               first)  # fmt: skip
    out = type(first)()
    if request.page_token:
        return out
    page = first
    while True:
        out.collections.extend(c for c in page.collections if c.name in allowed)
        if not page.next_page_token:
            return out
        more = type(request)()
        more.CopyFrom(request)
        more.page_token = page.next_page_token
        page = call(more)


def _has(msg: Any, name: str) -> bool:
    """Whether an optional field is set (a plain proto3 scalar: whether it is non-zero)."""
    try:
        return bool(msg.HasField(name))
    except ValueError:
        return bool(getattr(msg, name))


def filter_response(p: Principal, method: str, response: Any) -> Any:
    """Drop from a listing what `p` may not see (ListTenants, ListCollections)."""
    if method == "ListTenants" and p.tenants is not None:
        _keep(response, p.tenants)
    elif method == "ListCollections" and p.collections is not None:
        _keep(response, p.collections)
    return response


def _keep(response: Any, allowed: frozenset[str]) -> None:
    """In every repeated message field of `response`, keep the entries whose `name` (or
    `tenant`) is allowed; entries with neither are dropped (fail closed)."""
    for field in response.DESCRIPTOR.fields:
        if field.message_type is None or not _is_repeated(field):
            continue
        entries = getattr(response, field.name)
        keep = []
        for entry in entries:
            efields = _fields(entry)
            key = "name" if "name" in efields else "tenant" if "tenant" in efields else None
            if key is not None and getattr(entry, key) in allowed:
                keep.append(entry)
        if len(keep) != len(entries):
            copies = [type(e)() for e in keep]
            for dst, src in zip(copies, keep, strict=True):
                dst.CopyFrom(src)
            del entries[:]
            entries.extend(copies)


def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.28
    if flag is not None:
        return bool(flag)
    return bool(field.label == field.LABEL_REPEATED)
