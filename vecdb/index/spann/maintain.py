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

The disk guard: rewrites (clean-ups, split halves, LIRE moves) are written below
`SpannState.rewrite_limit` (GUARD_SHARE of the disk budget, and no further than the disk's
free space less `room.HEADROOM` lets the file grow). A clean-up or split that finds
no room waits, re-queued, until the free space, the file's end, the live count or the
disk's room changes (`SpannState.stuck`; a checkpoint, Pass 6's or the engine's, frees
pending space, and the engine's resumes maintenance then: `SpannState.unstuck`); a LIRE
move is skipped. (Checkpointing at once to free pending space, tried first, changed what a
crash mid-split replays into and cost a crash test 3 points of recall.) So maintenance never
takes the file past the budget or the disk past its headroom; the cost is postings left over
their entry budget or holding dead entries until room comes back.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from vecdb.index.spann import compaction
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.persist import checkpoint
from vecdb.index.spann.split import split_batch
from vecdb.index.spann.state import LiveSeen, SpannState
from vecdb.index.spann.update import commit_moves, place, read_live

I64 = npt.NDArray[np.int64]
SPLIT_BATCH = 64  # postings per split batch
# Posting bytes rewritten per batch: at most this share of the referenced bytes (and at
# least BATCH_MIN_BYTES). Every rewrite holds old and new copies until the next checkpoint,
# so this bounds how far the file can outgrow its live data between two checkpoints.
BATCH_SHARE = 0.02
BATCH_MIN_BYTES = 1 << 20
MERGE_BATCH = 256  # postings per merge batch
CLEAN_BATCH = 256  # postings per clean-up batch
DEFRAG_BATCH = 256  # postings moved towards the start of the file per batch
CHECKPOINT_FREED_SHARE = 0.03  # self-checkpoint when freed bytes pass this share of the live
CHECKPOINT_FREED_MIN = 1 << 20  # ... and at least this many bytes


def entry_bytes(st: SpannState) -> int:
    return st.params.entry_bytes(st.dim)


def take_pending(st: SpannState) -> list[int]:
    """The next split batch: queued postings, lowest ids first, within `batch_bytes`."""
    out, size = [], 0
    for p in sorted(st.pending):
        out.append(p)
        size += int(st.table.post_entries[p]) * entry_bytes(st)
        if len(out) >= SPLIT_BATCH or size >= batch_bytes(st):
            break
    st.pending.difference_update(out)
    return out


def batch_bytes(st: SpannState) -> int:
    """Posting bytes one maintenance batch may rewrite (see BATCH_SHARE)."""
    return max(BATCH_MIN_BYTES, int(BATCH_SHARE * st.table.ref_bytes))


def take_bytes(st: SpannState, postings: I64) -> I64:
    """The leading postings whose entries fit in one batch's bytes (at least one)."""
    sizes = st.table.post_entries[postings].astype(np.int64) * entry_bytes(st)
    n = int(np.searchsorted(np.cumsum(sizes), batch_bytes(st), side="right"))
    return postings[: max(1, n)]


class Counts:
    """Live and removed entries per posting for one `maintain` call: counted once (each
    count walks every entry of the file; per batch, it took over half of the maintenance
    time of a 390,000 x 384 load) and kept current by what the call itself changes:
    appended entries are live (the growth of each posting's entry count is added), a cleaned
    posting is all live, a new posting is all live. Entries that went stale meanwhile (LIRE
    moves) are seen by the next call's count."""

    def __init__(self, st: SpannState) -> None:
        self.st = st
        self._seen: LiveSeen | None = None  # this call's count (also `st.live_seen`)
        self._removed: I64 | None = None

    def live(self) -> I64:
        entries = compaction.entries(self.st)
        if self._seen is None:
            self._seen = compaction.known(self.st)
        return self._seen.estimate(entries)

    def removed(self) -> I64:
        if self._removed is None:
            self._removed = compaction.removed(self.st)
        return self._removed

    def cleaned(self, postings: I64) -> None:
        """`postings` were rewritten with their live entries only (the kept count, also
        this call's, followed at publish: `compaction.publish_rewrites`)."""
        if self._removed is not None:
            self._removed[postings[postings < len(self._removed)]] = 0


def merge_candidates(st: SpannState, live: I64, removed: I64 | None = None) -> I64:
    """Live postings that became small through deletes: fewer than `merge_threshold` visible
    entries, and at least one entry of a deleted slot. Entries that went stale because LIRE
    moved their vector elsewhere do not count: a split half emptied by reassignment merged
    straight back, split again, and maintenance never ended (seen with duplicate vectors)."""
    n = len(live)
    leaf = st.leaf_mask(n)
    small = np.flatnonzero(leaf & (live < st.params.merge_threshold))
    if len(small):
        gone = compaction.removed(st) if removed is None else removed
        small = small[small < len(gone)]
        small = small[gone[small] > 0]
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


