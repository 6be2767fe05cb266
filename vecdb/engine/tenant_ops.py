"""Tenant operations of one collection: create, list, get, drop, grant and revoke.

Each change is one synced RocksDB batch under the collection's write lock (registry row,
access rows, op-log entry), applied to `TenantState` after the commit, after which
`tenant_search.changed` hears of the tenants whose sets moved (through
`TenantState.on_changed`). `drop_tenant` is instant: its batch only marks the tenant
dropping; from then on calls naming it get `NotFound`, it sees nothing, and the points it
owned are hidden everywhere, while `tenant_jobs` cleans up in the background.

`update` changes a tenant's stored quotas (`tenant_quota` checks them on every upsert and
grant). Grant and revoke name the grantee (`tenant`) and the caller (`owner`): with an owner, every
point must be one it owns (a point it cannot see is `NotFound`, one shared with it but owned
by another is `PermissionDenied`); without, the call is an admin's and may touch any point.
Both are idempotent and return how many points changed; a point whose owner is the grantee
is unchanged by a grant, and revoking an owner's own access is `InvalidArgument`. Unknown ids
are `NotFound` naming the first; nothing changes on any error.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from vecdb.engine import commit, tenant_quota
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.tenant_access import resolve, state_of, tenant_not_found
from vecdb.engine.tenant_rules import (
    MAX_GRANTS_PER_POINT,
    MAX_MAX_BYTES,
    MAX_MAX_VECTORS,
    MAX_TENANTS,
    check_list_limit,
    check_quota,
    check_tenant_name,
    grant_to_owner,
)
from vecdb.engine.tenants import ACTIVE, DROPPING, GRANTEE, Tenant, encode_acl
from vecdb.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    echo,
)
from vecdb.storage import kv as kvmod
from vecdb.types import CollectionKind, Id, TenantInfo

log = logging.getLogger("vecdb.engine")


def create(
    coll: CollectionCore, name: object, max_vectors: object = None, max_bytes: object = None
) -> TenantInfo:
    """Register a tenant with its stored quotas (None: unlimited; see `tenant_quota`)."""
    ts = state_of(coll)
    check_tenant_name(name)
    assert isinstance(name, str)
    mv = check_quota(max_vectors, "max_vectors", MAX_MAX_VECTORS) or 0
    mb = _bytes_quota(coll, max_bytes) or 0
    with coll.write_lock:
        have = ts.by_name.get(name)
        if have is not None and have.state == DROPPING:
            raise AlreadyExists(
                f"tenant {name!r} of collection {coll.name!r} is being dropped; it can be "
                "created again once its cleanup ends",
                reason="TENANT_DROPPING",
            )
        if have is not None:
            raise AlreadyExists(
                f"tenant {name!r} already exists in collection {coll.name!r}", field="tenant"
            )
        if len(ts.by_name) >= MAX_TENANTS:
            raise ResourceExhausted(
                f"collection {coll.name!r} has {len(ts.by_name)} tenants (max {MAX_TENANTS})",
                reason="TOO_MANY_TENANTS",
            )
        t = ts.new_tenant(name, mv, mb)
        batch = coll.kv.batch()
        ts.put_tenant(batch, t)
        ts.put_next_no(batch, t.no + 1)
        coll.seq.commit(batch)
        ts.apply_created(t)
    return ts.info(t)


def _bytes_quota(coll: CollectionCore, max_bytes: object) -> int | None:
    """`max_bytes` checked; refused (other than 0, unlimited) in a document collection,
    whose tenants' bytes are not counted (`TenantInfo.bytes` is 0 there)."""
    mb = check_quota(max_bytes, "max_bytes", MAX_MAX_BYTES)
    if mb and coll.cfg.kind == CollectionKind.MULTIVECTOR.value:
        raise InvalidArgument(
            f"collection {coll.name!r} holds documents, whose tenants' bytes are not counted: "
            "max_bytes is not supported there; use max_vectors (a number of documents)",
            field="max_bytes",
            reason="UNSUPPORTED_QUOTA",
        )
    return mb


def update(
    coll: CollectionCore, name: object, max_vectors: object = None, max_bytes: object = None
) -> TenantInfo:
    """Change a tenant's stored quotas (None: unchanged; 0: unlimited) in one synced batch.
    A limit below what the tenant holds already is accepted: it only stops its growth."""
    ts = state_of(coll)
    t = resolve(coll, name)
    mv = check_quota(max_vectors, "max_vectors", MAX_MAX_VECTORS)
    mb = _bytes_quota(coll, max_bytes)
    with coll.write_lock:
        if t.state != ACTIVE:
            raise tenant_not_found(coll, name)
        mv = t.max_vectors if mv is None else mv
        mb = t.max_bytes if mb is None else mb
        batch = coll.kv.batch()
        ts.put_tenant(batch, dataclasses.replace(t, max_vectors=mv, max_bytes=mb))
        coll.seq.commit(batch)
        with ts.lock:
            t.max_vectors, t.max_bytes = mv, mb
    return ts.info(t)


def get(coll: CollectionCore, name: object) -> TenantInfo:
    """A tenant's numbers; one being dropped is shown with state "dropping" and progress."""
    ts = state_of(coll)
    check_tenant_name(name)
    t = ts.by_name.get(str(name))
    if t is None:
        raise tenant_not_found(coll, name)
    return ts.info(t)


def list_page(
    coll: CollectionCore, limit: object, offset: object
) -> tuple[list[TenantInfo], str | None]:
    """Tenants in name order from `offset` on (inclusive), at most `limit`, and the name to
    pass as `offset` for the next page (None after the last)."""
    ts = state_of(coll)
    n = check_list_limit(limit)
    if offset is not None:
        check_tenant_name(offset, "offset")
    names = sorted(k for k in list(ts.by_name) if offset is None or k >= str(offset))
    page = [ts.by_name[k] for k in names[:n] if k in ts.by_name]
    return [ts.info(t) for t in page], (names[n] if len(names) > n else None)


