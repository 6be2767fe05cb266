"""The maintenance worker: one thread per database that moves buffered writes into indexes.

Owns every piece of index work that used to run inside writes: the first (bulk) build of a
collection, draining its write buffer into the built index, the index's own maintenance
(splits, merges, clean-up, compaction) in bounded slices, checkpoints with op-log truncation,
and the completion of `optimize` requests. Writers only append to the buffer and wake the
worker; searches keep reading index + buffer throughout, and a build switches in atomically.

A collection's next job, in order of precedence:
1. drain, when an `optimize` waits for writes not yet in the index;
2. maintain, when an `optimize` waits and the index reported work left;
3. finish the waiting `optimize` calls;
4. drain, when the buffer passed its trigger: a first build at `first_build_bytes`, or at
   `spill_build_bytes` while the buffer spills to files (or `build_min_vectors` and
   `idle_seconds` quiet), later drains at `drain_vectors` (or any buffered write and
   `idle_seconds` quiet);
5. maintain, while the index reports work left.
A large drain into a built SPANN index runs, with the maintenance it causes, in a child
process (`spann.drain_child`, `VECDB_DRAIN_CHILD_MIB`), as a large build does (`spann.child`).
Collections are served round-robin. A failed job is logged, reported in the collection's
status, fails the waiting `optimize` calls and is retried after `retry_seconds`; the buffer
keeps every write it held. Closing or dropping a collection abandons its running job at the
next progress report (the writes stay in the op log and the buffer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vecdb.allocator import release_free_memory
from vecdb.engine import commit, doc_jobs, recovery, tenant_cluster_jobs, tenant_jobs
from vecdb.engine.core import (
    STATE_BUILDING,
    STATE_ERROR,
    STATE_IDLE,
    STATE_INDEXING,
    STATE_MAINTAINING,
    STATE_READY,
    CollectionCore,
)
from vecdb.engine.settings import BUILD_DISK_X, REBUILD_SHARE
from vecdb.engine.writer import prepare
from vecdb.errors import DeadlineExceeded, FormatError, Internal, NotFound, Unavailable, VecdbError
from vecdb.index import room
from vecdb.index.base import BoundsAdds, DrainsInChild, Progress, StagesBuildInput
from vecdb.index.flat import FlatIndex
from vecdb.index.spann.killpoints import kill_point
from vecdb.storage import kv as kvmod

log = logging.getLogger("vecdb.engine")
Mask = npt.NDArray[np.bool_]
Slots = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
REBUILD_READ = 16_384  # stored vectors prepared per step of a rebuild's read-back

JOB_DRAIN, JOB_MAINTAIN, JOB_FINISH = "drain", "maintain", "finish"
JOB_TENANT_DROP = "tenant_drop"  # a slice of a dropped tenant's cleanup (`tenant_jobs`)
JOB_QUARANTINE = "quarantine"  # a corrupt index is moved aside and rebuilt (recovery)
_IDLE_POLL = 1.0  # the worker wakes at least this often to check quiet-time triggers


class Cancelled(Exception):
    """Raised inside a job's progress report when its collection is closing."""


