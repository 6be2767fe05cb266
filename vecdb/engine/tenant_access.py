"""Who may write what in a multi-tenant collection: the checks and access rows of the write path.

Owns the rules the writer applies under its lock: resolving tenant arguments (the collection
must be multi-tenant, the name valid, the tenant active), the ownership of existing points
(an upsert may replace only points its tenant owns; a delete or payload update by a tenant
touches only points it sees and refuses those it sees but does not own), and the access rows
of written and removed points, put into the writer's batch and applied to `TenantState` after
the commit. A re-upsert by the owner keeps the point's existing grants and adds `grant_to`.
Upserts past a tenant's stored quota are refused here too (`tenant_quota`).
No tenant on a delete or payload update means an admin call over every point. Points whose
owner is being dropped count as absent everywhere. Imports no read path (the writer imports
this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import tenant_quota
from vecdb.engine.core import CollectionCore
from vecdb.engine.tenant_rules import (
    MAX_GRANT_TO,
    MAX_GRANTS_PER_POINT,
    check_tenant_list,
    check_tenant_name,
    check_upsert_tenancy,
    grant_to_given,
    grant_to_owner,
    not_multi_tenant,
)
from vecdb.engine.tenant_rules import tenant_not_found as rules_not_found
from vecdb.engine.tenants import Tenant, TenantState
from vecdb.errors import InvalidArgument, NotFound, PermissionDenied, echo
from vecdb.storage.kv import Batch

Acl = tuple[int, list[int]]


def state_of(coll: CollectionCore, what: str = "tenant") -> TenantState:
    """The collection's tenants, or InvalidArgument naming `what` if it has none."""
    if coll.tenants is None:
        raise not_multi_tenant(coll.name, what)
    return coll.tenants


def resolve(coll: CollectionCore, name: object, field: str = "tenant") -> Tenant:
    """The active tenant `name` (`NotFound` if it does not exist or is being dropped)."""
    ts = state_of(coll, field.split("[")[0])
    check_tenant_name(name, field)
    assert isinstance(name, str)
    t = ts.active(name)
    if t is None:
        raise tenant_not_found(coll, name, field)
    return t


def tenant_not_found(coll: CollectionCore, name: object, field: str = "tenant") -> NotFound:
    """The error for a tenant the collection does not have (or no longer: being dropped)."""
    return rules_not_found(coll.name, name, field)


def resolve_list(coll: CollectionCore, names: object, field: str, cap: int) -> list[Tenant]:
    state_of(coll, field)
    checked = check_tenant_list(names, field, cap)
    return [resolve(coll, n, f"{field}[{i}]") for i, n in enumerate(checked)]


def scope(coll: CollectionCore, tenant: object) -> Tenant | None:
    """The tenant a call is scoped to (None: no tenant given, an admin or global call)."""
    if tenant is None:
        return None
    return resolve(coll, tenant)


@dataclass
class UpsertAccess:
    """An upsert's owner and extra grantees, and the access lists of the slots it replaces."""

    state: TenantState
    owner: Tenant
    grants: list[int]  # numbers of the tenants in grant_to
    old: dict[int, Acl] = field(default_factory=dict)  # replaced slot -> its access list
    carried: dict[int, list[int]] = field(default_factory=dict)  # new slot -> grantees

    def check(self, ids: list[Any], looked: list[int | None]) -> None:
        """Refuse (nothing written) ids owned by another active tenant and upserts past a
        tenant's quota (`tenant_quota`); note the access lists of the replaced slots (caller
        holds the write lock)."""
        pos = [(i, s) for i, s in enumerate(looked) if s is not None]
        acls = self.state.acls([s for _, s in pos])
        for (i, slot), acl in zip(pos, acls, strict=True):
            if acl is None:
                continue
            self.old[slot] = acl
            owner = self.state.by_no.get(acl[0])
            if acl[0] != self.owner.no and owner is not None and owner.state == "active":
                raise PermissionDenied(
                    f"ids[{i}] = {echo(ids[i])} is owned by another tenant; only its owner "
                    "may replace it",
                    field=f"ids[{i}]",
                    reason="NOT_OWNER",
                )
        tenant_quota.check_upsert(self.state, self.owner, self.grants, self.old, looked)

    def put(self, batch: Batch, slot: int, replaced: int | None, pos: int) -> None:
        """The access rows of the new slot `slot` (replacing `replaced`, if any)."""
        grantees = set(self.grants)
        acl = None if replaced is None else self.old.get(replaced)
        if acl is not None and acl[0] == self.owner.no:  # the owner's grants stay
            grantees.update(n for n in acl[1] if _active(self.state, n))
        grantees.discard(self.owner.no)
        if len(grantees) > MAX_GRANTS_PER_POINT:
            raise InvalidArgument(
                f"ids[{pos}] would be granted to {len(grantees)} tenants "
                f"(max {MAX_GRANTS_PER_POINT})",
                field=f"ids[{pos}]",
                reason="TOO_MANY_GRANTS",
            )
        self.carried[slot] = sorted(grantees)
        self.state.put_acl(batch, slot, self.owner.no, grantees)

    def drop_old(self, batch: Batch) -> None:
        for slot, (owner, grantees) in self.old.items():
            self.state.delete_acl(batch, slot, owner, grantees)

    def apply(self) -> set[int]:
        """After the commit: the memory image follows; returns the tenants that changed."""
        changed: set[int] = set()
        for slot, (owner, grantees) in self.old.items():
            changed |= self.state.apply_removed(slot, owner, grantees)
        for slot, grantees in self.carried.items():
            changed |= self.state.apply_added(slot, self.owner.no, grantees)
        return changed