def work_left(st: SpannState, live: I64, removed: I64 | None = None) -> bool:
    """Whether another call would find something to do."""
    if (st.pending and not st.is_stuck("split")) or defrag_due(st):
        return True
    if st.live_heads > 1 and len(merge_candidates(st, live, removed)):
        return True
    if st.is_stuck("clean"):
        return False
    return bool(len(compaction.dirty_postings(st, live, compaction.over_budget(st))))


def maintain(st: SpannState, budget_s: float | None = None) -> bool:
    """Run batches for about `budget_s` seconds (None: until done); True if work is left."""
    if st.graph is None:
        return False
    deadline = float("inf") if budget_s is None else time.monotonic() + budget_s
    counts = Counts(st)
    first = True
    while first or time.monotonic() < deadline:  # at least one batch per call
        first = False
        # Pass 6 (between batches): checkpoint by ourselves when much freed space waits
        maybe_checkpoint(st)
        st.update_ceiling(batch_bytes(st))
        limit = st.rewrite_limit()
        # Pass 0: over the disk budget, reclaim dead entries before anything adds more
        # (postings that became small are left to the merge pass: a clean-up would hide
        # that they lost entries)
        if compaction.over_budget(st) and not st.is_stuck("clean"):
            live = counts.live()
            small = merge_candidates(st, live, counts.removed())
            if len(small) and st.live_heads > 1:
                merge_batch(st, small[:MERGE_BATCH])
                continue
            dirty = compaction.dirty_postings(st, live, pressure=True)
            if len(dirty) and clean(st, counts, take_bytes(st, dirty[:CLEAN_BATCH]), limit):
                continue
        # Pass 1: split or clean queued postings
        if st.pending and not st.is_stuck("split"):
            split_batch(st, take_pending(st), limit)
            if not st.is_stuck("split"):
                continue
        live = counts.live()
        # Pass 2: merge postings that became small
        small = merge_candidates(st, live, counts.removed())
        if len(small) and st.live_heads > 1:
            merge_batch(st, small[:MERGE_BATCH])
            continue
        # Pass 3: clean postings with many dead entries (any, when over the disk budget)
        dirty = compaction.dirty_postings(st, live, compaction.over_budget(st))
        if len(dirty) and not st.is_stuck("clean"):
            if clean(st, counts, take_bytes(st, dirty[:CLEAN_BATCH]), limit):
                continue
        # Pass 4: a head graph without its deleted heads
        compaction.rebuild_heads(st)
        # Pass 5: free space piled up inside the file: move tail postings into it
        if defrag_due(st):
            if compaction.defrag_batch(st, DEFRAG_BATCH):
                continue
            st.stuck["defrag"] = st.disk_state()  # nothing could move: wait for a change
        break
    maybe_checkpoint(st)
    st.prune_stuck()  # what is left waits for the disk state to change (`unstuck`)
    if (st.pending and not st.is_stuck("split")) or defrag_due(st):
        return True  # as `work_left` would say, without counting the whole file first
    if work_left(st, counts.live(), counts.removed()):
        return True
    # done? a fresh count sees entries this call made stale (unless nothing did)
    return work_left(st, compaction.known(st).estimate(compaction.entries(st)))


def clean(st: SpannState, counts: Counts, postings: I64, limit: int) -> bool:
    """Clean up `postings` below the disk guard's `limit`; False if none found room
    (clean-ups then wait: `stuck`; the space waiting for a checkpoint frees at the next
    one, Pass 6's or the engine's, and that change lets them go on)."""
    done = compaction.clean_batch(st, postings, limit)
    counts.cleaned(postings[:done])
    if done == 0:
        st.stuck["clean"] = st.disk_state()
        return False
    return True


def defrag_due(st: SpannState) -> bool:
    """Free space is at least `compact_garbage` of the file and it changed since the last
    attempt that could move nothing."""
    space = st.file.space
    share = space.free_bytes / max(1, st.file.length)
    return share >= st.params.compact_garbage and not st.is_stuck("defrag")


def maybe_checkpoint(st: SpannState) -> None:
    """Pass 6: checkpoint at the last applied sequence once the bytes freed since the last
    checkpoint pass CHECKPOINT_FREED_SHARE of the referenced bytes (and CHECKPOINT_FREED_MIN):
    freed space is reusable only after a checkpoint stops naming it, so this keeps the file
    near its live size. Only once the engine has checkpointed (its sequence is known). Blocks
    a drain child holds for its parent (`SpaceMap.hold`) are not counted: no checkpoint
    frees them, so they would call for one before every batch."""
    due = max(CHECKPOINT_FREED_MIN, CHECKPOINT_FREED_SHARE * st.table.ref_bytes)
    if st.ckpt_no > 0 and st.file.space.awaiting_checkpoint > due:
        checkpoint(st, st.applied_seq)
        st.counters["self_checkpoints"] += 1