def due_job(coll: CollectionCore, now: float) -> str | None:
    """The job `coll` needs now, if any (see the module docstring for the order)."""
    st, s = coll.status, coll.settings
    if st.retry_at > now:
        return None
    if st.quarantine:
        return JOB_QUARANTINE
    if tenant_jobs.drop_due(coll):  # before all else: an optimize waits for it too
        return JOB_TENANT_DROP
    if coll.cfg.kind == "multivector":  # documents have their own jobs (engine.doc_jobs)
        return doc_jobs.due(coll, now)
    if tenant_cluster_jobs.due(coll):  # a large tenant's clustered copy, before optimize ends
        return tenant_cluster_jobs.JOB
    waiting = st.optimize_requested > st.optimize_done
    buf = coll.buffer
    if buf is None:
        return JOB_FINISH if waiting else None
    pending = len(buf.active) > 0
    if waiting and pending and st.optimize_seq > coll.applied_seq:
        return JOB_DRAIN
    if waiting and st.maintenance_pending:
        return JOB_MAINTAIN
    if waiting:
        return JOB_DRAIN if pending and st.optimize_seq > coll.applied_seq else JOB_FINISH
    if pending:
        quiet = now - st.last_write >= s.idle_seconds
        n = len(buf.active)
        if len(coll.index) == 0:
            first = s.spill_build_bytes if buf.active.spills else s.first_build_bytes
            # (rows on file count dead or alive: overwrites of a hot set too large to
            # compact into memory must not grow the spill file, and the cap, for good)
            size = max(buf.active.live_bytes, buf.active.spilled_bytes)
            if size >= first or (quiet and n >= s.build_min_vectors):
                return JOB_DRAIN
        elif n >= s.drain_vectors or quiet:
            return JOB_DRAIN
    if st.maintenance_pending:
        return JOB_MAINTAIN
    return None


def idle_state(coll: CollectionCore) -> str:
    """The state to report between jobs."""
    if coll.status.error:
        return STATE_ERROR
    if coll.buffer is not None and len(coll.buffer) or coll.status.maintenance_pending:
        return STATE_IDLE
    return STATE_READY


