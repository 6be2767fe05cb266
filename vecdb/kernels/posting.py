"""Numba kernels over SPANN posting blocks and head candidates.

Pure functions on arrays (no I/O, no globals): walking block chains, counting visible
entries and the RNG replica rule (the scan of blocks for queries is `vecdb.kernels.groupscan`). It also defines, once, the version byte cycle and the
"entry visible" predicate that the scan, the live counts and the posting readers share. A block
at byte offset `o` with `n` entries has `cap = n` (`MIN_CAP` at least); slots start at
`o + 64` (uint32: `SLOT_BYTES`), versions (uint8) at `o + 64 + 4 cap`, and the `[dim][cap]`
components (float32, float16 bits or uint8 codes) at `o + ceil((64 + 5 cap)/64)*64` (see
`vecdb.index.spann.postings`). Search kernels release the GIL so concurrent searches run in
parallel. Hot loops slice views instead of indexing with computed signed offsets, which
blocks vectorisation in numba.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

METRIC_L2, METRIC_IP, METRIC_COSINE = 0, 1, 2
METRIC_CODE = {"l2": METRIC_L2, "ip": METRIC_IP, "cosine": METRIC_COSINE}  # by metric name
# `prune_postings`' `always` of a search: the nearest postings read whatever the ratio says.
# Eight, so a small index is read whole: 120 random 12-d vectors (5 heads) kept 2 of their 5
# postings by the ratio's share below and got recall@10 0.958, 225 (10 heads) 0.994; from 16
# postings a query (every default) the share below keeps 8 or more anyway.
ALWAYS_READ = 8
# ... and the nearest m // ALWAYS_SHARE of a query's m: pruning may at most halve what a query
# reads, so a larger max_postings still buys recall (with only the two nearest kept, a ratio of
# 1.8 capped low-rank data at recall@10 0.973 whatever max_postings; bench/RESULTS.md)
ALWAYS_SHARE = 2
PARALLEL_MIN_ROWS = 4096  # below this, kernels run on the calling thread


BLOCK_HEADER = 64  # bytes of a block's header; blocks and their vector part are 64-aligned
# A posting entry's slot is a uint32 (format 5; int64 before): 4 bytes an entry less, 6-7% of
# a posting at 384-d bits / 50-d int8. Slots are never reused, so a collection may hand out at
# most MAX_SLOTS in its life (`PointTable.check_room`); SLOT_NONE pads an empty block.
SLOT_BYTES = 4
SLOT_DTYPE = np.uint32
SLOT_NONE = 0xFFFFFFFF
MAX_SLOTS = SLOT_NONE  # slots 0 .. MAX_SLOTS - 1

# Per-slot version bytes. An entry is written with its slot's version at the time; moving a
# slot (reassignment, re-adding) gives it the next version, which makes every older copy
# invisible at once. A removed slot gets REMOVED forever (remove wins: it never becomes live
# again), so no entry ever carries 0 or REMOVED.
VERSION_NONE = 0  # slot never added
VERSION_REMOVED = 255  # slot removed, for good
VERSION_CYCLE = 254  # live versions are 1..254
MIN_CAP = 1  # a block has room for exactly its entries (at least one)


# The block layout, defined once: `_layout` for the kernels here, `block_layout` and
# `block_bytes` (its Python and vectorised forms) for the posting file, the block table and
# the search's byte accounting.
@nb.njit(cache=True, inline="always")
def _layout(n: int) -> tuple[int, int]:
    cap = max(MIN_CAP, n)
    return cap, (BLOCK_HEADER + (SLOT_BYTES + 1) * cap + 63) // 64 * 64


# "bits" blocks (width 8, `dim` = the code's words + 1): each full group of BITS_GROUP entries
# holds its code words word-major, then its BITS_GROUP `add` and BITS_GROUP `mul` factors as
# bfloat16 (BITS_FACTOR_WORDS words: 4 bytes an entry, not 8); the last count % BITS_GROUP
# entries keep `dim` words each, their factors as float32 (`kernels.bitscan.to_lanes`).
BITS_GROUP = 8
BITS_FACTOR_WORDS = 4
BITS_WIDTH = 8  # the width of "bits" blocks (`index.params.BuildParams.width`)


def vector_bytes(width: Any, dim: Any, cap: Any) -> Any:
    """Bytes of a block's vector part: `width` x `dim` x `cap`, but for "bits" blocks their
    lane groups' narrower factors (see BITS_GROUP). `cap` may be an array (`block_bytes`);
    `body_bytes` is the same function compiled for the kernels."""
    if width == BITS_WIDTH:
        groups, tail = cap // BITS_GROUP, cap % BITS_GROUP
        return 8 * (groups * (BITS_GROUP * (dim - 1) + BITS_FACTOR_WORDS) + tail * dim)
    return width * dim * cap


body_bytes = nb.njit(cache=True, inline="always")(vector_bytes)


def block_layout(count: int, dim: int, width: int = 4) -> tuple[int, int, int]:
    """(cap, byte offset of the vector part, total bytes) of a block of `count` entries whose
    components take `width` bytes (4 float32, 2 float16, 1 int8 codes, 8 "bits" words)."""
    cap = max(MIN_CAP, count)
    vec_off = -(-(BLOCK_HEADER + (SLOT_BYTES + 1) * cap) // 64) * 64
    return cap, vec_off, vec_off + int(vector_bytes(width, dim, cap))


PAGE_BYTES = 4096  # the posting file's read unit
EXTENT_ALIGN = 64  # blocks start on, and occupy, multiples of this


def block_extent(count: int, dim: int, width: int, full_cap: int = 0) -> int:
    """Bytes a block of `count` entries occupies in the file: its size rounded up to 64
    bytes, or to whole pages for a full block (`count >= full_cap > 0`), so that every full
    block occupies the same page-aligned extent and the space one frees fits the next."""
    nbytes = block_layout(count, dim, width)[2]
    unit = PAGE_BYTES if 0 < full_cap <= count else EXTENT_ALIGN
    return -(-nbytes // unit) * unit


def block_extents(
    cnt: npt.NDArray[np.int64], dim: int, width: int, full_cap: int = 0
) -> npt.NDArray[np.int64]:
    """Vectorised `block_extent`."""
    nbytes = block_bytes(cnt, dim, width)
    unit = np.where((full_cap > 0) & (cnt >= full_cap), PAGE_BYTES, EXTENT_ALIGN)
    out: npt.NDArray[np.int64] = -(-nbytes // unit) * unit
    return out


def block_bytes(cnt: npt.NDArray[np.int64], dim: int, width: int) -> npt.NDArray[np.int64]:
    """Total bytes of blocks holding `cnt` entries (vectorised `block_layout`)."""
    cap = np.maximum(MIN_CAP, cnt)
    pre = (BLOCK_HEADER + (SLOT_BYTES + 1) * cap + 63) // 64 * 64
    out: npt.NDArray[np.int64] = pre + vector_bytes(width, dim, cap)
    return out


def next_versions(current: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The version a slot gets when it is (re)placed: 0 -> 1, v -> v + 1 cycling in
    1..254. Callers never pass REMOVED (a removed slot is not placed)."""
    out: npt.NDArray[np.uint8] = (current.astype(np.int64) % VERSION_CYCLE + 1).astype(np.uint8)
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def entry_visible(slot, version, slot_version, vis, use_vis):  # type: ignore[no-untyped-def]
    """THE test of whether a posting entry (slot, version) counts: the slot is known, its
    current version is live and equals the entry's (not stale, not removed), and, when
    `use_vis`, the slot is in the packed little-endian bitmap `vis`."""
    if slot < 0 or slot >= slot_version.shape[0]:
        return False
    cur = slot_version[slot]
    if cur == VERSION_NONE or cur == VERSION_REMOVED or cur != version:
        return False
    if use_vis:
        byte = slot >> 3
        if byte >= vis.shape[0] or (vis[byte] >> (slot & 7)) & 1 == 0:
            return False
    return True


