"""Building tenants' clustered copies in the maintenance worker, off every query's thread.

Owns `due` and `run`, the worker's "tenant_clusters" job (one copy per job, so drains,
maintenance and closing interleave): the sets queries asked for (`ClusterCopies.wanted`: no
copy yet, or one drifted past `tenant_cluster_drift`, with the asking query's build
parameters) come first; then every active tenant that would take the clustered path at the
default parameters (more than `tenant_copy` bytes of plain copy and more than `tenant_share`
of the indexed points) and has no ready copy: its file is read back if it is whole
(`tenant_cluster_file`), else the copy is built from the stored vectors of the tenant's
slots (RocksDB and the access lists are the source of truth) and written. Only once the
collection has a built SPANN index (the clustered path is SPANN's). A build that fails is
logged and not tried again until the set changes. `dropped` removes the copies (and files)
of a tenant whose drop finished.

Disk: the first job after an open sweeps the copies' folder (files of sets naming a tenant
that is no longer active, e.g. dropped while the database was closed, leftover temporaries,
files not ours). The files together stay under `COPY_DISK_X_RAW` x the raw bytes of the
indexed vectors (at least `COPY_DISK_FLOOR`): a build that would pass it first removes copies
of multi-tenant sets (built because a query asked, the oldest first), and when that is not
enough it is not built (the set keeps the walk, exact all the same; logged, tried again when
the set changes). Copies of one tenant are never removed for room.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from vecdb.allocator import release_free_memory
from vecdb.engine import tenant_cluster_file as cfile
from vecdb.engine.core import CollectionCore
from vecdb.engine.tenant_cluster_build import build
from vecdb.engine.tenant_clusters import BuildParams, ClusterCopies, copies_of
from vecdb.engine.tenants import ACTIVE
from vecdb.index import room
from vecdb.index.spann.index import SpannIndex
from vecdb.index.tenancy import (
    DEFAULT_TENANT_CLUSTER_CLOSURE,
    DEFAULT_TENANT_CLUSTER_REPLICAS,
    DEFAULT_TENANT_CLUSTER_SIZE,
    DEFAULT_TENANT_COPY,
    DEFAULT_TENANT_SHARE,
)

log = logging.getLogger("vecdb.engine")
JOB = "tenant_clusters"
DEFAULTS: BuildParams = (
    DEFAULT_TENANT_CLUSTER_SIZE,
    DEFAULT_TENANT_CLUSTER_REPLICAS,
    DEFAULT_TENANT_CLUSTER_CLOSURE,
)


def _copies(coll: CollectionCore) -> ClusterCopies | None:
    if coll.tenants is None or not isinstance(coll.index, SpannIndex) or len(coll.index) == 0:
        return None
    from vecdb.engine.tenant_search import store_of  # (it imports the clustered copies)

    return copies_of(coll, store_of(coll))


# The copies' files may take this x the raw float32 bytes of the indexed vectors ...
COPY_DISK_X_RAW = 4.0
COPY_DISK_FLOOR = 64 * 2**20  # ... and at least this many bytes
_SWEPT: weakref.WeakSet[ClusterCopies] = weakref.WeakSet()  # swept since their open

Job = tuple[tuple[Any, ...], BuildParams | None]  # a set, and the parameters a query asked


def _next(coll: CollectionCore, cc: ClusterCopies, take: bool) -> Job | None:
    """The next set to build (asked: with parameters) or to load or build (None), taken
    out of `wanted` when `take`; None when there is none."""
    with cc.lock:
        if cc.wanted:
            return cc.wanted.popitem(last=False) if take else next(iter(cc.wanted.items()))
        ready, failed = set(cc.ready), set(cc.failed)
    if DEFAULT_TENANT_CLUSTER_SIZE <= 0:
        return None
    ts = coll.tenants
    assert ts is not None and isinstance(coll.index, SpannIndex)
    floor = DEFAULT_TENANT_SHARE * max(1, coll.index.state.n_live)
    row = 8 + 4 * coll.cfg.dim
    with ts.lock:
        large = [t.no for t in ts.by_no.values()
                 if t.state == ACTIVE and len(t.slots) > floor
                 and len(t.slots) * row > DEFAULT_TENANT_COPY]  # fmt: skip
    for no in sorted(large):
        key = ("c", no)
        if key not in ready and key not in failed:
            return key, None
    return None


def due(coll: CollectionCore) -> bool:
    """Whether a clustered copy of `coll` waits to be loaded or built."""
    cc = _copies(coll)
    if cc is None:
        return False
    return (cc.directory is not None and cc not in _SWEPT) or _next(
        coll, cc, take=False
    ) is not None


def run(coll: CollectionCore) -> None:
    """Load or build one clustered copy (see the module docstring)."""
    cc = _copies(coll)
    if cc is None:
        return
    _sweep(coll, cc)
    job = _next(coll, cc, take=True)
    if job is None:
        return
    key, asked = job
    if asked is None and cc.read(key, coll.cfg.dim) is not None:
        return  # its file was whole: read back, nothing to build
    try:
        _build(coll, cc, key, asked or DEFAULTS)
    except Exception:
        log.exception("clustered copy build failed", extra={"collection": coll.name, "set": key})
        with cc.lock:
            cc.failed.add(key)


def _build(coll: CollectionCore, cc: ClusterCopies, key: tuple[Any, ...], params: BuildParams) -> None:  # fmt: skip
    from vecdb.engine.tenant_search import stored_vectors

    ts = coll.tenants
    assert ts is not None
    nos = [int(t) for t in key[1:]]
    with ts.lock:
        if any(n not in ts.by_no or ts.by_no[n].state != ACTIVE for n in nos):
            return  # dropped meanwhile
    with cc.build_lock:
        slots = ts.slots_of(nos)
        if not _room(coll, cc, key, len(slots), params[1]):
            with cc.lock:
                cc.failed.add(key)
            return
        found, base = stored_vectors(coll, slots)
        size, replicas, closure = params
        cl = build(found, base, size, replicas, closure)
        del found, base
        cc.write(key, cl, params, coll.cfg.dim)
        del cl
    release_free_memory()  # k-means' blocks: not kept as heap by the allocator
    log.info("clustered copy built", extra={"collection": coll.name, "set": key})


def _sweep(coll: CollectionCore, cc: ClusterCopies) -> None:
    """Once per open: remove the copy files no active set owns (see the module docstring)."""
    if cc.directory is None or cc in _SWEPT or coll.tenants is None:
        return
    _SWEPT.add(cc)
    ts = coll.tenants
    with ts.lock:
        active = {t.no for t in ts.by_no.values() if t.state == ACTIVE}
    removed = 0
    with cc.build_lock:  # (no file is being written meanwhile)
        for path, _, _ in cfile.on_disk(cc.directory):
            key = None if path.name.endswith(cfile.TMP) else cfile.key_of(path)
            if (
                key is None
                or not active.issuperset(key)
                or cfile.path_for(cc.directory, key) != path
            ):
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("stale clustered copy files removed",
                 extra={"collection": coll.name, "files": removed})  # fmt: skip


def _room(coll: CollectionCore, cc: ClusterCopies, key: tuple[Any, ...], n: int, replicas: int) -> bool:  # fmt: skip
    """Whether the copy of `key` (`n` members) fits the disk budget, after removing copies
    of multi-tenant sets oldest first if needed (see the module docstring), and the disk
    keeps `room.HEADROOM` free after it."""
    if cc.directory is None:
        return True
    assert isinstance(coll.index, SpannIndex)
    dim = coll.cfg.dim
    budget = max(COPY_DISK_FLOOR, COPY_DISK_X_RAW * coll.index.state.n_live * 4 * dim)
    need = n * (replicas * (8 + 4 * dim) + 8)  # at most: rows, slots, members
    own = cc.path(key)
    files = [f for f in cfile.on_disk(cc.directory) if f[0] != own]
    used = sum(size for _, size, _ in files)
    for path, size, _ in files:
        if used + need <= budget:
            break
        got = cfile.key_of(path)
        if got is None or len(got) < 2:
            continue  # one tenant's copy: kept
        gone = ("c", *got)
        with cc.lock:
            cc.ready.pop(gone, None)
            cc.deltas.pop(gone, None)
            cc.failed.add(gone)  # not asked again until one of its tenants changes
        cfile.remove(path)
        used -= size
        log.info("clustered copy removed for room", extra={"collection": coll.name, "set": gone})
    if not room.fits(cc.directory, need):  # the writes' headroom is never taken
        log.warning("clustered copy not built: the disk lacks room for it",
                    extra={"collection": coll.name, "set": key, "bytes": need})  # fmt: skip
        return False
    if used + need <= budget:
        return True
    log.warning("clustered copy not built: its files would pass their disk budget",
                extra={"collection": coll.name, "set": key, "bytes": need,
                       "used": used, "budget": int(budget)})  # fmt: skip
    return False


def dropped(coll: CollectionCore, no: int) -> None:
    """Tenant `no` is gone (its drop finished): the copies of sets including it, and their
    files, go too (a tenant's number is never reused)."""
    if coll.tenants is None or not isinstance(coll.index, SpannIndex):
        return
    cc = _copies(coll) if len(coll.index) else None
    if cc is None:
        return
    with cc.lock:
        keys = {k for k in (*cc.ready, *cc.wanted, *cc.tried) if no in k[1:]} | {("c", no)}
        for k in keys:
            cc.ready.pop(k, None)
            cc.wanted.pop(k, None)
            cc.tried.discard(k)
            cc.deltas.pop(k, None)
    if cc.directory is not None:
        for k in keys:
            cfile.remove(cc.path(k))
