"""What one open collection holds, shared by its write path, read path and the worker.

Owns the collection's configuration (stored as JSON in the meta column family), its parts
(point table, index, write buffer), its locks and the status of its index work. The phases
live beside it and import it, never each other: `writer` (upsert, delete), `reader` (search,
get), `maintenance` (the worker's jobs), `recovery` (open and replay); `collection` puts the
public face on top.

Locks: `write_lock` orders a collection's writes (lookup, commit, apply to memory) and is
what the worker takes for the instant it freezes the buffer, so an applied sequence number
never splits a request. Searches take no collection lock: the index and the buffer segments
are safe to search while they change (see `vecdb.index.base`).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vecdb.engine.buffer import WriteBuffer
from vecdb.engine.commit import Sequencer
from vecdb.engine.payload_index import PayloadIndexes
from vecdb.engine.points import PointTable
from vecdb.engine.query_stats import Totals
from vecdb.engine.selection import Selector
from vecdb.engine.settings import BUILD_DISK_X, EngineSettings
from vecdb.engine.tenants import TenantState
from vecdb.errors import NotFound, Unavailable, VecdbError
from vecdb.index import room
from vecdb.index.base import Spill, StagesBuildInput, VectorIndex, Vectors
from vecdb.index.registry import KindSpec
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV
from vecdb.types import CollectionKind, IdType, Metric


@dataclass
class CollectionConfig:
    """What `create_collection` fixed; stored as JSON in the meta column family."""

    name: str
    cid: int
    dim: int
    metric: str
    id_type: str = "int"
    index: str = "flat"
    index_params: dict[str, Any] = field(default_factory=dict)
    kind: str = "dense"
    multi_tenant: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CollectionConfig:
        return cls(**json.loads(raw))


# Index states reported to users (get_collection, stats, inspect, metrics):
STATE_READY = "ready"  # everything is indexed and no work is pending
STATE_IDLE = "idle"  # writes wait in the exact buffer for a trigger (size, quiet time, optimize)
STATE_BUILDING = "building"  # the first (bulk) build runs
STATE_INDEXING = "indexing"  # buffered writes are being applied to the built index
STATE_MAINTAINING = "maintaining"  # splits, merges, clean-up, compaction
STATE_ERROR = "error"  # the last job failed; it is retried (see `error`)


@dataclass
class IndexStatus:
    """The worker's view of one collection's index work; read by info/stats/metrics."""

    state: str = STATE_READY  # one of the STATE_ values
    phase: str = ""  # what the current job is doing ("assign", "write", ...)
    progress: float = 1.0  # fraction of the current job done, 0..1
    job_started: float = 0.0  # time.time() when the current job began
    last_build_seconds: float | None = None  # duration of the last bulk build
    last_build_vectors: int = 0  # vectors in the last bulk build
    last_job_seconds: float | None = None  # duration of the last drain or build
    builds: int = 0  # bulk builds done by this process
    drains: int = 0  # buffer drains done by this process
    maintenance_pending: bool = False  # the index reported work left after its last slice
    error: str = ""  # message of the last failed job, "" if none
    degraded: str = ""  # why the index was quarantined ("" if not): exact until rebuilt
    quarantine: str = ""  # a quarantine the worker must do (set by any thread)
    retry_at: float = 0.0  # monotonic time before which a failed job is not retried
    last_write: float = field(default_factory=time.monotonic)  # monotonic time of last write
    optimize_requested: int = 0  # tickets: optimize calls so far ...
    optimize_done: int = 0  # ... and how many of them the worker has completed
    optimize_seq: int = 0  # writes up to this sequence must be indexed for them
    optimize_error: VecdbError | None = None  # why the tickets up to ...
    optimize_failed_ticket: int = 0  # ... this one ended in an error

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k not in _PRIVATE + _REQUESTS}
        out["optimize_pending"] = self.optimize_requested > self.optimize_done
        return out


_PRIVATE = ("retry_at", "last_write", "optimize_error", "optimize_failed_ticket", "optimize_seq")
_REQUESTS = ("quarantine",)  # requests to the worker, not states to report


class CollectionCore:
    """The parts of one collection (see the module docstring)."""

    def __init__(
        self,
        cfg: CollectionConfig,
        kv: KV,
        seq: Sequencer,
        index: VectorIndex,
        kind: KindSpec,
        directory: Path,
        settings: EngineSettings,
    ) -> None:
        self.cfg = cfg  # the fixed configuration
        self.kv = kv  # the database's key-value store
        self.seq = seq  # orders and commits every write
        self.index = index  # the main index (flat in memory, or a disk index)
        self.kind = kind  # the index kind's registry entry
        self.directory = directory  # where the index keeps its files
        self.settings = settings  # buffer caps and worker settings of the database
        self.metric = Metric(cfg.metric)
        self.id_type = IdType(cfg.id_type)
        self.prefix = kvmod.cid_prefix(cfg.cid)  # key prefix of this collection
        self.points = PointTable(kv, self.prefix, self.id_type, cfg.dim)
        self.pindex = PayloadIndexes(kv, self.prefix)  # payload indexes (filters)
        self.pindex.load()
        self.selector = Selector(self.points, self.pindex)  # filter -> matching slots
        # tenants and access lists of a multi-tenant collection (loaded by recovery); a point
        # counts its float32 vector's bytes, a document none (its size is its tokens': not
        # counted, so TenantInfo.bytes is 0 and `tenant_ops` refuses max_bytes there)
        documents = cfg.kind == CollectionKind.MULTIVECTOR.value
        self.tenants: TenantState | None = (
            TenantState(kv, self.prefix, 0 if documents else 4 * cfg.dim)
            if cfg.multi_tenant else None
        )  # fmt: skip
        self.buffer: WriteBuffer | None = (
            self._new_buffer() if kind.buffered else None
        )  # recent writes searched exactly until the worker applies them to the index
        self.write_lock = threading.Lock()  # orders this collection's writes
        # held while the worker runs a job of this collection: a drop, snapshot or restore
        # of it waits for that job, not for another collection's (one lock for all made a
        # snapshot of a 1-point collection wait 8.4 s for another's bulk build)
        self.job_lock = threading.Lock()
        self.status = IndexStatus()  # index work, maintained by the worker
        self.status_cond = threading.Condition()  # optimize(wait=True) callers wait here
        self.applied_seq = 0  # last sequence whose writes are durable inside the index
        self.io = Totals()  # cumulative index reads of searches (and the call's, if asked)
        self.io_lock = threading.Lock()
        self.closing = False  # set by drop/close: new calls fail, the worker abandons its job
        self.dropped = False  # closing because it is dropped: calls get NotFound
        self.index_epoch = 0  # moves when a rebuild hands the index's points to the buffer
        self._users = 0  # calls inside the collection now
        self._mutex = threading.Lock()  # guards `_users` and `closing` (every call takes it
        # twice: a plain lock, not the Condition's Python-level enter and exit)
        self._gate = threading.Condition(self._mutex)  # close waits here for them to leave

    def use(self) -> _InUse:
        """Hold the collection open for one call (`Unavailable` once it is closing): a
        context manager (a small class, not a generator: it is entered on every call)."""
        return _InUse(self)

    def enter(self) -> None:
        """Count one call in (`use` without the context manager)."""
        with self._mutex:
            if self.closing:
                if self.dropped:  # gone for good: nothing to retry
                    raise NotFound(f"collection {self.cfg.name!r} does not exist (dropped)")
                raise Unavailable(f"collection {self.cfg.name!r} is closed")
            self._users += 1

    def leave(self) -> None:
        """Count one call out (after `enter`); wakes `shut` when the last one leaves."""
        with self._mutex:
            self._users -= 1
            if self._users == 0 and self.closing:  # only `shut` waits, once closing is set
                self._gate.notify_all()  # (`_gate`'s lock is `_mutex`, held here)

    def shut(self, dropped: bool = False) -> None:
        """Refuse new calls (`NotFound` if `dropped`, else `Unavailable`) and wait for the
        running ones to leave."""
        with self._gate:
            self.closing, self.dropped = True, dropped
            while self._users:
                self._gate.wait()

    @property
    def name(self) -> str:
        return self.cfg.name

    def _new_buffer(self) -> WriteBuffer:
        """The write buffer; with an index that stages build input on its disk (SPANN) and
        the auto first-build size, its rows past `spill_from_bytes` spill to files there
        until the first build (`spill_build_bytes`, PARAMS.md `bulk_build_bytes`)."""
        cfg, s = self.cfg, self.settings
        limit = s.spill_build_bytes
        if not (limit and self.kind.persistent and isinstance(self.index, StagesBuildInput)):
            return WriteBuffer(cfg.dim, cfg.metric)
        core = weakref.ref(self)  # the buffer must not keep its collection alive
        return WriteBuffer(cfg.dim, cfg.metric, lambda: _BufferSpill(core), s.spill_from_bytes,
                           limit)  # fmt: skip

    def _spill_index(self, rows: int) -> StagesBuildInput | None:
        """The index to spill `rows` more buffered rows to, while it was never built and
        its disk has BUILD_DISK_X x the buffered bytes free (else None: memory)."""
        index = self.index
        if len(index) or not isinstance(index, StagesBuildInput) or self.buffer is None:
            return None
        total = self.buffer.active.live_bytes + 4 * rows * self.cfg.dim
        if not room.fits(self.directory, int(BUILD_DISK_X * total)):
            return None
        return index

    def indexed(self) -> int:
        """Live points inside the index (the rest wait in the buffer)."""
        return len(self.index)

    def buffered(self) -> int:
        return 0 if self.buffer is None else max(0, self.points.count - len(self.index))

    def state(self) -> str:
        """The index state to report: the running job's, else idle (writes wait in the
        buffer or maintenance is pending) or ready."""
        st = self.status
        if st.state in (STATE_BUILDING, STATE_INDEXING, STATE_MAINTAINING, STATE_ERROR):
            return st.state
        waiting = self.buffer is not None and len(self.buffer) > 0
        if self.cfg.kind == "multivector":  # documents wait for a (new) codebook instead
            waiting = self.index.mv.needs_training()  # type: ignore[attr-defined]
        return STATE_IDLE if waiting or st.maintenance_pending else STATE_READY


class _InUse:
    """`CollectionCore.use()`: `enter` on entry, `leave` on exit (exceptions propagate)."""

    __slots__ = ("_core",)

    def __init__(self, core: CollectionCore) -> None:
        self._core = core

    def __enter__(self) -> None:
        self._core.enter()

    def __exit__(self, *exc: object) -> None:
        self._core.leave()


class _BufferSpill:
    """One write buffer segment's `Spill`: chunks while its collection's index may take them
    (`CollectionCore._spill_index`), on a file that index gives at the first chunk
    (`StagesBuildInput.spill_file`)."""

    def __init__(self, core: weakref.ref[CollectionCore]) -> None:
        self._core = core
        self._file: Spill | None = None

    def rows(self, start: int, count: int) -> Vectors | None:
        core = self._core()
        index = None if core is None else core._spill_index(count)
        if index is None:
            return None
        if self._file is None:
            self._file = index.spill_file()
        return self._file.rows(start, count)

    def gather(self, n: int, pieces: list[tuple[int, Vectors]]) -> Vectors | None:
        return None if self._file is None else self._file.gather(n, pieces)

    def restart(self) -> None:
        if self._file is not None:
            self._file.restart()
