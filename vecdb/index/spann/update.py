"""Online updates of a SPANN index: inserts, removes, and the write-then-publish steps that
splits, merges and clean-ups share.

An insert picks postings with the build's RNG rule and appends one block per touched posting
(encoded and written outside the lock, beyond anything a published table references), then
publishes under the write lock: versions bumped (old copies of a re-added slot become stale),
blocks pushed into the table, primary leaves moved. A slot removed meanwhile stays removed:
every publish re-checks versions (remove wins). Postings that grew over budget are queued for
`maintain`; nothing here splits. A remove is a version tombstone (REMOVED, forever) taken
under the write lock for microseconds. `read_live` reads a posting's visible entries with the
same predicate as the scan (kernels.posting); a "bits" posting's vectors come from the rerank
store (its codes cannot be decoded). Nothing is durable until a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.base import Progress
from vecdb.index.spann.assign import select_replicas
from vecdb.index.spann.state import SpannState
from vecdb.kernels.posting import VERSION_REMOVED, entries_visible, next_versions
from vecdb.kernels.unique import sorted_unique

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
ADD_ROWS = 16_384  # rows placed per publish (bounds the write-locked section)


@dataclass
class Written:
    """Blocks written to the file but not yet published: (posting, offset, count) each."""

    blocks: list[tuple[int, int, int]]  # where they are


def read_live(st: SpannState, posting: int, coded: bool = False) -> tuple[I64, F32, U8]:
    """The visible entries of a posting (CRC verified, one copy per slot): slots, vectors,
    versions. Safe outside the lock on the worker thread (only it writes the table). A
    "bits" posting holds no vectors: they are the rerank store's rows (its map, read on
    this thread), or with `coded` the entries themselves (uint64). An entry's code does not
    depend on its posting (`bitcodes`), so a rewrite of a posting's own entries (clean-up,
    defragmenting move, compaction) takes them `coded` and copies them: coding them again
    from the store's rows gives the same bytes at a cost (88% of a 1,024-d churn test's
    time went there)."""
    parts: list[tuple[I64, U8, F32]] = []
    for off, _ in st.table.chain(posting):
        _, s, ver, vec = st.file.read_block(off)
        ok = entries_visible(s, ver, st.slot_version)
        parts.append((s[ok], ver[ok], vec[ok]))
    bits = st.is_bits
    if not parts:
        none = (0, st.bdim) if bits and coded else (0, st.dim)
        kind = np.uint64 if bits and coded else np.float32
        return np.empty(0, np.int64), np.empty(none, kind), np.empty(0, np.uint8)
    slots = np.concatenate([p[0] for p in parts])
    slots, first = np.unique(slots, return_index=True)
    vers = np.concatenate([p[1] for p in parts])[first]
    if bits and not coded:
        assert st.store is not None  # a "bits" index always has one (`BuildParams.parse`)
        return slots, st.store.vectors(slots), vers
    vecs = np.concatenate([p[2] for p in parts])[first]
    return slots, vecs, vers


def read_live_coded(st: SpannState, posting: int) -> tuple[I64, F32, U8, npt.NDArray[Any]]:
    """`read_live` for a rewrite that needs the vectors (a split's 2-means, LIRE's
    distances) and writes the entries: slots, vectors, versions, and the entries to write
    (a "bits" posting's own uint64 entries, copied rather than coded again; the vectors
    themselves for other formats)."""
    if not st.is_bits:
        slots, vecs, vers = read_live(st, posting)
        return slots, vecs, vers, vecs
    slots, entries, vers = read_live(st, posting, coded=True)
    assert st.store is not None  # a "bits" index always has one (`BuildParams.parse`)
    vecs = st.store.vectors(slots) if len(slots) else np.empty((0, st.dim), np.float32)
    return slots, vecs, vers, entries


def coded(st: SpannState, vectors: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Rows as a "bits" file stores them: its entries (uint64), coded once; rows of
    another format, and entries already coded, as they are. A row's entry is the same in
    every posting (`bitcodes`), so a row written to 8 postings (its replicas), or moved
    by a split, needs coding once: at 1,536 dimensions coding is a 1,536 x 1,536 product
    a row (~150 us), and coding every copy again was 74% of a drain's time."""
    bits = st.bits
    if bits is None or vectors.dtype == np.uint64:
        return vectors
    out: npt.NDArray[Any] = bits.encode(vectors)
    return out


