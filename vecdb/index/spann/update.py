"""Online updates of a SPANN index, SPFresh style (LIRE): append, split, reassign, merge.

Inserts pick postings with the build's RNG rule and append one block per touched posting at
the end of the posting file. A posting over its entry budget (or with too many blocks) is
queued; processing it first drops stale and removed entries (the GC path) and, if it is still
too big, splits it by balanced 2-means into two new heads (added to the head graph; the old
head is deleted from it). Boundary vectors are then reassigned (LIRE): those of the new
postings nearer the old head than their new one, and those of the `reassign_k` postings
nearest the old head that a new head now beats. A reassigned vector gets a new version, which
makes all its old copies invisible at once, and is appended where the RNG rule now puts it.
Postings whose live count falls below `merge_threshold` are merged away: their head is deleted
and their vectors reassigned. Removes are version tombstones until compaction rewrites the
file. Nothing here is durable until the index checkpoints; the file is only appended to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vecdb.index.spann.build import balanced_kmeans, select_replicas, sq_dists
from vecdb.index.spann.killpoints import kill_point

if TYPE_CHECKING:
    from vecdb.index.spann.index import SpannIndex

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
MAX_CASCADE = 8  # queue passes per add; later work waits for the next add or maintain
DRAIN = 10_000  # queue passes of maintain(), which runs until nothing is pending


def next_versions(current: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Versions cycle 1..255; 0 means not live."""
    return (current.astype(np.int64) % 255 + 1).astype(np.uint8)


def append_entries(idx: SpannIndex, slots: I64, vectors: F32, posts: I64) -> None:
    """Append each row to the postings in its row of `posts` (-1 padded), one block per
    posting, all written with one pwrite; queue postings that got too big."""
    rows = np.repeat(np.arange(len(slots)), posts.shape[1])
    flat = posts.ravel()
    ok = flat >= 0
    rows, flat = rows[ok], flat[ok]
    order = np.argsort(flat, kind="stable")
    rows, flat = rows[order], flat[order]
    bounds = np.flatnonzero(np.diff(flat)) + 1
    groups = np.split(np.arange(len(flat)), bounds) if len(flat) else []
    pids = [int(flat[g[0]]) for g in groups]
    versions = idx.slot_version[slots]
    blocks = [
        idx.file.encode(p, slots[rows[g]], versions[rows[g]], vectors[rows[g]])
        for p, g in zip(pids, groups, strict=True)
    ]
    offsets = idx.file.append(blocks)
    for p, g, off in zip(pids, groups, offsets, strict=True):
        idx.table.push(p, int(off), len(g))
        if (
            idx.table.post_entries[p] > idx.limit
            or idx.table.post_blocks[p] > idx.params.max_blocks
        ):
            idx.pending.add(p)
    idx.refresh_reader()


def place(idx: SpannIndex, slots: I64, vectors: F32) -> None:
    """Give rows new versions (old copies become stale) and append them where the RNG rule
    puts them now."""
    if len(slots) == 0:
        return
    idx.slot_version[slots] = next_versions(idx.slot_version[slots])
    posts, _ = select_replicas(idx.heads(), idx.live_heads, vectors, idx.params, idx.threads)
    append_entries(idx, slots, vectors, posts)


def read_live(idx: SpannIndex, posting: int) -> tuple[I64, F32]:
    """The live entries of a posting (CRC verified, one copy per slot)."""
    parts_s, parts_v = [], []
    for off, _ in idx.table.chain(posting):
        _, s, ver, vec = idx.file.read_block(off)
        cur = idx.slot_version[np.clip(s, 0, len(idx.slot_version) - 1)]
        live = (s >= 0) & (s < len(idx.slot_version)) & (cur == ver) & (ver != 0)
        parts_s.append(s[live])
        parts_v.append(vec[live])
    if not parts_s:
        return np.empty(0, np.int64), np.empty((0, idx.dim), np.float32)
    slots = np.concatenate(parts_s)
    slots, first = np.unique(slots, return_index=True)
    return slots, np.concatenate(parts_v)[first]


def rewrite(idx: SpannIndex, posting: int, slots: I64, vectors: F32) -> None:
    """Replace a posting's chain by one block of the given entries (GC path)."""
    idx.table.clear(posting)
    if len(slots):
        block = idx.file.encode(posting, slots, idx.slot_version[slots], vectors)
        idx.table.push(posting, int(idx.file.append([block])[0]), len(slots))
    idx.counters["gc"] += 1


