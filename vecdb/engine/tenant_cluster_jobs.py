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
"""

from __future__ import annotations

import logging
from typing import Any

from vecdb.engine import tenant_cluster_file as cfile
from vecdb.engine.core import CollectionCore
from vecdb.engine.memory import release_free_memory
from vecdb.engine.tenant_cluster_build import build
from vecdb.engine.tenant_clusters import BuildParams, ClusterCopies, copies_of
from vecdb.engine.tenants import ACTIVE
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
    return cc is not None and _next(coll, cc, take=False) is not None


def run(coll: CollectionCore) -> None:
    """Load or build one clustered copy (see the module docstring)."""
    cc = _copies(coll)
    if cc is None:
        return
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
        found, base = stored_vectors(coll, ts.slots_of(nos))
        size, replicas, closure = params
        cl = build(found, base, size, replicas, closure)
        del found, base
        cc.write(key, cl, params, coll.cfg.dim)
        del cl
    release_free_memory()  # k-means' blocks: not kept as heap by the allocator
    log.info("clustered copy built", extra={"collection": coll.name, "set": key})


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