NO_VISIBLE = np.zeros(0, dtype=np.uint8)  # the `vis` argument when no set restricts


def entries_visible(
    slots: npt.NDArray[np.int64],
    versions: npt.NDArray[np.uint8],
    slot_version: npt.NDArray[np.uint8],
    vis: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.bool_]:
    """`entry_visible` vectorised with numpy (for readers of whole postings)."""
    known = (slots >= 0) & (slots < len(slot_version))
    cur = slot_version[np.where(known, slots, 0)] if len(slot_version) else versions * 0
    ok: npt.NDArray[np.bool_] = (
        known & (cur == versions) & (cur != VERSION_NONE) & (cur != VERSION_REMOVED)
    )
    if vis is not None:
        byte = np.where(ok, slots >> 3, 0)
        inside = byte < len(vis)
        bit = (vis[np.where(inside, byte, 0)] >> (slots & 7).astype(np.uint8)) & 1
        ok &= inside & (bit == 1)
    return ok


@nb.njit(cache=True, nogil=True)
def count_visible(slot_version, vis, use_vis):  # type: ignore[no-untyped-def]
    """Number of live slots (in `vis` when `use_vis`): how many results a search can find."""
    total = 0
    for s in range(slot_version.shape[0]):
        v = slot_version[s]
        if entry_visible(s, v, slot_version, vis, use_vis):
            total += 1
    return total


