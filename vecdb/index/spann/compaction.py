"""Reclaiming space in a SPANN index: posting clean-ups, head-graph rebuilds, whole-file
compaction.

Appends, splits, moves and removes leave dead bytes: replaced blocks (unreferenced) and stale
or removed entries inside referenced blocks. `clean_batch` rewrites postings whose dead share
passed `POSTING_DEAD_SHARE` (or that have too many blocks) as one block each: written where no
table points, published in one write-locked step; the dropped blocks are free once a
checkpoint no longer names them (S2's free-space map recycles them in place). `rebuild_heads`
replaces the head graph by one without its deleted heads once they are a large share (built
privately, swapped under the lock). `compact` rewrites every posting into a new file
generation and publishes it with a checkpoint at the last applied sequence; it holds two
generations on disk at once, so maintenance uses it only when garbage passes
`compact_garbage` (a file without in-place reuse), never on a file that recycles its space.
`defrag_batch` moves the postings nearest the end of the file into free space below them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vecdb.index.spann.assign import make_head_graph
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.persist import checkpoint
from vecdb.index.spann.postings import PAGE, MmapReader, PostingFile
from vecdb.index.spann.space import NoRoom
from vecdb.index.spann.state import LiveSeen, SpannState, file_path, open_reader
from vecdb.index.spann.table import BlockTable
from vecdb.index.spann.update import (
    Written,
    chunk_bounds,
    encode_chunks,
    publish,
    read_live,
    write_block,
)
from vecdb.kernels.posting import live_counts, removed_counts

I64 = npt.NDArray[np.int64]
POSTING_DEAD_SHARE = 0.5  # a posting is rewritten once this share of its entries is dead
POSTING_DEAD_MIN = 8  # ... and at least this many are dead
PRESSURE_DEAD_SHARE = 0.1  # over the disk budget, this share of dead entries is enough
REBUILD_DELETED = 0.2  # rebuild the head graph when deleted heads exceed this share
GROUP_BYTES = 32 << 20  # live entries packed per write during compaction
WALK_BYTES = 256 << 20  # posting files above this are not counted whole at every change
STALE_SHARE = 0.02  # ... but once this share of their entries may have gone stale (`known`)


def counts(st: SpannState, keep: bool = True) -> I64:
    """Visible entries per posting id (replicas counted), walking every referenced block;
    worker thread, or any thread under the read lock. Kept as `st.live_seen` (`known`,
    `stats`) when `keep` (the worker's counts only: its clean-ups keep that one current)."""
    u8, u32, _, _ = MmapReader(st.file).views()  # the worker's own map: searches keep theirs
    t = st.table
    out: I64 = live_counts(u8, u32, t.post_first, t.blk_next, t.blk_off, t.blk_cnt, st.slot_version)
    out = out[: st.next_posting]
    if keep:
        base = t.post_entries[: len(out)].astype(np.int64)
        st.live_seen = LiveSeen(t, out, base, st.stale_slots)
    return out


def entries(st: SpannState) -> I64:
    """Entries per posting id (stale and removed ones included), from the block table."""
    out: I64 = st.table.post_entries[: st.next_posting].astype(np.int64)
    return out


def tolerance(st: SpannState) -> float:
    """The share of stale entries a kept count may miss (`known`): 0 for a posting file of
    at most `WALK_BYTES` or one over its disk budget, else `STALE_SHARE`."""
    return STALE_SHARE if st.file.length > WALK_BYTES and not over_budget(st) else 0.0


def known(st: SpannState) -> LiveSeen:
    """The last whole count if it is still current (`LiveSeen.current`), else a new one: an
    index that only takes inserts is counted once, not at every maintenance call (each
    count walks every entry of the file: at 10,000,000 x 96, 2.3 GB once cold). A posting
    file over `WALK_BYTES` within its disk budget keeps its count until the copies of the
    slots removed or moved since are `STALE_SHARE` of its entries: clean-ups and merges wait
    that long (under the disk budget's pressure, every call counts), and the walks of a
    growing file cost O(its final size) in all."""
    seen = st.live_seen
    if seen is None or not seen.current(st, tolerance(st)):
        counts(st)
        seen = st.live_seen
    assert seen is not None
    return seen


def over_budget(st: SpannState) -> bool:
    """Over the disk budget (`SpannState.over_budget`): every dead entry is worth
    reclaiming."""
    return st.over_budget()


def removed(st: SpannState) -> I64:
    """Entries per posting id whose slot was deleted (not merely moved); worker thread.
    Kept with a current `live_seen` (removes make it stale) and reused while it is."""
    seen = st.live_seen
    if seen is not None and seen.removed is not None and seen.current(st, tolerance(st)):
        return seen.removed
    u8, u32, _, _ = MmapReader(st.file).views()
    t = st.table
    out: I64 = removed_counts(
        u8, u32, t.post_first, t.blk_next, t.blk_off, t.blk_cnt, st.slot_version
    )
    out = out[: st.next_posting]
    if seen is not None and seen.current(st):  # counted at the same state: keep them together
        seen.removed = out
    return out


def dirty_postings(st: SpannState, live: I64, pressure: bool = False) -> I64:
    """Postings worth a clean-up rewrite: high dead share, or too many blocks; under disk
    `pressure`, every posting with a dead entry, most dead first."""
    n = len(live)
    entries = st.table.post_entries[:n].astype(np.int64)
    dead = entries - live
    leaf = st.leaf_mask(n) & (live >= st.params.merge_threshold)  # small: merge
    if pressure:
        cand = np.flatnonzero((dead >= np.maximum(1, PRESSURE_DEAD_SHARE * entries)) & leaf)
        out: I64 = cand[np.argsort(-dead[cand], kind="stable")]
        return out
    high = (dead >= POSTING_DEAD_MIN) & (dead >= POSTING_DEAD_SHARE * entries)
    needed = -(-entries // st.block_cap)
    many = st.table.post_blocks[:n] - needed >= st.params.max_blocks
    out = np.flatnonzero((high | many) & leaf)
    return out


def clean_batch(st: SpannState, postings: I64, limit: int | None = None) -> int:
    """Rewrite postings as one block of their visible entries each, in order, until one
    finds no room below `limit` (the disk guard); return how many were rewritten."""
    plans: list[tuple[int, Written]] = []
    for p in postings.tolist():
        slots, vecs, vers = read_live(st, p, coded=True)  # "bits": the entries, copied
        try:
            plans.append((p, write_block(st, p, slots, vecs, vers, limit)))
        except NoRoom:
            break
    if plans:
        publish_rewrites(st, plans, "gc")
    return len(plans)


def publish_rewrites(st: SpannState, plans: list[tuple[int, Written]], counter: str) -> None:
    """Publish postings rewritten with their visible entries only (clean-ups, defragmenting
    moves) in one write-locked step, counted in `st.counters[counter]`; the kept live count
    (`LiveSeen`) then holds all their entries as live."""
    with st.lock.write(f"{counter} publish"):
        for p, written in plans:
            st.clear(p)
            publish(st, written)
        st.counters[counter] += len(plans)
        if st.live_seen is not None:
            st.live_seen.rewritten(st, np.array([p for p, _ in plans], np.int64))


def garbage_fraction(st: SpannState, live: I64) -> float:
    """Dead share of the posting file: unreferenced bytes (free or waiting for a checkpoint)
    plus stale or removed entries inside referenced blocks."""
    entries = int(st.table.post_entries.sum())
    stale = 1.0 - float(live.sum()) / entries if entries else 0.0
    data = max(1, st.file.length - PAGE)
    return (data - st.table.ref_bytes + stale * st.table.ref_bytes) / data


def defrag_batch(st: SpannState, limit: int) -> bool:
    """Move up to `limit` postings nearest the end of the file into free space below their
    blocks (rewritten with their visible entries only), once free space is at least
    `compact_garbage` of the file; return whether any moved. The dropped tail blocks free at
    the next checkpoint and the file is cut there."""
    space = st.file.space
    cand = space.fragmented_postings(st.table, limit, st.params.compact_garbage)
    moved: list[tuple[int, Written]] = []
    for p in cand.tolist():
        chain = st.table.chain(p)
        if not chain or not st.is_posting(p):
            continue
        slots, vecs, vers = read_live(st, p, coded=True)  # "bits": the entries, copied
        if len(slots) == 0:
            continue
        # wholly below its last block: the posting moves away from the end of the file
        below = max(o for o, _ in chain)
        parts = encode_chunks(st, p, slots, vecs, vers)
        placed: list[tuple[int, int]] = []
        for block, count in parts:
            off = st.file.move(block, below)
            if off < 0:
                break
            placed.append((off, count))
        if len(placed) < len(parts):  # all or nothing: give back what was taken
            st.file.unallocate([o for o, _ in placed], [len(b) for b, _ in parts[: len(placed)]])
            continue
        moved.append((p, Written([(p, o, c) for o, c in placed])))
    if not moved:
        return False
    kill_point("defrag")
    publish_rewrites(st, moved, "defrags")
    return True


def rebuild_heads(st: SpannState, force: bool = False) -> bool:
    """Rebuild the head graph without its deleted heads once they are a large share, or
    any if `force` (the graph keeps deleted nodes for routing; they cost memory and time). The
    new graph is built by hnswlib and kept in the compact `HeadGraph` arrays, as a bulk build's."""
    graph = st.heads()
    labels = st.tree.leaf_postings()
    share = 0.0 if force else REBUILD_DELETED
    if len(labels) == 0 or graph.get_current_count() <= (1 + share) * len(labels):
        return False
    fresh = make_head_graph(st.head_vectors(labels), st.metric, st.params, st.threads, labels)
    with st.lock.write("heads rebuild publish"):
        st.graph = fresh
        st.live_heads = len(labels)
        st.heads_dirty = True
    return True


def compact(st: SpannState) -> None:
    """Rewrite every posting's visible entries into a fresh, packed file generation and
    switch to it; published by a checkpoint at the last applied sequence."""
    # Pass 1: write the new generation (no lock)
    gen = st.file_gen + 1
    new = PostingFile(
        file_path(st.directory, "postings", gen),
        st.dim,
        width=st.width,
        quant=st.file.quant,
        full_cap=st.block_cap,
    )
    table = new.attach(BlockTable(st.bdim, st.width))
    table.ensure(st.next_posting)
    batch: list[tuple[int, int]] = []
    blocks: list[npt.NDArray[np.uint8]] = []
    size = 0
    heads = st.tree.leaf_postings().tolist()
    for i, p in enumerate(heads):
        slots, vecs, vers = read_live(st, p, coded=True)  # "bits": the entries, copied
        for lo, hi in chunk_bounds(len(slots), st.block_cap):
            blocks.append(new.encode(p, slots[lo:hi], vers[lo:hi], vecs[lo:hi]))
            batch.append((p, hi - lo))
            size += len(blocks[-1])
        if blocks and (size >= GROUP_BYTES or i == len(heads) - 1):
            for (q, count), off in zip(batch, new.write_packed(blocks), strict=True):
                table.push(q, int(off), count)
            batch, blocks, size = [], [], 0
    new.sync()
    kill_point("compaction")
    reader = open_reader(new, st.params.io)
    # Pass 2: switch readers and tables to it (write lock)
    old_file, old_reader = st.file, st.reader
    with st.lock.write("compaction publish"):
        st.file, st.table, st.reader, st.file_gen = new, table, reader, gen
        st.pending.clear()
        st.freed_bytes = 0
    old_reader.close()
    old_file.close()
    st.counters["compactions"] += 1
    # Pass 3: drop deleted heads from the graph; Pass 4: publish (deletes the old file)
    rebuild_heads(st, force=True)
    checkpoint(st, st.applied_seq)
