"""Rebuilding a collection's `TenantState` from RocksDB on open.

Owns the one pass over the access rows (`acl:`) that makes the memory image: per active tenant the sorted slots it may see, and the slots hidden because their
owner is being dropped. Rows go into flat machine arrays, never into per-row Python objects
that outlive the row (580,000 ints held in lists left ~11 MiB of fragmented interpreter
arenas behind), and become compact `SlotSet`s in a few numpy passes.
"""

from __future__ import annotations

from array import array

import numpy as np

from vecdb.engine.slot_set import SlotSet, compact
from vecdb.engine.tenants import _U32, ACTIVE, I64, Tenant, TenantState, decode_acl, owner_dtype
from vecdb.storage import kv as kvmod


def load_state(ts: TenantState, next_slot: int) -> None:
    """`ts`'s registry and every access list from RocksDB (on open)."""
    head = kvmod.META_TENANT + ts.prefix
    for key, raw in ts.kv.scan_prefix(kvmod.CF_META, head):
        t = Tenant.from_row(key[len(head) :].decode(), raw)
        ts.by_name[t.name] = t
        ts.by_no[t.no] = t
    raw_next = ts.kv.get(kvmod.CF_META, kvmod.META_TENANT_NEXT + ts.prefix)
    ts.next_no = 1 if raw_next is None else kvmod.read_u64(raw_next)
    slots, owners, g_slots, g_nos = array("q"), array("q"), array("q"), array("q")
    acl_head = kvmod.META_ACL + ts.prefix
    for key, raw in ts.kv.scan_prefix(kvmod.CF_META, acl_head):
        slot = kvmod.read_u64(key, len(acl_head))
        slots.append(slot)
        if len(raw) == 4:
            owners.append(_U32.unpack(raw)[0])
            continue
        owner, grantees = decode_acl(raw)
        owners.append(owner)
        for no in grantees:
            g_slots.append(slot)
            g_nos.append(no)
    index_rows(ts, np.frombuffer(slots, np.int64), np.frombuffer(owners, np.int64),
               np.frombuffer(g_slots, np.int64), np.frombuffer(g_nos, np.int64))  # fmt: skip


def index_rows(ts: TenantState, slots: I64, owners: I64, g_slots: I64, g_nos: I64) -> None:
    """The memory image from the access rows: `slots` ascending with their `owners`,
    and the (slot, grantee) pairs (slots ascending)."""
    owner_of = np.zeros(int(slots[-1]) + 1 if len(slots) else 0, owner_dtype(ts.next_no))
    owner_of[slots] = owners  # (for this pass only: owners are not kept in memory)
    top = max(ts.by_no, default=0) + 1
    live = np.zeros(top, np.bool_)  # tenant number -> active
    for no, t in ts.by_no.items():
        live[no] = t.state == ACTIVE
    shown = (owners < top) & live[np.minimum(owners, top - 1)]
    owned = np.bincount(owners[shown], minlength=top)
    for no, t in ts.by_no.items():
        t.owned = int(owned[no])
    g_owner = owner_of[g_slots].astype(np.int64)
    del owner_of
    g_keep = (g_nos < top) & live[np.minimum(g_nos, top - 1)]
    g_keep &= (g_owner < top) & live[np.minimum(g_owner, top - 1)]
    nos = np.concatenate([owners[shown], g_nos[g_keep]])
    members = np.concatenate([slots[shown], g_slots[g_keep]])
    order = np.lexsort((members, nos))
    nos, members = nos[order], compact(members[order])
    bounds = np.searchsorted(nos, np.arange(top + 1))
    for no, t in ts.by_no.items():
        if t.state == ACTIVE:  # (`Packed` copies its slice: it pins no larger array)
            t.slots = SlotSet(members[bounds[no] : bounds[no + 1]])
    ts.hidden = SlotSet(compact(slots[~shown]))