@nb.njit(cache=True, nogil=True)
def prune_postings(labels, dists, is_ip, ratio, always):  # type: ignore[no-untyped-def]
    """The posting ids each query reads, -1 where pruned (labels / dists nearest first): a
    posting is kept when its head is within `ratio` of the nearest head (distance <= ratio x
    the nearest positive one; for inner products the gap to the best is compared with its
    magnitude); the first max(`always`, m // ALWAYS_SHARE) are kept whatever the ratio says."""
    nq, m = labels.shape
    always = max(always, m // ALWAYS_SHARE)
    sel = np.empty((nq, m), dtype=np.int64)
    r = np.float32(ratio)
    r1 = np.float32(ratio - 1.0)
    for i in range(nq):
        d1 = dists[i, 0]
        ref = d1
        if not is_ip and not d1 > 0:
            # A query sitting on a head has d1 = 0, and ratio x 0 would prune every posting
            # but the nearest two: measure from the nearest head at a positive distance.
            ref = np.float32(np.inf)
            for j in range(m):
                if dists[i, j] > 0 and dists[i, j] < ref:
                    ref = dists[i, j]
        for j in range(m):
            d = dists[i, j]
            keep = (d - d1 <= r1 * abs(d1)) if is_ip else (d <= r * ref)
            sel[i, j] = labels[i, j] if (keep or j < always) else -1
    return sel


@nb.njit(cache=True, nogil=True)
def gather_blocks(sel, post_first, blk_next, blk_off, blk_cnt, dim, width, page):  # type: ignore[no-untyped-def]
    """Flatten the block chains of each query's selected postings (sel: (nq, m), -1 padded;
    ids past the table count as -1) into CSR form: (ptr (nq+1), offsets, counts, bytes of
    each block, pages the blocks span in total, postings selected)."""
    nq, m = sel.shape
    npost = post_first.shape[0]
    total = 0
    for i in range(nq):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                b = post_first[p]
                while b >= 0:
                    total += 1
                    b = blk_next[b]
    ptr = np.zeros(nq + 1, dtype=np.int64)
    off = np.empty(total, dtype=np.int64)
    cnt = np.empty(total, dtype=np.int64)
    nbytes = np.empty(total, dtype=np.int64)
    pages = 0
    postings = 0
    t = 0
    for i in range(nq):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                postings += 1
                b = post_first[p]
                while b >= 0:
                    o = blk_off[b]
                    n = blk_cnt[b]
                    cap, voff = _layout(n)
                    size = voff + body_bytes(width, dim, cap)
                    off[t] = o
                    cnt[t] = n
                    nbytes[t] = size
                    pages += (o + size + page - 1) // page - o // page
                    t += 1
                    b = blk_next[b]
        ptr[i + 1] = t
    return ptr, off, cnt, nbytes, pages, postings


@nb.njit(cache=True, nogil=True)
def block_values(sel, vals, post_first, blk_next, blocks):  # type: ignore[no-untyped-def]
    """vals (nq, m), one per selected posting of `sel`, repeated for each of its blocks in
    `gather_blocks`' order (float32; a "bits" scan's per-block head distances); `blocks`:
    how many `gather_blocks(sel)` listed."""
    nq, m = sel.shape
    npost = post_first.shape[0]
    out = np.empty(blocks, dtype=np.float32)
    t = 0
    for i in range(nq):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                b = post_first[p]
                while b >= 0:
                    out[t] = vals[i, j]
                    t += 1
                    b = blk_next[b]
    return out


@nb.njit(cache=True)
def live_counts(u8, u32, post_first, blk_next, blk_off, blk_cnt, slot_version):  # type: ignore[no-untyped-def]
    """Per posting, the number of visible entries (replicas counted)."""
    out = np.zeros(post_first.shape[0], dtype=np.int64)
    for p in range(post_first.shape[0]):
        b = post_first[p]
        while b >= 0:
            o = blk_off[b]
            n = blk_cnt[b]
            cap, _ = _layout(n)
            for j in range(n):
                s = u32[(o + 64) // SLOT_BYTES + j]
                v = u8[o + 64 + SLOT_BYTES * cap + j]
                if entry_visible(s, v, slot_version, NO_VISIBLE, False):
                    out[p] += 1
            b = blk_next[b]
    return out


@nb.njit(cache=True)
def removed_counts(u8, u32, post_first, blk_next, blk_off, blk_cnt, slot_version):  # type: ignore[no-untyped-def]
    """Per posting, the number of entries whose slot was removed for good (deleted)."""
    out = np.zeros(post_first.shape[0], dtype=np.int64)
    nslots = slot_version.shape[0]
    for p in range(post_first.shape[0]):
        b = post_first[p]
        while b >= 0:
            o = blk_off[b]
            n = blk_cnt[b]
            for j in range(n):
                s = u32[(o + 64) // SLOT_BYTES + j]
                if s < nslots and slot_version[s] == VERSION_REMOVED:
                    out[p] += 1
            b = blk_next[b]
    return out


@nb.njit(cache=True)
def group_by_posting(posts, keep, n_postings):  # type: ignore[no-untyped-def]
    """Counting sort of the kept (row, column) entries of `posts` (n, r; -1 padded) by
    posting id: CSR `starts` (n_postings + 1), then the rows (int32) and columns (int8) of
    each posting's entries in row order."""
    n, r = posts.shape
    starts = np.zeros(n_postings + 1, dtype=np.int64)
    for i in range(n):
        for j in range(r):
            if keep[i, j] and posts[i, j] >= 0:
                starts[posts[i, j] + 1] += 1
    for p in range(n_postings):
        starts[p + 1] += starts[p]
    fill = starts[:-1].copy()
    rows = np.empty(starts[n_postings], dtype=np.int32)
    cols = np.empty(starts[n_postings], dtype=np.int8)
    for i in range(n):
        for j in range(r):
            p = posts[i, j]
            if keep[i, j] and p >= 0:
                rows[fill[p]] = i
                cols[fill[p]] = j
                fill[p] += 1
    return starts, rows, cols


@nb.njit(cache=True)
def cut_to_limit(posts, dists, keep, starts, rows, cols, limit):  # type: ignore[no-untyped-def]
    """The posting cut: in each posting over `limit` entries, drop the farthest (clear their
    `keep`); then give every row left with no copy back its nearest one (column 0), so no
    vector is orphaned."""
    for p in range(starts.shape[0] - 1):
        lo, hi = starts[p], starts[p + 1]
        if hi - lo <= limit:
            continue
        d = np.empty(hi - lo, dtype=np.float32)
        for t in range(hi - lo):
            d[t] = dists[rows[lo + t], cols[lo + t]]
        order = np.argsort(d, kind="mergesort")
        for t in order[limit:]:
            keep[rows[lo + t], cols[lo + t]] = False
    for i in range(posts.shape[0]):
        kept = False
        for j in range(posts.shape[1]):
            if keep[i, j]:
                kept = True
                break
        if not kept and posts[i, 0] >= 0:
            keep[i, 0] = True