def stats(coll: CollectionCore) -> dict[str, Any]:
    """The tenants part of `stats()`: counts, and each drop's cleanup progress."""
    ts = state_of(coll)
    dropping = ts.dropping()
    with ts.lock:
        hidden = ts.hidden_live()  # (as the counts count them)
    return {
        "tenants": len(ts.by_name) - len(dropping),
        "dropping": {t.name: ts.info(t).progress for t in dropping},
        "hidden_points": hidden,
    }


def visible_count(coll: CollectionCore) -> int:
    """Live points a global read sees: all of them but those whose owner is being dropped
    (`CollectionInfo.count`, like `count()`)."""
    ts = coll.tenants
    if ts is None:
        return coll.points.count
    with ts.lock:
        return max(0, coll.points.count - ts.hidden_live())


def drop(coll: CollectionCore, name: object) -> None:
    """Mark the tenant dropping in one synced batch; the worker cleans up."""
    ts = state_of(coll)
    t = resolve(coll, name)
    with coll.write_lock:
        if t.state != ACTIVE:
            raise tenant_not_found(coll, name)
        marked = Tenant(t.name, t.no, DROPPING, t.created, total=len(t.slots),
                        max_vectors=t.max_vectors, max_bytes=t.max_bytes)  # fmt: skip
        batch = coll.kv.batch()
        ts.put_tenant(batch, marked)
        coll.seq.commit(batch)
        t.total, t.done, t.cursor = marked.total, 0, 0
        ts.notify(ts.apply_dropping(t))
        coll.selector.bump()
    log.info(
        "tenant drop started",
        extra={"collection": coll.name, "tenant": t.name, "rows": t.total},
    )


def change_access(
    coll: CollectionCore, ids: object, tenant: object, owner: object, on: bool
) -> int:
    """Grant (`on`) or revoke tenant `tenant`'s access to points (see the module docstring)."""
    ts = state_of(coll)
    grantee = resolve(coll, tenant)
    caller = None if owner is None else resolve(coll, owner, "owner")
    if on and caller is grantee:
        raise grant_to_owner("tenant", grantee.name)
    id_list = v.prepare_ids(ids, coll.id_type)
    keys = [v.encode_id(i) for i in id_list]
    with coll.write_lock:
        looked = coll.points.lookup(keys)
        slots = [_found(coll, id_list, i, s) for i, s in enumerate(looked)]
        acls = ts.acls(slots)
        batch = coll.kv.batch()
        moved: list[int] = []
        for i, (slot, acl) in enumerate(zip(slots, acls, strict=True)):
            if acl is None:
                raise NotFound(f"ids[{i}] = {echo(id_list[i])} does not exist", field=f"ids[{i}]")
            own, grantees = acl
            _check_caller(coll, caller, id_list, i, slot, own)
            if own == grantee.no:
                if not on:
                    raise InvalidArgument(
                        f"ids[{i}] = {echo(id_list[i])} is owned by tenant {grantee.name!r}; "
                        "an owner's access cannot be revoked (delete the point instead)",
                        field=f"ids[{i}]",
                        reason="REVOKE_OWNER",
                    )
                continue
            if (grantee.no in grantees) == on:
                continue  # already so: idempotent
            after = set(grantees) | {grantee.no} if on else set(grantees) - {grantee.no}
            if len(after) > MAX_GRANTS_PER_POINT:
                raise InvalidArgument(
                    f"ids[{i}] would be granted to {len(after)} tenants "
                    f"(max {MAX_GRANTS_PER_POINT})",
                    field=f"ids[{i}]",
                    reason="TOO_MANY_GRANTS",
                )
            batch.put(kvmod.CF_META, ts.acl_key(slot), encode_acl(own, after))
            if on:
                batch.put(kvmod.CF_META, ts.tv_key(grantee.no, slot), GRANTEE)
            else:
                batch.delete(kvmod.CF_META, ts.tv_key(grantee.no, slot))
            moved.append(slot)
        if not moved:
            return 0
        if on:
            tenant_quota.check_grant(ts, grantee, len(moved))
        op = commit.encode_acl(moved, [grantee.no]) if coll.kind.persistent else None
        coll.seq.commit(batch, coll.prefix, op)
        changed = any([ts.apply_grant(s, grantee.no, on) for s in moved])
        if changed:
            ts.notify({grantee.no})
        coll.selector.bump()
    return len(moved)


def _found(coll: CollectionCore, ids: list[Id], i: int, slot: int | None) -> int:
    """The live slot of ids[i], or NotFound (a point whose owner is being dropped is gone)."""
    ts = coll.tenants
    assert ts is not None
    if slot is None or ts.is_hidden([slot])[0]:
        raise NotFound(f"ids[{i}] = {echo(ids[i])} does not exist", field=f"ids[{i}]")
    return slot


def _check_caller(
    coll: CollectionCore, caller: Tenant | None, ids: list[Any], i: int, slot: int, own: int
) -> None:
    """An owner-scoped call may touch only its own points; one it cannot see looks absent."""
    if caller is None or own == caller.no:
        return
    ts = coll.tenants
    assert ts is not None
    if not ts.sees([caller.no], [slot])[0]:
        raise NotFound(f"ids[{i}] = {echo(ids[i])} does not exist", field=f"ids[{i}]")
    raise PermissionDenied(
        f"ids[{i}] = {echo(ids[i])} is owned by another tenant; only its owner may grant "
        "or revoke access to it",
        field=f"ids[{i}]",
        reason="NOT_OWNER",
    )