def _active(ts: TenantState, no: int) -> bool:
    t = ts.by_no.get(no)
    return t is not None and t.state == "active"


def upsert_access(coll: CollectionCore, tenant: object, grant_to: object) -> UpsertAccess | None:
    """Check an upsert's tenant arguments (before anything else is written)."""
    check_upsert_tenancy(coll.name, coll.tenants is not None, tenant, grant_to)
    if coll.tenants is None:
        return None
    owner = resolve(coll, tenant)
    grants: list[int] = []
    if grant_to_given(grant_to):
        for i, t in enumerate(resolve_list(coll, grant_to, "grant_to", MAX_GRANT_TO)):
            if t is owner:
                raise grant_to_owner(f"grant_to[{i}]", t.name)
            grants.append(t.no)
    return UpsertAccess(coll.tenants, owner, grants)


def owned_found(
    coll: CollectionCore, tenant: Tenant | None, ids: list[Any], found: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Of (request position, slot) pairs looked up under the write lock, those a delete or
    payload update acts on: with a tenant, the points it sees (others count as absent), all
    of which it must own (else `PermissionDenied`, nothing changes); without, every point
    whose owner is not being dropped."""
    ts = coll.tenants
    if ts is None:
        return found
    slots = [s for _, s in found]
    hidden = ts.is_hidden(slots)
    found = [p for p, h in zip(found, hidden, strict=True) if not h]
    if tenant is None:
        return found
    sees = ts.sees([tenant.no], [s for _, s in found])
    found = [p for p, ok in zip(found, sees, strict=True) if ok]
    owners = ts.owners([s for _, s in found])
    for (i, _slot), owner in zip(found, owners, strict=True):
        if owner != tenant.no:
            raise PermissionDenied(
                f"ids[{i}] = {echo(ids[i])} is shared with tenant {tenant.name!r} but owned "
                "by another tenant; only its owner may change or delete it",
                field=f"ids[{i}]",
                reason="NOT_OWNER",
            )
    return found


def owned_mask(coll: CollectionCore, tenant: Tenant | None, picked: npt.NDArray[np.int64]) -> Any:
    """Of slots a delete by filter picked, those it may delete: the tenant's own points (a
    tenant's delete by filter leaves the points only granted to it alone), or, without a
    tenant, those whose owner is not being dropped."""
    ts = coll.tenants
    if ts is None or len(picked) == 0:
        return picked
    if tenant is not None:
        owners = np.asarray(ts.owners(picked.tolist()), np.int64)
        return picked[owners == tenant.no]
    hidden = np.asarray(ts.is_hidden(picked.tolist()), np.bool_)
    return picked[~hidden]


def removed_acls(coll: CollectionCore, batch: Batch, slots: list[int]) -> dict[int, Acl]:
    """The access rows of slots whose points a delete removes go into its batch; returns
    their access lists for `apply_removed`."""
    ts = coll.tenants
    if ts is None or not slots:
        return {}
    out: dict[int, Acl] = {}
    for slot, acl in zip(slots, ts.acls(slots), strict=True):
        if acl is not None:
            ts.delete_acl(batch, slot, *acl)
            out[slot] = acl
    return out


def apply_removed(coll: CollectionCore, acls: dict[int, Acl]) -> None:
    ts = coll.tenants
    if ts is None or not acls:
        return
    changed: set[int] = set()
    for slot, (owner, grantees) in acls.items():  # (hidden ones: `writer._delete_found`)
        changed |= ts.apply_removed(slot, owner, grantees, unhide=False)
    ts.notify(changed)
