"""The read side of tenants: which `Scope` a get, scroll, count or search runs in.

Owns the rule of a read's tenant arguments: in a collection that is not multi-tenant none may
be given; `tenant` (one) or `tenants` (several, their union) restrict the read to the live
points those tenants may see, searched through `tenant_search.search_tenants`; neither means a
global (admin) read over every point, except those whose owner is being dropped (hidden from
the instant `drop_tenant` returns until its cleanup deletes them). A point outside the scope
looks exactly like a missing one.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import tenant_search
from vecdb.engine.core import CollectionCore
from vecdb.engine.reader import F32, I64, search_slots
from vecdb.engine.scope import Scope
from vecdb.engine.slot_set import LazyVisible
from vecdb.engine.tenant_access import resolve, resolve_list
from vecdb.engine.tenant_rules import MAX_SEARCH_TENANTS, both_given, not_multi_tenant
from vecdb.engine.tenants import TenantState
from vecdb.index.base import Visible


def read_scope(coll: CollectionCore, tenant: object, tenants: object = None) -> Scope | None:
    """The scope of a read with these tenant arguments (None: every live point)."""
    ts = coll.tenants
    if ts is None:
        if tenant is not None:
            raise not_multi_tenant(coll.name, "tenant")
        if tenants is not None:
            raise not_multi_tenant(coll.name, "tenants")
        return None
    if tenant is not None and tenants is not None:
        raise both_given()
    if tenant is not None:
        nos = [resolve(coll, tenant).no]
    elif tenants is not None:
        nos = sorted({t.no for t in resolve_list(coll, tenants, "tenants", MAX_SEARCH_TENANTS)})
    else:
        return _global(coll)
    version = tuple((n, ts.by_no[n].version) for n in nos)  # read before the slots
    slots, visible = _sets(coll, ts, nos, version)
    versions = ",".join(f"{n}.{v}" for n, v in version)

    def walk(q: F32, k: int, params: dict[str, Any] | None, vis: Visible, sub: I64) -> Any:
        # the scope's own set (an unfiltered search) may write the derived copy and
        # directory; a filtered subset of it only reads them
        whole = vis is visible
        return tenant_search.search_tenants(coll, q, k, params, nos, sub, vis, whole)

    return Scope.of(slots, visible, walk, f"t{versions}")


def _sets(
    coll: CollectionCore, ts: TenantState, nos: list[int], version: tuple[tuple[int, int], ...]
) -> tuple[I64, Visible]:
    """The tenants' slots and bitmap (`TenantState.visible`); for a set answered from its
    copy, the copy's slots when it was found exact at the set's `version` (read before),
    so the set is not read back (decoded) per query, and a bitmap made only if a search
    asks for one. (`nos` sorted: `version` is `visible`'s key.)"""
    bound = coll.points.next_slot
    slots = tenant_search.exact_copy(coll, tuple(nos), version)
    if slots is None:
        return ts.visible(nos, bound)
    return slots, LazyVisible(lambda: ts.visible(nos, bound)[1], None, version)


_GLOBAL: weakref.WeakKeyDictionary[CollectionCore, Scope] = weakref.WeakKeyDictionary()
_GLOBAL_LOCK = threading.Lock()


def _global(coll: CollectionCore) -> Scope | None:
    """Every live point but those whose owner is being dropped (None when there are none).
    Its sets (an O(points) mask and slot list) are made only when a read needs them (a
    search or a count; a get or a scroll tests the hidden set alone), and one scope per
    collection is kept while neither the points nor the hidden set change."""
    ts = coll.tenants
    assert ts is not None
    if not ts.any_hidden():
        return None
    key = f"g{coll.selector.version}.{ts.hidden_version}"
    with _GLOBAL_LOCK:
        hit = _GLOBAL.get(coll)
        if hit is not None and hit.key == key:
            return hit

    def make() -> tuple[I64, Visible]:
        hidden = ts.hidden_slots()
        alive = coll.points.alive()
        alive[hidden[hidden < len(alive)]] = False
        return np.flatnonzero(alive).astype(np.int64), Visible.from_mask(alive)

    def member(slots: I64) -> npt.NDArray[np.bool_]:
        # not hidden, and not deleted since (a dropped owner's points, deleted by the
        # cleanup and unhidden after, may still be in the RocksDB view of a get or scroll
        # that began before)
        shown = ~np.asarray(ts.is_hidden(slots.tolist()), np.bool_).reshape(slots.shape)
        return shown & coll.points.present(slots)

    def size() -> int:  # hidden slots are live ones (a delete takes both out at once)
        with ts.lock:
            return coll.points.count - ts.hidden_live()

    def walk(q: F32, k: int, params: dict[str, Any] | None, vis: Visible, sub: I64) -> Any:
        return search_slots(coll, q, k, params, vis)

    scope = Scope(make, walk, key, member, size)
    with _GLOBAL_LOCK:
        _GLOBAL[coll] = scope
    return scope
