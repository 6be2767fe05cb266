"""Splits in batches, with one batched LIRE reassignment per batch (SPFresh).

A batch of queued postings is handled in passes. Pass 1 (no lock) reads each posting's
visible entries. Pass 2 (no lock) goes through them: one still within budget is only
rewritten as one block (the clean-up path); one over budget is cut in two by balanced
2-means, each half's head being the real member nearest its centre, and the halves are
written as new postings (clustering each just before its write: the postings left when the
disk guard finds no room go back to the queue unclustered). Pass 3 adds the new
heads to the graph in short write-locked steps (searches meanwhile may find them with empty
postings: harmless, the old posting still holds every vector). Pass 4 publishes the batch in
one write-locked step: old chains cleared, halves pushed, old heads deleted, the tree's leaves
split. Pass 5 (no lock) gathers LIRE candidates: members nearer the old head than their new
one, and vectors of the `reassign_k` postings nearest each old head that a new head now
serves better; ONE `select_replicas` call places them all and the movers' new copies are
written. Pass 6 publishes the moves (new versions make old copies stale at once). LIRE's
"nearest partition" of a vector is its primary leaf (nearest posting holding a copy): only
vectors whose primary copy is in a split posting, or in a nearby posting a new head now beats,
are checked. Checking every replica moved ~5 vectors per insert on structureless 1024-d
data, each rewriting all its copies, which fed further splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.index.spann.assign import nearest_heads, select_replicas
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.space import NoRoom
from vecdb.index.spann.state import SpannState
from vecdb.index.spann.update import (
    Written,
    commit_moves,
    publish,
    read_live_coded,
    write_blocks,
    write_entries,
)
from vecdb.kernels.kmeans import kmeans, sq_dists
from vecdb.kernels.posting import next_versions

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
HEADS_PER_LOCK = 64  # new heads added to the graph per write-locked step
SPLIT_BALANCE = 1.0  # size penalty of the 2-means (halves of similar size)


@dataclass
class Split:
    """One posting being split (or only cleaned when `labels` is None)."""

    posting: int  # the posting
    slots: I64  # its visible entries
    vecs: F32  # their vectors
    vers: U8  # their versions
    entries: npt.NDArray[Any]  # what is written for them (`read_live_coded`)
    labels: I64 | None = None  # half of each entry (0 / 1); None: clean-up only
    heads: F32 | None = None  # (2, dim) the new heads (real members)
    old_head: F32 | None = None  # the posting's head vector
    new: tuple[int, int] = (-1, -1)  # posting ids of the halves
    written: Written | None = None  # the written halves (or the cleaned block)


def two_means(st: SpannState, vecs: F32) -> tuple[I64, F32]:
    """Balanced 2-means; each half's head is its member nearest the half's centre."""
    labels = kmeans(vecs, 2, iters=8, balance=SPLIT_BALANCE, seed=st.rng).labels
    if labels.min() == labels.max():  # identical vectors: halve arbitrarily
        labels = np.arange(len(vecs), dtype=np.int64) % 2
    heads = np.empty((2, st.dim), np.float32)
    for c in range(2):
        members = vecs[labels == c]
        mean = members.mean(0, keepdims=True, dtype=np.float64).astype(np.float32)
        heads[c] = members[int(sq_dists(members, mean)[:, 0].argmin())]
    return labels, heads


def add_heads(st: SpannState, heads: F32, labels: I64) -> None:
    """Pass 3: new heads into the graph, a few per write-locked step."""
    graph = st.heads()
    for lo in range(0, len(heads), HEADS_PER_LOCK):
        h, lab = heads[lo : lo + HEADS_PER_LOCK], labels[lo : lo + HEADS_PER_LOCK]
        with st.lock.write("split: add heads"):
            need = graph.get_current_count() + len(h)
            if need > graph.get_max_elements():
                graph.resize_index(max(need, int(graph.get_max_elements() * 1.25)) + 64)
            graph.add_items(h, lab, num_threads=1)


def write_plan(st: SpannState, s: Split, limit: int | None) -> bool:
    """Write a plan's blocks (the cleaned posting, or both halves under two new posting
    ids, in one append); False, with nothing written and no id taken, if they find no room
    below `limit`."""
    if s.labels is None:
        groups = [(s.posting, s.slots, s.entries, s.vers)]
    else:
        new = (st.next_posting, st.next_posting + 1)
        groups = [(q, s.slots[m], s.entries[m], s.vers[m])
                  for c, q in enumerate(new) for m in [s.labels == c]]  # fmt: skip
    try:
        s.written = write_blocks(st, groups, limit)
    except NoRoom:
        return False
    if s.labels is not None:
        s.new = new
        st.next_posting += 2
    return True


def split_batch(st: SpannState, postings: list[int], limit: int | None = None) -> None:
    """Split or clean a batch of queued postings, then reassign boundary vectors once;
    rewrites wait (re-queued) rather than take the file's data end past `limit`."""
    # Pass 1: read
    plans = [Split(p, *read_live_coded(st, p)) for p in postings if st.is_posting(p)]
    # Pass 2: cluster a posting over budget just before writing it, then write its halves
    # (or the cleaned posting) where no table points, below the disk guard's limit: the
    # plans from the first that finds no room on wait, queued (and not yet clustered)
    done = 0
    for s in plans:
        if len(s.slots) > st.limit:
            s.labels, s.heads = two_means(st, s.vecs)
            s.old_head = st.head_vectors(np.array([s.posting]))[0]
        if not write_plan(st, s, limit):
            break
        done += 1
    st.pending.update(s.posting for s in plans[done:])
    if plans and done == 0:
        st.stuck["split"] = st.disk_state()
    plans = plans[:done]
    splits = [s for s in plans if s.labels is not None]
    kill_point("split")
    # Pass 3: the new heads into the graph
    if splits:
        heads = np.concatenate([s.heads for s in splits if s.heads is not None])
        add_heads(st, heads, np.array([q for s in splits for q in s.new], np.int64))
    # Pass 4: publish the batch
    with st.lock.write("split publish"):
        for s in plans:
            assert s.written is not None
            st.pending.discard(s.posting)
            st.clear(s.posting)
            publish(st, s.written)  # may queue a half that is still over budget
            if s.labels is None:
                st.counters["gc"] += 1
                continue
            assert s.old_head is not None
            st.delete_head(s.posting)
            st.live_heads += 2
            st.tree.split_leaf(s.posting, s.new, s.old_head, s.slots, s.labels)
            st.counters["splits"] += 1
    kill_point("split")
    for s in splits:  # radii of the new leaves (only grow: safe outside the lock)
        assert s.labels is not None
        mine = st.tree.primary[s.slots] == np.asarray(s.new)[s.labels]
        st.tree.widen(np.asarray(s.new, np.int64)[s.labels[mine]], s.vecs[mine])
    reassign(st, splits, limit)


