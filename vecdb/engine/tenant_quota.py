"""Stored per-tenant quotas: how many points a tenant may see, how many vector bytes it may own.

Owns the write-time check of `Tenant.max_vectors` (a bound on `TenantInfo.vectors`: the live
points it owns or was granted) and `Tenant.max_bytes` (a bound on `TenantInfo.bytes`: the
float32 vector bytes of the points it owns); 0 means unlimited. The limits live in the tenant's
registry row (set at `create_tenant`, changed by `update_tenant`, see `tenant_ops`), so they
hold in every mode and survive restarts. The checks run under the collection's write lock,
before the batch is built: an upsert or grant that would take a tenant past a limit is
`ResourceExhausted` naming the tenant, the count it would reach and the limit (reason
TENANT_VECTOR_QUOTA / TENANT_BYTES_QUOTA), and nothing is written. Only growth is refused: a
tenant above a limit lowered under it keeps working with what it has (replacing its own points,
revoking, deleting), it just cannot grow. Reads `TenantState`, writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from vecdb.engine.tenants import Tenant, TenantState
from vecdb.errors import ResourceExhausted

Acl = tuple[int, list[int]]


def upsert_gains(
    owner: int, grants: Sequence[int], old: dict[int, Acl], looked: Sequence[int | None]
) -> tuple[Counter[int], int]:
    """(points each tenant would newly see, points the owner would newly own) if an upsert
    by `owner` granting to `grants` replaced `looked` (each id's current slot or None; `old`
    their access lists). Replacing one of the owner's points changes neither count for it;
    its existing grantees keep seeing the point."""
    seen: Counter[int] = Counter()
    owned = 0
    for slot in looked:
        acl = None if slot is None else old.get(slot)
        if acl is not None and acl[0] == owner:
            for g in grants:
                if g not in acl[1]:
                    seen[g] += 1
            continue
        owned += 1
        seen[owner] += 1
        for g in grants:
            seen[g] += 1
    return seen, owned


def check_upsert(
    ts: TenantState, owner: Tenant, grants: Sequence[int], old: dict[int, Acl],
    looked: Sequence[int | None],
) -> None:  # fmt: skip
    """Refuse an upsert taking the owner or a grantee past a quota (caller holds the lock)."""
    seen, owned = upsert_gains(owner.no, grants, old, looked)
    for no, gain in seen.items():
        t = ts.by_no[no]
        check_vectors(t, len(t.slots) + gain, gain, "tenant" if t is owner else "grant_to")
    check_bytes(ts, owner, owned)


def check_grant(ts: TenantState, grantee: Tenant, gain: int) -> None:
    """Refuse a grant of `gain` more points to `grantee` past its vector quota."""
    check_vectors(grantee, len(grantee.slots) + gain, gain, "tenant")


def check_vectors(t: Tenant, after: int, gain: int, field: str) -> None:
    if t.max_vectors and gain > 0 and after > t.max_vectors:
        raise ResourceExhausted(
            f"tenant {t.name!r} would hold {after:,} vectors, over its "
            f"{t.max_vectors:,}-vector quota",
            field=field,
            reason="TENANT_VECTOR_QUOTA",
        )


def check_bytes(ts: TenantState, owner: Tenant, gain: int) -> None:
    after = ts.vector_bytes(owner.owned + gain)
    if owner.max_bytes and gain > 0 and after > owner.max_bytes:
        raise ResourceExhausted(
            f"tenant {owner.name!r} would own {after:,} bytes of vectors, over its "
            f"{owner.max_bytes:,}-byte quota",
            field="tenant",
            reason="TENANT_BYTES_QUOTA",
        )
