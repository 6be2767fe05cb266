"""One dense collection: the public face over its parts.

Owns nothing but delegation and reporting: writes go to `writer`, reads to `reader`, index
work to the database's maintenance worker; `info` and `stats` report what the parts hold
(points indexed and buffered, the index state and the last build) without taking a lock.
"""

from __future__ import annotations

from typing import Any

from vecdb.engine import filters, reader, tenant_ops, tenant_search, writer
from vecdb.engine import validate as v
from vecdb.engine.core import CollectionCore
from vecdb.engine.doc_writer import refuse_dense
from vecdb.engine.maintenance import MaintenanceWorker
from vecdb.engine.payload_index import IndexDef, check_key, check_type
from vecdb.engine.tenant_reads import read_scope
from vecdb.errors import AlreadyExists, InvalidArgument, NotFound
from vecdb.types import (
    CollectionInfo,
    CollectionKind,
    Id,
    IndexKind,
    Record,
    SearchResult,
    TenantInfo,
)


class Collection:
    """A named set of (id, vector, payload) points and the index over them."""

    def __init__(self, core: CollectionCore, worker: MaintenanceWorker) -> None:
        self.core = core  # the parts
        self.worker = worker  # the database's maintenance worker
        tenant_search.attach(core)  # tenant-aware search follows every change of a set

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def count(self) -> int:
        return self.core.points.count

    # -- writes ---------------------------------------------------------------------------

    def upsert(
        self,
        ids: object,
        vectors: object,
        payloads: object = None,
        tenant: object = None,
        grant_to: object = None,
    ) -> int:
        refuse_dense(self.core, "upsert", "upsert_documents")
        with self.core.use():
            return writer.upsert(
                self.core, ids, vectors, payloads, self.worker.notify, tenant, grant_to
            )

    def delete(self, ids: object = None, flt: object = None, tenant: object = None) -> int:
        """Delete by ids or by filter (exactly one of them)."""
        if (ids is None) == (flt is None):
            raise InvalidArgument("delete needs exactly one of ids and filter", field="filter")
        with self.core.use():
            if ids is not None:
                return writer.delete(self.core, ids, self.worker.notify, tenant)
            compiled = filters.parse(flt)
            assert compiled is not None
            return writer.delete_matching(self.core, compiled, self.worker.notify, tenant)

    def set_payload(self, ids: object, payload: object, merge: bool, tenant: object = None) -> int:
        with self.core.use():
            return writer.update_payloads(self.core, ids, payload, merge, tenant)

    def create_payload_index(self, key: object, index_type: object) -> None:
        """Build an index of a payload field (idempotent for the same type)."""
        key_ = check_key(key)
        type_ = check_type(index_type)
        with self.core.use():
            have = self.core.pindex.defs.get(key_)
            if have is not None and have.type != type_:
                raise AlreadyExists(
                    f"payload index on {key_!r} already exists with type {have.type!r} "
                    f"(asked {type_!r}); drop it first"
                )
            if have is None or not have.ready:
                writer.build_payload_index(self.core, IndexDef(key_, type_, ready=False))

    def finish_payload_indexes(self) -> None:
        """Build the indexes a crash interrupted (run on open)."""
        for d in list(self.core.pindex.defs.values()):
            if not d.ready:
                writer.build_payload_index(self.core, d)

    def drop_payload_index(self, key: object) -> None:
        key_ = check_key(key)
        with self.core.use():
            if key_ not in self.core.pindex.defs:
                raise NotFound(f"collection {self.name!r} has no payload index on {key_!r}")
            writer.drop_payload_index(self.core, key_)

    def optimize(self, wait: bool = True, timeout: float | None = None) -> None:
        """Ask the worker for every pending index job now (bulk build, buffer drain,
        maintenance); with `wait`, return once they are done."""
        self.worker.optimize(self.core, wait, timeout)

    # -- reads ----------------------------------------------------------------------------

    def get(self, ids: object, with_vectors: bool = True, tenant: object = None) -> list[Record]:
        if with_vectors is True:
            refuse_dense(self.core, "get with vectors", "get_documents")
        with self.core.use():
            scope = read_scope(self.core, tenant)
            return reader.get(self.core, ids, with_vectors, scope)

    def count_matching(self, flt: object = None, tenant: object = None) -> int:
        with self.core.use():
            scope = read_scope(self.core, tenant)
            return reader.count(self.core, flt, scope)

    def scroll(
        self,
        flt: object = None,
        limit: object = v.DEFAULT_SCROLL_LIMIT,
        offset: object = None,
        with_vectors: bool = False,
        with_payload: bool = True,
        tenant: object = None,
    ) -> tuple[list[Record], Id | None]:
        if with_vectors is True:
            refuse_dense(self.core, "scroll with vectors", "get_documents")
        with self.core.use():
            scope = read_scope(self.core, tenant)
            return reader.scroll(self.core, flt, limit, offset, with_vectors, with_payload, scope)

    def search(
        self,
        queries: object,
        k: int = 10,
        *,
        filter: object = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
        with_vectors: bool = False,
        tenant: object = None,
        tenants: object = None,
    ) -> SearchResult:
        refuse_dense(self.core, "search", "search_documents")
        with self.core.use():
            scope = read_scope(self.core, tenant, tenants)
            return reader.search(
                self.core, queries, k, filter, params, with_payload, with_vectors, scope
            )

    # -- tenants (a multi-tenant collection; `tenant_ops`) ---------------------------------

    def create_tenant(
        self, tenant: object, max_vectors: object = None, max_bytes: object = None
    ) -> TenantInfo:
        with self.core.use():
            return tenant_ops.create(self.core, tenant, max_vectors, max_bytes)

    def update_tenant(self, tenant: object, max_vectors: object, max_bytes: object) -> TenantInfo:
        with self.core.use():
            return tenant_ops.update(self.core, tenant, max_vectors, max_bytes)

    def get_tenant(self, tenant: object) -> TenantInfo:
        with self.core.use():
            return tenant_ops.get(self.core, tenant)

    def list_tenants(self, limit: object, offset: object) -> tuple[list[TenantInfo], str | None]:
        with self.core.use():
            return tenant_ops.list_page(self.core, limit, offset)

    def drop_tenant(self, tenant: object) -> None:
        with self.core.use():
            tenant_ops.drop(self.core, tenant)
        self.worker.notify(self.core)

    def change_access(self, ids: object, tenant: object, owner: object, on: bool) -> int:
        with self.core.use():
            return tenant_ops.change_access(self.core, ids, tenant, owner, on)

    # -- info -----------------------------------------------------------------------------

    def info(self) -> CollectionInfo:
        c, st = self.core, self.core.status
        return CollectionInfo(
            name=c.cfg.name,
            dim=c.cfg.dim,
            metric=c.metric,
            kind=CollectionKind(c.cfg.kind),
            id_type=c.id_type,
            index=IndexKind(c.cfg.index),
            count=tenant_ops.visible_count(c),
            multi_tenant=c.cfg.multi_tenant,
            index_params=dict(c.cfg.index_params),
            indexed=c.indexed(),
            buffered=c.buffered(),
            index_state=c.state(),
            index_progress=st.progress,
            last_build_seconds=st.last_build_seconds,
            payload_indexes=c.pindex.types(),
        )

    def summary(self) -> dict[str, Any]:
        """Cheap numbers for metrics scrapes: counts, buffer, index state (no index scan)."""
        c, st = self.core, self.core.status
        buf = c.buffer
        return {
            "count": c.points.count,
            "indexed": c.indexed(),
            "buffered": c.buffered(),
            "buffer_bytes": 0 if buf is None else buf.held_bytes(),
            "state": c.state(),
            "progress": st.progress,
            "last_build_seconds": st.last_build_seconds,
            "stalls": 0 if buf is None else buf.stats.stalls,
            "stall_seconds": 0.0 if buf is None else buf.stats.stall_seconds,
            "rejected": 0 if buf is None else buf.stats.rejected,
        }

    def stats(self) -> dict[str, Any]:
        c = self.core
        buf = c.buffer
        with c.io_lock:
            io = c.io.as_dict()
        out: dict[str, Any] = {
            "name": c.cfg.name,
            "count": c.points.count,
            "indexed": c.indexed(),
            "buffered": c.buffered(),
            "applied_seq": c.applied_seq,
            "index_status": {**c.status.as_dict(), "state": c.state()},
            "index": {**c.index.stats(), **io},
            "filter_cache": c.selector.cache_stats(),
        }
        if c.tenants is not None:
            out["tenants"] = tenant_ops.stats(c)
        if buf is not None:
            out["buffer"] = {
                "active": len(buf.active),
                "frozen": 0 if buf.frozen is None else len(buf.frozen),
                "bytes": buf.held_bytes(),  # what the cap counts (memory)
                "spilled_bytes": buf.spilled_bytes(),  # of those waiting, the bytes on file
                "stalls": buf.stats.stalls,
                "stall_seconds": round(buf.stats.stall_seconds, 3),
                "rejected": buf.stats.rejected,
            }
        return out

    def close(self) -> None:
        """Refuse new calls, wait for running ones, close the index (the worker must have
        stopped working on this collection)."""
        self.core.shut()
        self.core.index.close()
        if self.core.buffer is not None:  # (a spilled segment's file goes with it)
            self.core.buffer.close()