def chunk_bounds(n: int, cap: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges splitting n entries into full blocks of `cap` entries and one
    remainder. Full blocks all have one size, so the space one frees fits the next exactly
    (even splits left slivers the size of the differences, which nothing could reuse)."""
    return [(lo, min(n, lo + cap)) for lo in range(0, n, cap)]


def encode_chunks(
    st: SpannState, posting: int, slots: I64, vectors: F32, versions: U8
) -> list[tuple[U8, int]]:
    """A posting's entries as blocks of at most `st.block_cap` entries: (block, count)."""
    return [
        (st.file.encode(posting, slots[lo:hi], versions[lo:hi], vectors[lo:hi]), hi - lo)
        for lo, hi in chunk_bounds(len(slots), st.block_cap)
    ]


def write_entries(
    st: SpannState,
    slots: I64,
    vectors: F32,
    versions: U8,
    posts: I64,
    limit: int | None = None,
) -> Written:
    """Append each row to the postings in its row of `posts` (-1 padded), one block per
    posting, with one pwrite; not yet visible to searches. With `limit`, `NoRoom` (nothing
    written) rather than a data end past it. `vectors` may be "bits" entries already
    (uint64, `coded`); float rows of a "bits" file are coded once here, not once per copy."""
    vectors = coded(st, vectors)
    rows = np.repeat(np.arange(len(slots)), posts.shape[1])
    flat = posts.ravel()
    ok = flat >= 0
    rows, flat = rows[ok], flat[ok]
    order = np.argsort(flat, kind="stable")
    rows, flat = rows[order], flat[order]
    cut = np.flatnonzero(np.diff(flat)) + 1
    groups = np.split(rows, cut) if len(flat) else []
    pids = [int(g) for g in flat[np.concatenate(([0], cut))]] if len(flat) else []
    owners: list[int] = []
    blocks: list[U8] = []
    counts: list[int] = []
    for p, g in zip(pids, groups, strict=True):
        for block, count in encode_chunks(st, p, slots[g], vectors[g], versions[g]):
            owners.append(p)
            blocks.append(block)
            counts.append(count)
    offsets = st.file.append(blocks, limit)
    return Written([(p, int(o), c) for p, o, c in zip(owners, offsets, counts, strict=True)])


def write_block(
    st: SpannState,
    posting: int,
    slots: I64,
    vectors: F32,
    versions: U8,
    limit: int | None = None,
) -> Written:
    """One posting's entries as new blocks, as few as `block_pages` allows (clean-up
    rewrites); with `limit`, `NoRoom` (nothing written) rather than a data end past it."""
    return write_blocks(st, [(posting, slots, vectors, versions)], limit)


def write_blocks(
    st: SpannState, groups: list[tuple[int, I64, F32, U8]], limit: int | None = None
) -> Written:
    """Several postings' entries (posting, slots, vectors, versions) as new blocks in one
    append (split halves): with `limit`, all are written or none (`NoRoom`)."""
    framed = [
        (posting, part)
        for posting, slots, vectors, versions in groups
        if len(slots)
        for part in encode_chunks(st, posting, slots, vectors, versions)
    ]
    if not framed:
        return Written([])
    offsets = st.file.append([b for _, (b, _) in framed], limit)
    return Written([(p, int(o), c) for o, (p, (_, c)) in zip(offsets, framed, strict=True)])


def publish(st: SpannState, written: Written) -> None:
    """Push written blocks into the table (caller holds the write lock) and remap."""
    for p, off, count in written.blocks:
        st.push(p, off, count)
    st.refresh_reader()


def place(
    st: SpannState, slots: I64, vectors: F32, exclude: I64 | None = None
) -> tuple[I64, U8, Written]:
    """Choose postings for rows (never those in `exclude`) and write them with the slots'
    next versions: returns (postings (n, replicas), versions, written). The caller
    publishes with `commit_moves` under the write lock."""
    posts, _ = select_replicas(
        st.heads(),
        st.live_heads,
        vectors,
        st.params,
        st.threads,
        exclude,
        cap=st.placement_cap(len(vectors)),
    )
    cur = st.slot_version[slots]
    versions = next_versions(np.where(cur == VERSION_REMOVED, 0, cur).astype(np.uint8))
    return posts, versions, write_entries(st, slots, vectors, versions, posts)


def commit_moves(
    st: SpannState, slots: I64, versions: U8, posts: I64, written: Written, was: U8
) -> None:
    """Publish placed rows (caller holds the write lock): a slot whose version is still
    `was` (not removed meanwhile) takes its new version and primary leaf; blocks go into
    the table. Entries of slots removed meanwhile stay invisible (their version is REMOVED)."""
    still = st.slot_version[slots] == was
    moved = slots[still]
    st.stale_slots += int((was[still] != 0).sum())  # placed again: old copies went stale
    st.n_live += int((was[still] == 0).sum())
    st.slot_version[moved] = versions[still]
    st.tree.set_primary(moved, posts[still, 0])
    publish(st, written)


def add(st: SpannState, slots: I64, vectors: F32, progress: Progress | None = None) -> None:
    """Insert slots; re-adding a live slot re-places it; removed slots are ignored."""
    for lo in range(0, len(slots), ADD_ROWS):
        s, x = slots[lo : lo + ADD_ROWS], vectors[lo : lo + ADD_ROWS]
        if int(s.max()) >= len(st.slot_version):
            with st.lock.write("grow slots"):
                st.grow_slots(int(s.max()) + 1)
        was = st.slot_version[s].copy()
        keep = was != VERSION_REMOVED
        if not keep.all():
            s, x, was = s[keep], x[keep], was[keep]
        if len(s) == 0:
            continue
        # Pass 1 (no lock): choose postings, write the blocks
        posts, versions, written = place(st, s, x)
        # Pass 2 (no lock): widen the tree's radii along the new primary paths
        st.tree.widen(posts[:, 0], x)
        if st.store is not None:  # the rerank rows, before the slots are published
            st.store.write(s, x)
        # Pass 3 (write lock): publish
        with st.lock.write("add publish"):
            commit_moves(st, s, versions, posts, written, was)
        if progress is not None:
            progress("add", min(len(slots), lo + ADD_ROWS), len(slots))


def remove(st: SpannState, slots: I64) -> None:
    """Tombstone slots for good (any thread); unknown slots are remembered as removed."""
    s = sorted_unique(np.asarray(slots, dtype=np.int64).ravel())
    s = s[s >= 0]
    if len(s) == 0:
        return
    with st.lock.write("remove"):
        st.grow_slots(int(s[-1]) + 1)
        cur = st.slot_version[s]
        live = (cur != 0) & (cur != VERSION_REMOVED)
        st.n_live -= int(live.sum())
        st.stale_slots += int(live.sum())  # their copies went dead, wherever they are
        st.tree.drop_primary(s[live])
        st.slot_version[s] = VERSION_REMOVED
        if st.removes_since is not None:  # a publish is preparing (`SpannState.publish`)
            st.removes_since.append(s)