def lire_candidates(
    st: SpannState, splits: list[Split]
) -> tuple[I64, F32, I64, U8, npt.NDArray[Any]]:
    """Pass 5a: (slots, vectors, home posting, version, entries to write) of the vectors
    LIRE re-checks."""
    cs, cv, ch, cver, ce = [], [], [], [], []
    near_cache: dict[int, tuple[I64, F32, U8, F32, npt.NDArray[Any]]] = {}
    new_all = {q for s in splits for q in s.new}
    for s in splits:
        assert s.labels is not None and s.heads is not None and s.old_head is not None
        d_new = sq_dists(s.vecs, s.heads)
        d_own = d_new[np.arange(len(s.slots)), s.labels]
        d_old = sq_dists(s.vecs, s.old_head[None, :])[:, 0]
        # (a) primary members nearer the old head than their own new head (a member whose
        # nearest copy is elsewhere keeps that copy: its nearest partition did not change)
        mine = np.isin(st.tree.primary[s.slots], s.new)
        far = mine & (d_old < d_own)
        cs.append(s.slots[far])
        cv.append(s.vecs[far])
        ch.append(np.asarray(s.new, np.int64)[s.labels[far]])
        cver.append(s.vers[far])
        ce.append(s.entries[far])
        k = min(st.params.reassign_k, st.live_heads - 2)
        if k <= 0:
            continue
        near, _ = nearest_heads(st.heads(), st.live_heads, s.old_head[None, :], k + 2, k + 2, 1)
        for q in [int(q) for q in near[0] if int(q) not in new_all][:k]:
            if q not in near_cache:
                qs, qv, qver, qe = read_live_coded(st, q)
                head_q = st.head_vectors(np.array([q]))[0]
                near_cache[q] = (qs, qv, qver, sq_dists(qv, head_q[None, :])[:, 0], qe)
            qs, qv, qver, d_q, qe = near_cache[q]
            if len(qs) == 0:
                continue
            best_new = sq_dists(qv, s.heads).min(1)
            beat = (best_new < d_q) & (best_new < sq_dists(qv, s.old_head[None, :])[:, 0])
            beat &= st.tree.primary[qs] == q  # (b) only vectors whose nearest copy is q
            cs.append(qs[beat])
            cv.append(qv[beat])
            ch.append(np.full(int(beat.sum()), q, np.int64))
            cver.append(qver[beat])
            ce.append(qe[beat])
    if not cs:
        none = np.empty((0, st.dim), np.float32)
        return np.empty(0, np.int64), none, np.empty(0, np.int64), np.empty(0, np.uint8), none
    return (np.concatenate(cs), np.concatenate(cv), np.concatenate(ch), np.concatenate(cver),
            np.concatenate(ce))  # fmt: skip


def reassign(st: SpannState, splits: list[Split], limit: int | None = None) -> None:
    """Passes 5 and 6: one RNG placement of every candidate; move those whose home posting
    is no longer chosen."""
    slots, vecs, home, was, entries = lire_candidates(st, splits)
    if len(slots) == 0:
        return
    slots, first = np.unique(slots, return_index=True)
    vecs, home, was, entries = vecs[first], home[first], was[first], entries[first]
    posts, _ = select_replicas(
        st.heads(), st.live_heads, vecs, st.params, st.threads, cap=st.placement_cap(len(vecs))
    )
    move = ~(posts == home[:, None]).any(1)
    if not move.any():
        return
    slots, vecs, posts, was = slots[move], vecs[move], posts[move], was[move]
    versions = next_versions(was)
    try:  # LIRE moves improve placement; with no room below the disk guard they are skipped
        written = write_entries(st, slots, entries[move], versions, posts, limit)
    except NoRoom:
        st.counters["reassign_skipped"] += len(slots)
        return
    st.tree.widen(posts[:, 0], vecs)
    with st.lock.write("reassign publish"):
        commit_moves(st, slots, versions, posts, written, was)
        st.counters["reassigned"] += len(slots)