def split(idx: SpannIndex, posting: int) -> None:
    """Clean an oversize posting; split it in two if it is still over budget."""
    slots, vecs = read_live(idx, posting)
    if len(slots) <= idx.limit or idx.tree.head_node[posting] < 0:
        rewrite(idx, posting, slots, vecs)
        return
    kill_point("split")
    old_head = np.asarray(idx.heads().get_items([posting]), dtype=np.float32)
    centres, labels = balanced_kmeans(vecs, 2, idx.rng)
    if labels.min() == labels.max():  # identical vectors: halve arbitrarily
        labels = np.arange(len(slots)) % 2
    # Like the build, a head is the real member nearest its cluster's centre: synthetic
    # centroids of normalised vectors are shorter than real ones and would attract queries.
    centres = np.empty((2, idx.dim), dtype=np.float32)
    for c in range(2):
        members = vecs[labels == c]
        mean = members.mean(0, keepdims=True)
        centres[c] = members[int(sq_dists(members, mean)[:, 0].argmin())]
    new = [idx.new_head(c) for c in centres]
    idx.delete_head(posting)
    idx.tree.split(posting, new)
    idx.table.clear(posting)
    for c, p in enumerate(new):
        members = labels == c
        sv = idx.slot_version[slots[members]]
        block = idx.file.encode(p, slots[members], sv, vecs[members])
        idx.table.push(p, int(idx.file.append([block])[0]), int(members.sum()))
        if members.sum() > idx.limit:  # a posting far over budget takes several splits
            idx.pending.add(p)
    idx.counters["splits"] += 1
    kill_point("split")
    # LIRE (a): members of the new postings nearer the old head than their own new head.
    d_new = sq_dists(vecs, centres)
    d_own = d_new[np.arange(len(slots)), labels]
    d_old = sq_dists(vecs, old_head)[:, 0]
    moved = d_old < d_own
    cand_s, cand_v, cand_home = [slots[moved]], [vecs[moved]], [np.asarray(new)[labels[moved]]]
    # LIRE (b): vectors of nearby postings that a new head now beats.
    if idx.params.reassign_k and idx.live_heads > 2:
        k = min(idx.params.reassign_k, idx.live_heads - 2)
        near = idx.heads().knn_query(old_head, k=k + 2)[0][0].astype(np.int64)
        for q in near[~np.isin(near, new)][:k]:
            s, v = read_live(idx, int(q))
            if len(s) == 0:
                continue
            head_q = np.asarray(idx.heads().get_items([int(q)]), dtype=np.float32)
            d_q = sq_dists(v, head_q)[:, 0]
            best_new = sq_dists(v, centres).min(1)
            beat = (best_new < d_q) & (best_new < sq_dists(v, old_head)[:, 0])
            cand_s.append(s[beat])
            cand_v.append(v[beat])
            cand_home.append(np.full(int(beat.sum()), q))
    reassign(idx, np.concatenate(cand_s), np.concatenate(cand_v), np.concatenate(cand_home))


def reassign(idx: SpannIndex, slots: I64, vecs: F32, home: I64) -> None:
    """Re-run the RNG rule for candidates; move those whose home posting is no longer
    chosen (new version, appended to the chosen postings)."""
    if len(slots) == 0:
        return
    slots, first = np.unique(slots, return_index=True)
    vecs, home = vecs[first], home[first]
    posts, _ = select_replicas(idx.heads(), idx.live_heads, vecs, idx.params, idx.threads)
    move = ~(posts == home[:, None]).any(1)
    if move.any():
        idx.slot_version[slots[move]] = next_versions(idx.slot_version[slots[move]])
        append_entries(idx, slots[move], vecs[move], posts[move])
        idx.counters["reassigned"] += int(move.sum())


def merge(idx: SpannIndex, posting: int) -> None:
    """Delete a tiny posting's head and reassign its live vectors elsewhere."""
    slots, vecs = read_live(idx, posting)
    kill_point("merge")
    idx.delete_head(posting)
    idx.tree.remove(posting)
    idx.table.clear(posting)
    place(idx, slots, vecs)
    idx.counters["merges"] += 1


def process_pending(idx: SpannIndex, passes: int = MAX_CASCADE) -> None:
    """Split or clean queued postings; work they cause is queued for the next passes."""
    for _ in range(passes):
        if not idx.pending:
            return
        todo, idx.pending = sorted(idx.pending), set()
        for p in todo:
            if idx.table.post_first[p] < 0 or idx.tree.head_node[p] < 0:
                continue
            if idx.table.post_entries[p] > idx.limit:
                split(idx, p)
            elif idx.table.post_blocks[p] > idx.params.max_blocks:
                rewrite(idx, p, *read_live(idx, p))
        idx.refresh_reader()


def merge_small(idx: SpannIndex, live: I64) -> None:
    """Merge every posting with fewer than `merge_threshold` live entries (one head stays)."""
    heads = np.flatnonzero(idx.tree.head_node[: len(live)] >= 0)
    small = heads[live[heads] < idx.params.merge_threshold]
    for p in small[np.argsort(live[small], kind="stable")]:
        if idx.live_heads <= 1:
            break
        merge(idx, int(p))
    process_pending(idx, DRAIN)
