"""The background cleanup of dropped tenants, run by the maintenance worker in slices.

Owns `drop_slice`: for the first tenant being dropped, up to `DROP_BATCH` of its `tv:` rows
(in slot order, from its cursor) are handled under the collection's write lock, writes
interleaving between slices: points it was only granted lose that grant (one batch with an
"acl" op-log entry), and points it owns are deleted whole, grants to other tenants included
(deleting is for the owner; a second batch, like a delete by id, which also moves the cursor
and the progress in the tenant's row). Handled rows are gone from RocksDB, so a slice cut
short by kill -9 is simply done again after the next open (`TenantState.load` restores the
dropping state and the hidden points from RocksDB); when the tenant has no rows left its
registry row is deleted and its name is free again. Progress is in `get_tenant`, `stats`
and a log line per slice.
"""

from __future__ import annotations

import logging

from vecdb.engine import commit, tenant_cluster_jobs, writer
from vecdb.engine.core import CollectionCore
from vecdb.engine.tenant_rules import DROP_BATCH
from vecdb.engine.tenants import OWNER, Tenant, encode_acl
from vecdb.index.spann.killpoints import kill_point
from vecdb.storage import kv as kvmod

log = logging.getLogger("vecdb.engine")


def drop_due(coll: CollectionCore) -> bool:
    """Whether a dropped tenant of `coll` waits for its cleanup."""
    return coll.tenants is not None and bool(coll.tenants.dropping())


def drop_slice(coll: CollectionCore) -> None:
    """One bounded slice of the cleanup of the first tenant being dropped."""
    ts = coll.tenants
    assert ts is not None
    todo = sorted(ts.dropping(), key=lambda t: t.no)
    if not todo:
        return
    t = todo[0]
    with coll.write_lock:
        start = ts.tv_key(t.no, t.cursor)
        end = kvmod.prefix_end(ts.tv_prefix(t.no))
        rows: list[tuple[int, bytes]] = []
        head = len(ts.tv_prefix(t.no))
        for key, value in coll.kv.scan_range(kvmod.CF_META, start, end):
            rows.append((kvmod.read_u64(key, head), value))
            if len(rows) == DROP_BATCH:
                break
        if not rows:
            _finish(coll, t)
            return
        # Pass 1: grants of other tenants' points to the dropped one are revoked.
        granted = [s for s, kind in rows if kind != OWNER]
        if granted:
            batch = coll.kv.batch()
            for slot, acl in zip(granted, ts.acls(granted), strict=True):
                batch.delete(kvmod.CF_META, ts.tv_key(t.no, slot))
                if acl is not None:
                    owner, grantees = acl
                    batch.put(
                        kvmod.CF_META, ts.acl_key(slot), encode_acl(owner, set(grantees) - {t.no})
                    )
            op = commit.encode_acl(granted, [t.no]) if coll.kind.persistent else None
            coll.seq.commit(batch, coll.prefix, op)
            kill_point("tenant_drop_granted")
        # Pass 2: the points it owned are deleted; the cursor and progress move with them.
        owned = [s for s, kind in rows if kind == OWNER]
        t.done += len(rows)
        t.cursor = rows[-1][0] + 1
        batch = coll.kv.batch()
        ts.put_tenant(batch, t)
        ids = coll.kv.multi_get(kvmod.CF_SLOTS, [coll.points.slot_key(s) for s in owned])
        found = [(key, s) for key, s in zip(ids, owned, strict=True) if key is not None]
        if found:
            writer.delete_found(coll, [(k, s) for k, s in found if k is not None], batch)
        else:
            coll.seq.commit(batch)
        coll.selector.bump()
    kill_point("tenant_drop_slice")
    log.info(
        "tenant drop progress",
        extra={"collection": coll.name, "tenant": t.name, "done": t.done, "total": t.total},
    )


def _finish(coll: CollectionCore, t: Tenant) -> None:
    """No rows left: the registry row goes and the name is free (caller holds the lock)."""
    ts = coll.tenants
    assert ts is not None
    batch = coll.kv.batch()
    batch.delete(kvmod.CF_META, ts.tenant_key(t.name))
    coll.seq.commit(batch)
    ts.apply_forgotten(t)
    tenant_cluster_jobs.dropped(coll, t.no)
    log.info("tenant drop finished", extra={"collection": coll.name, "tenant": t.name})
