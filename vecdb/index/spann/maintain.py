"""Background maintenance of a SPANN index: bounded work per call, in batches.

`maintain(st, budget_s)` runs batches (at least one) until the budget is spent or nothing is
left, and says whether work is left. Pass 1 splits or cleans postings queued by appends (a batch at a time,
one LIRE reassignment per batch: `split`). Pass 2 merges postings that *became* small (fewer
than `merge_threshold` visible entries and fewer than they hold: they lost entries to removes
or moves; a posting small from the build is left alone, which is what kept a bulk build from
cascading into merges). A merge batch re-places the vectors whose primary copy was in a merged
posting (the others keep their other copies) with one RNG placement that excludes the merging
heads, then publishes everything at once. Pass 3 rewrites
postings with a high dead share (`compaction.clean_batch`). Pass 4 rebuilds the head graph
without deleted heads when they pile up. Pass 5 moves the postings nearest the end of the
file into free space below them once free space passes `compact_garbage` of the file
(`compaction.defrag_batch`), so the tail frees and the file shrinks at the next checkpoint;
the file is never rewritten whole (two generations on disk would double it). Pass 6, between
batches, checkpoints by itself at the last applied sequence once much dropped space waits
for a checkpoint to become reusable.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from vecdb.index.spann import compaction
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.persist import checkpoint
from vecdb.index.spann.split import split_batch
from vecdb.index.spann.state import SpannState
from vecdb.index.spann.update import commit_moves, place, read_live

I64 = npt.NDArray[np.int64]
SPLIT_BATCH = 64  # postings per split batch
BATCH_BYTES = 64 << 20  # posting entries read per batch (bounds maintenance memory)
MERGE_BATCH = 256  # postings per merge batch
CLEAN_BATCH = 256  # postings per clean-up batch
DEFRAG_BATCH = 256  # postings moved towards the start of the file per batch
CHECKPOINT_FREED_SHARE = 0.05  # self-checkpoint when freed bytes pass this share of the live
CHECKPOINT_FREED_MIN = 16 << 20  # ... and at least this many bytes


def entry_bytes(st: SpannState) -> int:
    return st.width * st.dim + 9


def take_pending(st: SpannState) -> list[int]:
    """The next split batch: queued postings, lowest ids first, within BATCH_BYTES."""
    out, size = [], 0
    for p in sorted(st.pending):
        out.append(p)
        size += int(st.table.post_entries[p]) * entry_bytes(st)
        if len(out) >= SPLIT_BATCH or size >= BATCH_BYTES:
            break
    st.pending.difference_update(out)
    return out


def merge_candidates(st: SpannState, live: I64) -> I64:
    """Live postings that became small: fewer than `merge_threshold` visible entries and
    fewer than they hold (they lost entries); smallest first."""
    n = len(live)
    entries = st.table.post_entries[:n]
    leaf = st.tree.leaf_of[:n] >= 0 if len(st.tree.leaf_of) >= n else np.zeros(n, bool)
    small = np.flatnonzero(leaf & (live < st.params.merge_threshold) & (live < entries))
    out: I64 = small[np.argsort(live[small], kind="stable")]
    return out


def merge_batch(st: SpannState, postings: I64) -> None:
    """Merge postings away: their vectors go elsewhere, their heads and leaves are removed."""
    postings = postings[: max(0, st.live_heads - 1)]  # one head always stays
    if len(postings) == 0:
        return
    # Pass 1 (no lock): read the visible entries
    parts = [read_live(st, int(p)) for p in postings]
    slots = np.concatenate([s for s, _, _ in parts])
    vecs = np.concatenate([v for _, v, _ in parts])
    was = np.concatenate([w for _, _, w in parts])
    slots, first = np.unique(slots, return_index=True)
    # Only vectors whose primary (nearest) copy is here move; others keep their other copies.
    here = np.isin(st.tree.primary[slots], postings)
    slots, vecs, was = slots[here], vecs[first[here]], was[first[here]]
    kill_point("merge")
    # Pass 2 (no lock): one placement that avoids the merging heads; write the copies
    posts, versions, written = place(st, slots, vecs, exclude=postings)
    st.tree.widen(posts[:, 0], vecs)
    # Pass 3 (write lock): moves, then heads, chains and leaves go
    with st.lock.write("merge publish"):
        commit_moves(st, slots, versions, posts, written, was)
        for p in postings.tolist():
            st.delete_head(p)
            st.clear(p)
            st.pending.discard(p)
            st.tree.remove_leaf(p)
            st.counters["merges"] += 1


def work_left(st: SpannState, live: I64) -> bool:
    """Whether another call would find something to do."""
    if st.pending:
        return True
    if st.live_heads > 1 and len(merge_candidates(st, live)):
        return True
    return bool(len(compaction.dirty_postings(st, live)))


def maintain(st: SpannState, budget_s: float | None = None) -> bool:
    """Run batches for about `budget_s` seconds (None: until done); True if work is left."""
    if st.graph is None:
        return False
    deadline = float("inf") if budget_s is None else time.monotonic() + budget_s
    first = True
    while first or time.monotonic() < deadline:  # at least one batch per call
        first = False
        # Pass 6 (between batches): checkpoint by ourselves when much freed space waits
        maybe_checkpoint(st)
        # Pass 1: split or clean queued postings
        if st.pending:
            split_batch(st, take_pending(st))
            continue
        live = compaction.counts(st)
        # Pass 2: merge postings that became small
        small = merge_candidates(st, live)
        if len(small) and st.live_heads > 1:
            merge_batch(st, small[:MERGE_BATCH])
            continue
        # Pass 3: clean postings with many dead entries
        dirty = compaction.dirty_postings(st, live)
        if len(dirty):
            compaction.clean_batch(st, dirty[:CLEAN_BATCH])
            continue
        # Pass 4: a head graph without its deleted heads
        compaction.rebuild_heads(st)
        # Pass 5: free space piled up inside the file: move tail postings into it
        if compaction.defrag_batch(st, DEFRAG_BATCH):
            continue
        break
    maybe_checkpoint(st)
    return work_left(st, compaction.counts(st))


def maybe_checkpoint(st: SpannState) -> None:
    """Pass 6: checkpoint at the last applied sequence once the bytes freed since the last
    checkpoint pass CHECKPOINT_FREED_SHARE of the referenced bytes (and CHECKPOINT_FREED_MIN):
    freed space is reusable only after a checkpoint stops naming it, so this keeps the file
    near its live size. Only once the engine has checkpointed (its sequence is known)."""
    due = max(CHECKPOINT_FREED_MIN, CHECKPOINT_FREED_SHARE * st.table.ref_bytes)
    if st.ckpt_no > 0 and st.file.space.pending_bytes > due:
        checkpoint(st, st.applied_seq)
        st.counters["self_checkpoints"] += 1
