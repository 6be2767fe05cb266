"""Background work and recovery of multivector collections.

Owns what the maintenance worker does for a document collection and how one is reopened.
Jobs: `train` when the index asks for a (new) codebook (enough tokens for the first one, data
grown or drifted past the current one, many documents removed; see
`MultiVectorIndex.needs_training`), the first one only once the writes pause for `idle_seconds`
or the documents hold `first_train_bytes` of float32 tokens (a codebook trained on the first
part of a load still streaming in is replaced once the load has grown 4x: 1.44M tokens
upserted 100 documents a call settled at K = 1,024, trained on the first ~120,000, recall@10
0.31 until the retraining 100 s later);
`checkpoint` when writes are durable in RocksDB but not yet
in the index files and the collection has been quiet for `idle_seconds`; `optimize` (an
`optimize` call waits) trains if the index is untrained or due, checkpoints, then wakes the
callers. A checkpoint records the collection's sequence and truncates its op log. Recovery
replays the op log past the index's checkpoint into it, or reloads every stored document when
the index starts empty (new, or its files were unreadable). Never changes what RocksDB holds.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from vecdb.engine import commit
from vecdb.engine.core import STATE_BUILDING, STATE_MAINTAINING, CollectionCore
from vecdb.engine.doc_writer import decode_document, index_input
from vecdb.engine.settings import EngineSettings
from vecdb.index.spann.killpoints import kill_point
from vecdb.storage import kv as kvmod

JOB_TRAIN, JOB_CHECKPOINT, JOB_OPTIMIZE = "doc_train", "doc_checkpoint", "doc_optimize"
JOBS = (JOB_TRAIN, JOB_CHECKPOINT, JOB_OPTIMIZE)
LOAD_CHUNK = 4096  # documents read per step when reloading the index
# monotonic time of each collection's last checkpoint: a checkpoint is due only after a write
# of its own (the sequence is the database's, moved by every collection's writes)
_CHECKPOINTED: weakref.WeakKeyDictionary[CollectionCore, float] = weakref.WeakKeyDictionary()


def due(coll: CollectionCore, now: float) -> str | None:
    """The job a document collection needs now, if any."""
    st = coll.status
    if st.retry_at > now:
        return None
    if st.optimize_requested > st.optimize_done:
        return JOB_OPTIMIZE
    mv: Any = coll.index.mv  # type: ignore[attr-defined]
    quiet = now - st.last_write >= coll.settings.idle_seconds
    if mv.needs_training() and (
        quiet or mv.trained() or mv.live_bytes() >= first_train_bytes(coll.settings)
    ):
        return JOB_TRAIN
    written = st.last_write > _CHECKPOINTED.get(coll, float("-inf"))
    if quiet and written and coll.seq.value > coll.applied_seq:
        return JOB_CHECKPOINT
    return None


def first_train_bytes(s: EngineSettings) -> int:
    """Float32 token bytes at which a collection's first codebook is trained while its writes
    still stream in. A document's tokens are on file from their first write (the index's raw
    row file), as a spilling buffer's vectors are, so with the auto `bulk_build_bytes` the
    first training waits as that buffer's first build does: up to `rebuild_max_bytes`
    (`spill_build_bytes`), not `first_build_bytes`, which bounds a buffer held in memory.
    10,060,821 tokens at d = 128 upserted then optimized (`multivector.scale_row`, 70,000
    documents): trained once (at 4.2M tokens, K = 32,768) in 52-55 + 265-270 s against twice
    (from ~1M tokens, then all at `optimize`) in 58-60 + 432-437 s, peak RssAnon 1.5 against
    2.3 GiB, the same K, recall and (once the delta is folded) search time; 4.3M tokens:
    17 + 180 s against 22 + 272 s (bench/RESULTS.md, "a bulk document load trains once").
    Until then a search scores every document exactly (~0.3 s a query at 4.3M tokens)."""
    return s.spill_build_bytes or s.first_build_bytes


def run(coll: CollectionCore, job: str, report: Callable[[str, int, int], None]) -> None:
    """Run one job (the worker's error handling wraps it)."""
    mv: Any = coll.index.mv  # type: ignore[attr-defined]
    st = coll.status
    untrained = not mv.stats()["trained"] and len(mv) > 0
    if job == JOB_TRAIN or (job == JOB_OPTIMIZE and (untrained or mv.needs_training())):
        st.state, st.progress, st.job_started = STATE_BUILDING, 0.0, time.time()
        t0 = time.monotonic()
        mv.train(report)
        st.builds += 1
        st.last_build_seconds = st.last_job_seconds = time.monotonic() - t0
        st.last_build_vectors = len(mv)
    st.state, st.phase = STATE_MAINTAINING, "checkpoint"
    checkpoint(coll)
    if job == JOB_OPTIMIZE:
        with coll.status_cond:
            st.optimize_done = st.optimize_requested
            coll.status_cond.notify_all()


def checkpoint(coll: CollectionCore) -> None:
    """Make the index durable up to the collection's current sequence; truncate the log."""
    with coll.write_lock:  # every write up to `seq` is applied to the index
        seq = coll.seq.value
        _CHECKPOINTED[coll] = time.monotonic()
    coll.index.checkpoint(seq)
    kill_point("doc_checkpoint")
    commit.truncate_log(coll.kv, coll.prefix, seq)
    coll.applied_seq = seq


def recover(coll: CollectionCore, applied: int, rebuild: bool) -> None:
    """Bring the opened index up to what RocksDB holds (see the module docstring)."""
    index: Any = coll.index
    if rebuild or applied == 0:
        _load_all(coll, index)
        if rebuild:  # the index holds everything again: checkpoint, then clear the marker
            checkpoint(coll)
            kvmod.set_rebuild_marker(coll.kv, coll.prefix, False)
        return
    for op in commit.read_log(coll.kv, coll.prefix, applied):
        removed = np.asarray(op.removed, np.int64)
        if removed.size:
            index.remove(removed)
        if op.add_count:
            slots = list(range(op.add_start, op.add_start + op.add_count))
            _add_rows(coll, index, slots, coll.points.vectors(slots))
    coll.applied_seq = applied


def _load_all(coll: CollectionCore, index: Any) -> None:
    slots: list[int] = []
    rows: list[bytes | None] = []
    head = len(coll.prefix)
    for key, raw in coll.kv.scan_prefix(kvmod.CF_VECTORS, coll.prefix):
        slots.append(kvmod.read_u64(key, head))
        rows.append(raw)
        if len(slots) == LOAD_CHUNK:
            _add_rows(coll, index, slots, rows)
            slots, rows = [], []
    _add_rows(coll, index, slots, rows)


def _add_rows(coll: CollectionCore, index: Any, slots: list[int], rows: list[bytes | None]) -> None:
    """Stored rows into the index (slots whose row is gone were deleted later: skipped)."""
    keep = [(s, r) for s, r in zip(slots, rows, strict=True) if r is not None]
    if not keep:
        return
    decoded = [decode_document(r, coll.cfg.dim) for _, r in keep]
    tokens, offsets, weights = index_input(coll, [d for d, _ in decoded], [w for _, w in decoded])
    index.add_documents(np.asarray([s for s, _ in keep], np.int64), tokens, offsets, weights)