class MaintenanceWorker:
    """The database's background thread (see the module docstring)."""

    def __init__(self, collections: Callable[[], list[CollectionCore]]) -> None:
        self._collections = collections  # the open collections, read at every turn
        self._cond = threading.Condition()  # wakes the worker
        self._stop = False
        self._turn = 0  # round-robin position
        self._thread = threading.Thread(target=self._run, name="vecdb-maintenance", daemon=True)
        self.current: CollectionCore | None = None  # the collection whose job runs now
        # held while any job runs, with the job's collection's own `job_lock` (which drops,
        # snapshots and restores of that collection wait on); holding it pauses the worker
        self.job_lock = threading.Lock()

    def start(self) -> MaintenanceWorker:
        self._thread.start()
        return self

    def notify(self, coll: CollectionCore | None = None) -> None:
        """Something may be due (a write, an optimize, a setting change)."""
        with self._cond:
            self._cond.notify()

    def stop(self) -> None:
        """Abandon the running job at its next progress report and end the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        current = self.current
        if current is not None:
            current.closing = True
        if self._thread.is_alive():
            self._thread.join()

    # -- optimize -------------------------------------------------------------------------

    def optimize(self, coll: CollectionCore, wait: bool, timeout: float | None = None) -> None:
        """Ask for all of `coll`'s pending index work now; with `wait`, return when it is
        done (or raise the job's error)."""
        with coll.status_cond:
            st = coll.status
            st.optimize_requested += 1
            ticket = st.optimize_requested
            st.optimize_seq = max(st.optimize_seq, coll.seq.value)
        self.notify(coll)
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with coll.status_cond:
            while coll.status.optimize_done < ticket:
                if coll.closing or self._stop:
                    if coll.dropped:
                        raise NotFound(f"collection {coll.name!r} was dropped during optimize")
                    raise Unavailable(f"collection {coll.name!r} was closed during optimize")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise DeadlineExceeded(f"optimize of {coll.name!r} still running after "
                                           f"{timeout:.3g} s; its jobs go on (get_collection shows their state)")  # fmt: skip
                coll.status_cond.wait(0.5 if left is None else min(0.5, left))
            err = coll.status.optimize_error
            if err is not None and coll.status.optimize_failed_ticket >= ticket:
                raise type(err)(err.message)

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
            picked = self._next_job()
            if picked is None:
                with self._cond:
                    if not self._stop:
                        self._cond.wait(_IDLE_POLL)
                continue
            coll, job = picked
            del picked
            try:
                with self.job_lock, coll.job_lock:
                    if coll.closing or self._stop:
                        continue
                    self.current = coll
                    try:
                        self._run_job(coll, job)
                    finally:
                        self.current = None
            finally:
                # This frame must not keep the collection alive while the worker waits: a
                # dropped collection's index (its deleted files, open and mapped, and its
                # memory) was held until the worker's next job, on an idle database for good.
                del coll

    def _next_job(self) -> tuple[CollectionCore, str] | None:
        colls = self._collections()
        now = time.monotonic()
        for i in range(len(colls)):
            coll = colls[(self._turn + i) % len(colls)]
            if coll.closing:
                continue
            job = due_job(coll, now)
            if job is not None:
                self._turn = (self._turn + i + 1) % max(1, len(colls))
                return coll, job
        return None

    def _run_job(self, coll: CollectionCore, job: str) -> None:
        try:
            if job == JOB_DRAIN:
                drain(coll)
            elif job == JOB_MAINTAIN:
                maintain(coll)
            elif job == JOB_TENANT_DROP:
                tenant_jobs.drop_slice(coll)
            elif job == tenant_cluster_jobs.JOB:
                tenant_cluster_jobs.run(coll)
            elif job in doc_jobs.JOBS:
                doc_jobs.run(coll, job, _progress(coll))
            elif job == JOB_QUARANTINE:
                recovery.quarantine(coll)
            else:
                finish_optimize(coll)
            coll.status.error = ""
        except Cancelled:
            log.info("index job abandoned", extra={"collection": coll.name, "job": job})
        except Exception as exc:  # the worker must outlive any job
            log.exception("index job failed", extra={"collection": coll.name, "job": job})
            st = coll.status
            if isinstance(exc, FormatError) and coll.kind.persistent and job != JOB_QUARANTINE:
                recovery.request_quarantine(coll, exc.message)  # its files are corrupt
            st.error = f"{job} failed: {exc}"
            st.state = STATE_ERROR
            st.retry_at = time.monotonic() + coll.settings.retry_seconds
            with coll.status_cond:
                if st.optimize_requested > st.optimize_done:
                    cls = type(exc) if isinstance(exc, VecdbError) else Internal
                    st.optimize_error = cls(f"optimize of {coll.name!r} failed: {st.error}")
                    st.optimize_failed_ticket = st.optimize_requested
                    st.optimize_done = st.optimize_requested
                coll.status_cond.notify_all()
        finally:
            if coll.status.state != STATE_ERROR:
                coll.status.state = idle_state(coll)
            coll.status.phase, coll.status.progress = "", 1.0


def _progress(coll: CollectionCore) -> Callable[[str, int, int], None]:
    def report(phase: str, done: int, total: int) -> None:
        if coll.closing:
            raise Cancelled(coll.name)
        coll.status.phase = phase
        coll.status.progress = 1.0 if total <= 0 else min(1.0, done / total)

    return report


def drain(coll: CollectionCore) -> None:
    """Freeze the buffer, build or extend the index from it, release it, checkpoint."""
    buf = coll.buffer
    assert buf is not None
    st = coll.status
    with coll.write_lock:  # no request is half applied while we freeze
        seg = buf.freeze()
        seq = coll.seq.value  # every write of this collection up to here is in seg or index
        alive = coll.points.alive()  # live slots now: the index's, seg's (and none newer)
    first = len(coll.index) == 0
    rebuild = not first and _rebuild_due(coll, len(seg))
    st.state, st.progress, st.job_started = (
        (STATE_BUILDING if first or rebuild else STATE_INDEXING),
        0.0,
        time.time(),
    )
    t0 = time.monotonic()
    report = _progress(coll)
    try:
        if first or rebuild:
            slots, matrix = seg.consolidate(None if rebuild else lambda n: _input_array(coll, n))
            if rebuild:
                alive[slots[slots < len(alive)]] = False  # what remains is in the index
                slots, matrix = _with_indexed(coll, alive, slots, matrix, report)
                _bridge(coll, slots, matrix, seq)
            log.info(
                "index rebuild started" if rebuild else "index build started",
                extra={"collection": coll.name, "vectors": len(slots), "bytes": matrix.nbytes},
            )
            coll.index.build(slots, matrix, report)
            kill_point("build")
            del slots, matrix
        else:
            if isinstance(coll.index, BoundsAdds):  # room for the add, before any of it
                where, need = coll.index.add_bytes(len(seg))
                room.ensure(where, need, f"indexing {len(seg):,} buffered vectors")
            if _drain_in_child(coll, len(seg)):
                assert isinstance(coll.index, DrainsInChild)
                chunks = seg.iter_live(coll.settings.apply_batch)
                coll.index.add_in_child(chunks, seq, coll.applied_seq, report)
            else:
                total, done = len(seg), 0
                for slots, vectors in seg.iter_live(coll.settings.apply_batch):
                    report("apply", done, total)
                    coll.index.add(slots, vectors)
                    done += len(slots)
                report("apply", total, total)
            kill_point("drain")
    except BaseException:
        with coll.write_lock:
            buf.thaw()  # nothing buffered is lost; the next drain starts over
        raise
    buf.release()
    del seg
    _checkpoint(coll, seq)
    if first or rebuild:
        set_rebuilding(coll, False)  # the index files hold everything again
        st.degraded = ""  # a quarantined index is whole again
    seconds = time.monotonic() - t0
    st.last_job_seconds = seconds
    st.maintenance_pending = True
    if first or rebuild:
        st.builds += 1
        st.last_build_seconds, st.last_build_vectors = seconds, len(coll.index)
        log.info(
            "index build finished",
            extra={
                "collection": coll.name,
                "vectors": len(coll.index),
                "seconds": round(seconds, 3),
                "index": coll.index.stats().get("posting_file_bytes"),
            },
        )
    else:
        st.drains += 1
        log.debug("buffer drained", extra={"collection": coll.name, "seconds": round(seconds, 3)})
    if first or rebuild:
        coll.kv.flush()  # the load's last vectors leave the memtables (memory back)
    release_free_memory()


def _drain_in_child(coll: CollectionCore, buffered: int) -> bool:
    """Whether a drain of `buffered` vectors into a persistent index runs, with the
    maintenance it causes, in a child process (an index kind with the `DrainsInChild`
    capability, e.g. SPANN: the long-running process then holds what a fresh open of the
    result does)."""
    index = coll.index
    return (
        coll.kind.persistent
        and isinstance(index, DrainsInChild)
        and index.drains_in_child(buffered)
    )


def _rebuild_due(coll: CollectionCore, buffered: int) -> bool:
    """A drain of `buffered` vectors rebuilds a persistent index from everything when they
    are at least REBUILD_SHARE of what it holds, all of it fits `rebuild_max_bytes`, and the
    disk has BUILD_DISK_X x the raw bytes free (else the drain inserts)."""
    indexed = len(coll.index)
    total = (indexed + buffered) * 4 * coll.cfg.dim
    if not (
        coll.kind.persistent
        and buffered >= REBUILD_SHARE * indexed
        and total <= coll.settings.rebuild_max_bytes
    ):
        return False
    free = room.free_bytes(coll.directory)  # (unknown: the drain inserts)
    return free is not None and free >= BUILD_DISK_X * total


def _input_array(coll: CollectionCore, rows: int) -> Vectors:
    """Where a bulk build's `rows` input vectors are gathered: the array the index asks for
    (`StagesBuildInput`: a file its build child maps, so the input is written once), else a
    plain one."""
    index = coll.index
    staged = index.build_input(rows) if isinstance(index, StagesBuildInput) else None
    return np.empty((rows, coll.cfg.dim), np.float32) if staged is None else staged


def _with_indexed(
    coll: CollectionCore, alive: Mask, slots: Slots, matrix: Vectors, report: Progress
) -> tuple[Slots, Vectors]:
    """Every live indexed point's stored vector (one sequential scan of RocksDB that does
    not fill its block cache, prepared as the index stores them) followed by the buffered
    rows: ascending slots, since slots are handed out in order and the buffer holds only
    those written after the index's. A point deleted meanwhile may be among them: `_bridge`
    and the index's remove-wins rule take it out."""
    n_old = int(alive.sum())
    out_s = np.empty(n_old + len(slots), np.int64)
    out_v = _input_array(coll, len(out_s))
    n = start = 0
    head = len(coll.prefix)
    for key, raw in coll.kv.scan_prefix(kvmod.CF_VECTORS, coll.prefix):
        slot = kvmod.read_u64(key, head)
        if slot >= len(alive) or not alive[slot] or n == n_old:
            continue
        out_s[n] = slot
        out_v[n] = np.frombuffer(raw, np.float32)
        n += 1
        if n - start == REBUILD_READ:
            out_v[start:n] = prepare(coll, out_v[start:n])
            start = n
            report("read", n, n_old)
    out_v[start:n] = prepare(coll, out_v[start:n])
    out_s[n : n + len(slots)] = slots
    out_v[n : n + len(slots)] = matrix
    n += len(slots)
    return out_s[:n], out_v[:n]


def _bridge(coll: CollectionCore, slots: Slots, matrix: Vectors, seq: int) -> None:
    """Before a rebuild writes its posting file, the old one goes, so that the disk never
    holds two indexes: every point is served exactly from `matrix` (adopted, not copied, by
    a flat segment standing in for the frozen buffer), the index is emptied, and its old
    files are dropped at a checkpoint. A marker in RocksDB, set before the index is emptied
    and cleared after the rebuilt index is checkpointed, makes an interrupted rebuild start
    over from the stored vectors on open (`recovery`)."""
    buf = coll.buffer
    assert buf is not None
    bridge = FlatIndex(coll.cfg.dim, coll.cfg.metric)
    bridge.build(slots, matrix)
    with coll.write_lock:  # deletes since the stored vectors were read, then every later one
        now = coll.points.alive()
        live = np.zeros(len(slots), np.bool_)
        inside = slots < len(now)
        live[inside] = now[slots[inside]]
        bridge.remove(slots[~live])
        buf.frozen = bridge
        coll.index_epoch += 1  # searches that began before this run again (reader)
    set_rebuilding(coll, True)
    coll.index.build(np.zeros(0, np.int64), np.zeros((0, coll.cfg.dim), np.float32))
    _checkpoint(coll, seq)  # names the empty generation: the old posting file is deleted
    kill_point("rebuild_bridged")


def set_rebuilding(coll: CollectionCore, on: bool) -> None:
    kvmod.set_rebuild_marker(coll.kv, coll.prefix, on)


def maintain(coll: CollectionCore) -> None:
    """One slice of the index's own maintenance; checkpoint when it has none left."""
    st = coll.status
    st.state, st.phase = STATE_MAINTAINING, "maintain"
    more = coll.index.maintain(coll.settings.maintain_slice)
    st.maintenance_pending = more
    if not more:
        _checkpoint(coll, coll.applied_seq)
        coll.kv.flush()
        release_free_memory()
        st.maintenance_pending = coll.index.unstuck()  # did it free what held work waits on?


def finish_optimize(coll: CollectionCore) -> None:
    """Every waiting optimize is satisfied: run the index's remaining work and wake them."""
    if coll.buffer is None:
        coll.index.maintain(None)
    st = coll.status
    with coll.status_cond:
        buf = coll.buffer
        if buf is None or len(buf.active) == 0 or st.optimize_seq <= coll.applied_seq:
            st.optimize_done = st.optimize_requested
        coll.status_cond.notify_all()


def _checkpoint(coll: CollectionCore, seq: int) -> None:
    if not coll.kind.persistent:
        return
    coll.index.checkpoint(seq)
    commit.truncate_log(coll.kv, coll.prefix, seq)
    coll.applied_seq = seq
