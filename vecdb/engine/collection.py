"""One dense collection: the public face over its parts.

Owns nothing but delegation and reporting: writes go to `writer`, reads to `reader`, index
work to the database's maintenance worker; `info` and `stats` report what the parts hold
(points indexed and buffered, the index state and the last build) without taking a lock.
"""

from __future__ import annotations

from typing import Any

from vecdb.engine import reader, writer
from vecdb.engine.core import CollectionCore
from vecdb.engine.maintenance import MaintenanceWorker
from vecdb.types import CollectionInfo, CollectionKind, IndexKind, Record, SearchResult


class Collection:
    """A named set of (id, vector, payload) points and the index over them."""

    def __init__(self, core: CollectionCore, worker: MaintenanceWorker) -> None:
        self.core = core  # the parts
        self.worker = worker  # the database's maintenance worker

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def count(self) -> int:
        return self.core.points.count

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, ids: object, vectors: object, payloads: object = None) -> int:
        with self.core.use():
            return writer.upsert(self.core, ids, vectors, payloads, self.worker.notify)

    def delete(self, ids: object) -> int:
        with self.core.use():
            return writer.delete(self.core, ids, self.worker.notify)

    def optimize(self, wait: bool = True, timeout: float | None = None) -> None:
        """Ask the worker for every pending index job now (bulk build, buffer drain,
        maintenance); with `wait`, return once they are done."""
        self.worker.optimize(self.core, wait, timeout)

    # -- reads ----------------------------------------------------------------------------

    def get(self, ids: object) -> list[Record]:
        with self.core.use():
            return reader.get(self.core, ids)

    def search(
        self,
        queries: object,
        k: int = 10,
        *,
        filter: object = None,
        params: dict[str, Any] | None = None,
        with_payload: bool = False,
    ) -> SearchResult:
        with self.core.use():
            return reader.search(self.core, queries, k, filter, params, with_payload)

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
            count=c.points.count,
            multi_tenant=c.cfg.multi_tenant,
            index_params=dict(c.cfg.index_params),
            indexed=c.indexed(),
            buffered=c.buffered(),
            index_state=c.state(),
            index_progress=st.progress,
            last_build_seconds=st.last_build_seconds,
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
        }
        if buf is not None:
            out["buffer"] = {
                "active": len(buf.active),
                "frozen": 0 if buf.frozen is None else len(buf.frozen),
                "bytes": buf.held_bytes(),
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
