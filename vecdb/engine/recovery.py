"""Opening a collection after a clean close or a crash.

Owns the rules that make derived state match RocksDB: the point table is read from the
`slots` column family; an in-memory index is rebuilt from stored vectors; a disk index
reports its last durable sequence and every later op-log entry is replayed (adds go to the
write buffer, removes to index and buffer). An index whose files cannot be read (an older
format, a failed checksum) is derived state: it is discarded, loudly, and rebuilt from the
stored vectors by the maintenance worker. An index that reports no durable checkpoint
(new, or its manifest is gone) while the collection holds points is rebuilt the same way
(the op log before the last checkpoint is truncated: replaying it would miss points).

Quarantine (at run time): a search or an index job that meets a corrupt, torn or missing
index file (`FormatError`) asks for it (`request_quarantine`); the search itself is answered
exactly from the stored vectors (`exact_search`), or gets `DataLoss` naming the file when the
collection is too large for that. The worker then (`quarantine`) moves the index directory
aside, opens an empty index, puts every stored vector into the write buffer (searched exactly)
and sets the rebuild marker; then it rebuilds the index at once, in the background, which
clears the collection's `degraded` status. Never changes what RocksDB holds but the marker.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine import commit, doc_jobs
from vecdb.engine import validate as v
from vecdb.engine.commit import Sequencer
from vecdb.engine.core import CollectionConfig, CollectionCore
from vecdb.engine.settings import EngineSettings
from vecdb.errors import DataLoss, FormatError, os_error
from vecdb.index import registry
from vecdb.index.base import IndexResult, SearchStats, Visible
from vecdb.kernels.scan import exact_topk
from vecdb.kernels.topk import merge_topk
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV
from vecdb.types import Metric

log = logging.getLogger("vecdb.engine")
F32 = npt.NDArray[np.float32]
_CHUNK = 65_536  # vectors read per step when filling an index or buffer from RocksDB
# A search meeting a corrupt index scans every stored vector exactly up to this many bytes
# of vectors; above it the call gets DataLoss (retry once the rebuild is done).
EXACT_FALLBACK_BYTES = 256 * 2**20
QUARANTINE_SUFFIX = ".quarantine"  # the corrupt index directory, kept until the next open


def collection_dir(data_dir: Path, cid: int) -> Path:
    return data_dir / "collections" / f"{cid:08d}"


def open_collection(
    cfg: CollectionConfig, kv: KV, seq: Sequencer, data_dir: Path, settings: EngineSettings
) -> CollectionCore:
    kind = registry.spec(cfg.index)
    directory = collection_dir(data_dir, cfg.cid)
    rebuild = False
    marker = kvmod.META_REBUILD + kvmod.cid_prefix(cfg.cid)
    why = kv.get(kvmod.CF_META, marker) if kind.persistent else None
    if why is not None:
        # A rebuild was under way (maintenance._bridge, a quarantine): its index files hold
        # part of the points at most; or no build was checkpointed yet. Start over from the
        # stored vectors, like unreadable files (only the first is news to an operator).
        if why == kvmod.REBUILD_UNBUILT:
            log.debug("no index checkpoint yet; indexing the stored vectors",
                      extra={"collection": cfg.name})  # fmt: skip
        else:
            log.warning(
                "an index rebuild was interrupted; rebuilding the index from stored vectors",
                extra={"collection": cfg.name, "directory": str(directory)},
            )
        shutil.rmtree(directory, ignore_errors=True)
        rebuild = True  # everything goes through the buffer (the marker stays until built)
    try:
        index, applied = _open_index(cfg, directory)
    except FormatError as exc:
        if not kind.persistent:
            raise
        log.warning(
            "index files unreadable; rebuilding the index from stored vectors",
            extra={"collection": cfg.name, "directory": str(directory), "error": str(exc)},
        )
        shutil.rmtree(directory, ignore_errors=True)
        index, applied = _open_index(cfg, directory)
        rebuild = True
    why = kvmod.REBUILD_REPLACING if rebuild and why is None else why  # (unreadable files)
    if kind.persistent and applied == 0 and not rebuild and _has_points(kv, cfg.cid):
        # No checkpoint (never built, or its manifest is gone) yet points exist: the op log
        # may be truncated, so every stored vector goes through the buffer instead.
        rebuild, why = True, kvmod.REBUILD_UNBUILT
    if rebuild:  # until the first build is checkpointed, an open must start over again
        kvmod.set_rebuild_marker(
            kv, kvmod.cid_prefix(cfg.cid), True, why or kvmod.REBUILD_REPLACING
        )
    coll = CollectionCore(cfg, kv, seq, index, kind, directory, settings)
    # Pass 1: the point table and the live count.
    coll.points.load()
    if coll.tenants is not None:  # the tenants' sets, from the access lists alone
        coll.tenants.load(coll.points.next_slot)
    if cfg.kind == "multivector":  # documents replay into their own index (engine.doc_jobs)
        doc_jobs.recover(coll, applied, rebuild)
    elif not kind.persistent:
        # Pass 2a: rebuild the in-memory index from the stored vectors.
        _load_all(coll, into_buffer=False)
    elif rebuild:
        # Pass 2b: everything goes through the buffer into a fresh index.
        _load_all(coll, into_buffer=True)
        coll.status.maintenance_pending = False
    else:
        # Pass 2c: replay the op log past the index's last checkpoint.
        _replay(coll, applied)
        coll.applied_seq = applied
    return coll


def _open_index(cfg: CollectionConfig, directory: Path) -> tuple[Any, int]:
    """The collection's index; an OSError of its files is a FormatError naming the path
    (derived state: rebuilt), never an escape from the error tree."""
    try:
        return registry.open_index(cfg.index, cfg.dim, cfg.metric, cfg.index_params, directory)
    except OSError as exc:
        raise FormatError(f"{directory}: index files unreadable ({exc})") from exc


def _has_points(kv: KV, cid: int) -> bool:
    for _ in kv.scan_prefix(kvmod.CF_IDS, kvmod.cid_prefix(cid)):
        return True
    return False


def _load_all(coll: CollectionCore, into_buffer: bool) -> None:
    """Every stored vector, in slot order: into one preallocated matrix that the flat index
    adopts, or into the write buffer _CHUNK vectors at a time, as writes arrive there (so a
    buffer that spills puts its rows past `spill_from` on file again: a never-built
    collection reopened after a load too large for memory is not read back into memory,
    nor held against the writers' cap)."""
    prefix, dim = coll.prefix, coll.cfg.dim
    count = coll.points.count
    step = min(count, _CHUNK) if into_buffer else count
    slots = np.empty(step, np.int64)
    vectors = np.empty((step, dim), np.float32)
    n = at = 0  # vectors read; of them, in `vectors` now
    if into_buffer:  # what the buffer held (a quarantine's) is among what is read
        assert coll.buffer is not None
        coll.buffer.active.build(np.zeros(0, np.int64), np.zeros((0, dim), np.float32))

    def flush(rows: int) -> None:
        part = vectors[:rows]
        if coll.metric is Metric.COSINE:
            for lo in range(0, rows, _CHUNK):  # normalise in place, a chunk at a time
                part[lo : lo + _CHUNK] = v.normalize(part[lo : lo + _CHUNK])
        if into_buffer:
            assert coll.buffer is not None
            coll.buffer.active.add(slots[:rows], part)  # copied: `vectors` is reused
        else:
            coll.index.build(slots[:rows], part)  # adopts the matrix: no second copy

    for key, value in coll.kv.scan_prefix(kvmod.CF_VECTORS, prefix):
        if n == count:  # more vectors than slots: storage changed under us
            raise DataLoss(f"collection {coll.name!r}: vectors and slot table disagree")
        slots[at] = kvmod.read_u64(key, len(prefix))
        vectors[at] = np.frombuffer(value, np.float32)
        n, at = n + 1, at + 1
        if into_buffer and at == step:
            flush(at)
            at = 0
    if at or not into_buffer:
        flush(at)


def _replay(coll: CollectionCore, applied: int) -> None:
    buf = coll.buffer
    assert buf is not None
    for op in commit.read_log(coll.kv, coll.prefix, applied):
        removed = np.asarray(op.removed, np.int64)
        if removed.size:
            coll.index.remove(removed)
            buf.remove(removed)
        if op.add_count:
            added = list(range(op.add_start, op.add_start + op.add_count))
            raw = coll.points.vectors(added)
            keep = [(s, r) for s, r in zip(added, raw, strict=True) if r is not None]
            if keep:  # points deleted later have no vector any more: skipped
                vecs = np.frombuffer(b"".join(r for _, r in keep), np.float32).reshape(
                    -1, coll.cfg.dim
                )
                if coll.metric is Metric.COSINE:
                    vecs = v.normalize(vecs)
                buf.add(np.asarray([s for s, _ in keep], np.int64), vecs)


# -- quarantine at run time -----------------------------------------------------------------


def request_quarantine(coll: CollectionCore, reason: str) -> None:
    """Ask the worker to quarantine the index (any thread; the first reason is kept)."""
    if not coll.status.quarantine:
        log.error(
            "index corrupt; quarantining it and rebuilding from stored vectors",
            extra={"collection": coll.name, "error": reason},
        )
        coll.status.quarantine = reason
    coll.status.degraded = coll.status.degraded or reason


# A search of the index restricted to `visible`: `VectorIndex.search` or a variant of it.
IndexSearch = Callable[[F32, int, dict[str, Any] | None, Visible | None], IndexResult]


def index_search(
    coll: CollectionCore,
    q: F32,
    k: int,
    params: dict[str, Any] | None,
    visible: Visible | None,
    search: IndexSearch | None = None,
) -> IndexResult:
    """The index's answer (`search`, default `coll.index.search`: a tenant walk passes its
    own), or, when its files fail a check, the exact answer over every stored vector (and a
    quarantine request)."""
    try:
        return (coll.index.search if search is None else search)(q, k, params, visible)
    except FormatError as exc:
        if not coll.kind.persistent:
            raise
        request_quarantine(coll, exc.message)
        return exact_search(coll, q, k, visible, exc)


def exact_search(
    coll: CollectionCore, q: F32, k: int, visible: Visible | None, cause: FormatError
) -> IndexResult:
    """Exact top-k slots over every stored vector (RocksDB, the source of truth), read in
    chunks; `DataLoss` naming the bad file when there are more than EXACT_FALLBACK_BYTES."""
    dim = coll.cfg.dim
    if coll.points.count * 4 * dim > EXACT_FALLBACK_BYTES:
        raise DataLoss(
            f"{cause.message}; the index of collection {coll.name!r} is being rebuilt from "
            "its stored vectors, retry later",
            retry_after=5.0,
        )
    nq = len(q)
    best_s = np.full((nq, k), -1, np.int64)
    best_d = np.full((nq, k), np.inf, np.float32)
    bits = None if visible is None else visible.bits
    slots: list[int] = []
    rows: list[bytes] = []

    def flush() -> None:
        nonlocal best_s, best_d
        if not slots:
            return
        base = np.frombuffer(b"".join(rows), np.float32).reshape(len(rows), dim)
        if coll.metric is Metric.COSINE:
            base = v.normalize(base)
        idx, dist = exact_topk(q, np.ascontiguousarray(base), coll.cfg.metric, k)
        s = np.asarray(slots, np.int64)
        part = np.where(idx >= 0, s[np.maximum(idx, 0)], -1)
        best_s, best_d = merge_topk(best_s, best_d, part, dist.astype(np.float32), k)
        slots.clear()
        rows.clear()

    head = len(coll.prefix)
    for key, raw in coll.kv.scan_prefix(kvmod.CF_VECTORS, coll.prefix):
        slot = kvmod.read_u64(key, head)
        if bits is not None and (slot >> 3 >= len(bits) or not (bits[slot >> 3] >> (slot & 7)) & 1):
            continue
        slots.append(slot)
        rows.append(raw)
        if len(slots) == _CHUNK:
            flush()
    flush()
    return IndexResult(best_s, best_d, SearchStats(queries=nq, extra={"degraded": 1.0}))


def quarantine(coll: CollectionCore) -> None:
    """Worker job: move the corrupt index aside and start over from the stored vectors (see
    the module docstring). Runs under the worker's job lock, so no other job of the
    collection runs; the write lock keeps writes out while the buffer is refilled."""
    reason = coll.status.quarantine
    directory = coll.directory
    aside = directory.with_name(directory.name + QUARANTINE_SUFFIX)
    with coll.write_lock:
        kvmod.set_rebuild_marker(coll.kv, coll.prefix, True)  # a crash now rebuilds on open
        old = coll.index
        try:
            shutil.rmtree(aside, ignore_errors=True)
            if directory.exists():
                directory.rename(aside)
        except OSError as exc:
            raise os_error(exc, f"moving the corrupt index {directory} aside") from exc
        new, _ = _open_index(coll.cfg, directory)
        _load_all(coll, into_buffer=True)  # every stored point, searched exactly
        coll.index = new
        coll.index_epoch += 1  # searches that began on the old index run again
        coll.applied_seq = 0
        coll.status.maintenance_pending = False
        coll.status.quarantine = ""
        coll.status.degraded = reason or "index quarantined"
    with coll.status_cond:  # rebuild now, whatever the size (as optimize(wait=False) asks)
        coll.status.optimize_requested += 1
        coll.status.optimize_seq = max(coll.status.optimize_seq, coll.seq.value)
    _close_when_idle(old)
    log.warning(
        "index quarantined; rebuilding from stored vectors in the background",
        extra={"collection": coll.name, "quarantined": str(aside), "error": reason},
    )


def _close_when_idle(index: Any) -> None:
    """Close an index no search will use any more, once running searches leave it."""
    lock = getattr(getattr(index, "state", None), "lock", None)
    if lock is None:
        index.close()
        return
    with lock.write("quarantine"):
        index.close()
