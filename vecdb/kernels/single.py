"""One query's whole warm SPANN search in one numba call: head search, pruning, gather,
block check and scan.

Pure functions on arrays (no I/O, no globals). A single query's search is a chain of small
kernels (`headgraph.search_batch`, `posting.prune_postings`, `pairs.gather_pairs`,
`pairs.check_headers`, `groupscan.scan_pairs`); called one by one from Python, each call
unboxes its arguments and boxes its results (gather_pairs alone returns six arrays), and the
glue between them allocated a dozen small numpy arrays: about as much time as the head search
itself (GloVe-50, max_postings 64, py-spy of a loop of single queries: ~45% of a call outside
the kernels). `search_one` calls the very same kernels in the same order on the same values,
so its ids and distances are theirs bit for bit; it only differs in what it does not do: it
never raises. Whatever the chain would turn into an error or a Python-side step (a beam short of the
heads asked, a block failing its bounds or header check) it reports as a status, having written
nothing to the output row, and the caller runs the ordinary path, which raises or checks as
before. Blocks whose CRC is still to be verified (the first reads after an open or a write)
it hands back instead (VERIFY: their offsets, entry counts and sizes in `chk`), for the
caller to verify and call again, rather than the whole ordinary path.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from vecdb.kernels.bitscan import scan_blocks
from vecdb.kernels.groupscan import scan_pairs
from vecdb.kernels.headgraph import search_batch
from vecdb.kernels.pairs import check_headers, gather_pairs
from vecdb.kernels.posting import NO_VISIBLE, block_values, gather_blocks, prune_postings
from vecdb.kernels.rerank import rerank_topk, rows_at

OK = 0  # the row holds the search's answer; counts hold what it read
FEW_HEADS = 1  # the beam found fewer heads than asked (`HeadGraph.knn_query` then scans them all)
CHECK = 2  # a block failed its check, or more to CRC-verify than chk holds (the ordinary path)
SHORT = 3  # a rerank's scan: fewer candidates than asked for (the ordinary path widens)
VERIFY = 4  # blocks whose CRC is unverified, listed in chk (the caller checks them, calls again)


@nb.njit(cache=True, nogil=True, inline="always")
def _hand_over(off, cnt, nbytes, todo, chk):  # type: ignore[no-untyped-def]
    """The blocks todo (indices into off / cnt / nbytes) copied into chk's first columns
    (rows: offset, entry count, bytes): their number, or -1 when chk has too few columns."""
    n = todo.shape[0]
    if n > chk.shape[1]:
        return -1
    for j in range(n):
        i = todo[j]
        chk[0, j] = off[i]
        chk[1, j] = cnt[i]
        chk[2, j] = nbytes[i]
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def _postings(  # type: ignore[no-untyped-def]
    query, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, hk,
    head_ip, labels, m, prune_ip, ratio, always, seen, mark, cd, ci,
):  # fmt: skip
    """Passes 1-2 of one query: its hk nearest heads (`search_batch`, ef = k = hk), the
    first m as posting ids (`labels`) pruned (`prune_postings`): (1, m), or (1, 0) when the
    beam found fewer than hk heads (FEW_HEADS); with the heads' distances (1, hk), whose
    first m columns are the postings' (a "bits" scan's bounds)."""
    hi = np.empty((1, hk), np.int64)
    hd = np.empty((1, hk), np.float32)
    search_batch(
        query, 0, 1, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel,
        n, hk, hk, head_ip, hi, hd, seen, mark, cd, ci,
    )  # fmt: skip
    if hi[0, hk - 1] < 0:
        return np.empty((1, 0), np.int64), hd
    lab = np.empty((1, m), np.int64)
    for j in range(m):
        lab[0, j] = labels[hi[0, j]]
    return prune_postings(lab, hd[:, :m], prune_ip, ratio, always), hd


@nb.njit(cache=True, nogil=True)
def search_one(  # type: ignore[no-untyped-def]
    query,
    vecs,
    links,
    nlinks,
    deleted,
    up_off,
    up_links,
    up_cnt,
    entry,
    maxlevel,
    n,
    hk,
    head_ip,
    labels,
    m,
    prune_ip,
    ratio,
    always,
    post_first,
    blk_next,
    blk_off,
    blk_cnt,
    dim,
    width,
    page,
    u8,
    u32,
    f32,
    u16,
    qoff,
    qscale,
    magic,
    unit,
    bits,
    known_ok,
    need_crc,
    slot_version,
    vis,
    use_vis,
    metric,
    out_ids,
    out_d,
    seen,
    mark,
    cd,
    ci,
    chk,
):
    """Search query (1, dim) as `index.spann.search` does for one query: its hk nearest
    heads in the head graph (`search_batch` with ef = k = hk; node ids mapped to posting ids
    by `labels`), the first m pruned (`prune_postings`), their blocks gathered and checked
    (`check_headers` against `magic`, `unit`, the verified `bits` if `known_ok`) and
    scanned into out_ids / out_d (1, k), filled here with -1 / +inf first (the caller's
    np.empty: a filled or returned array costs more, ~1.7 us to box one). seen / mark / cd /
    ci: the head graph's scratch of the calling thread (`search_batch`). Returns (status,
    postings, (query, block) pairs, pages read); the row is the answer only when status is
    OK (FEW_HEADS; CHECK: a block failing its header check; VERIFY, when `need_crc`: the
    blocks whose CRC is unverified, their number in place of the postings and the blocks in
    chk (3, cap), or CHECK when more than cap)."""
    out_ids[:] = -1
    out_d[:] = np.inf
    s, _ = _postings(
        query, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, hk,
        head_ip, labels, m, prune_ip, ratio, always, seen, mark, cd, ci,
    )  # fmt: skip
    if s.shape[1] == 0:
        return FEW_HEADS, 0, 0, 0
    b_off, b_cnt, b_bytes, off, cnt, pq, pages, postings = gather_pairs(
        s, post_first, blk_next, blk_off, blk_cnt, dim, width, page
    )
    status, _, todo = check_headers(
        u8, b_off, b_cnt, b_bytes, dim, width, magic, unit, bits, b_off, known_ok
    )
    if status != 0:
        return CHECK, 0, 0, 0
    if need_crc and todo.shape[0] > 0:
        nv = _hand_over(b_off, b_cnt, b_bytes, todo, chk)
        return (VERIFY, nv, 0, 0) if nv >= 0 else (CHECK, 0, 0, 0)
    order = np.arange(off.shape[0])
    scan_pairs(
        u8, u32, f32, u16, dim, width, qoff, qscale, off, cnt, order, pq, 0, off.shape[0],
        query, slot_version, vis, use_vis, metric, out_ids, out_d,
    )  # fmt: skip
    return OK, postings, off.shape[0], pages


@nb.njit(cache=True, nogil=True)
def search_one_rerank(  # type: ignore[no-untyped-def]
    query, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, hk,
    head_ip, labels, m, prune_ip, ratio, always, post_first, blk_next, blk_off, blk_cnt, dim,
    width, page, u8, u32, f32, u16, qoff, qscale, magic, unit, bits, known_ok, need_crc,
    slot_version, metric, cand_ids, cand_d, half, rows16, rows32, row_of, out_ids, out_d, seen,
    mark, cd, ci, chk,
):  # fmt: skip
    """`search_one` with the exact rerank of an index whose postings are codes beside a
    rerank store (int8 / float16 postings, as `index.spann.rerank.search` runs them for one
    query, no bound): `search_one` into cand_ids / cand_d (1, R) (R = its width), then
    `rerank.rerank_topk` re-scoring every candidate from the store's rows (rows16 when
    `half`, else rows32; a slot's row through row_of, `rerank.rows_at`) into out_ids /
    out_d (1, k). Returns (status, postings, pairs,
    pages, rows re-ranked); SHORT when the probed postings hold fewer than R visible slots
    (the ordinary path widens), FEW_HEADS, CHECK and VERIFY as `search_one`."""
    status, postings, pairs, pages = search_one(
        query, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n,
        hk, head_ip, labels, m, prune_ip, ratio, always, post_first, blk_next, blk_off,
        blk_cnt, dim, width, page, u8, u32, f32, u16, qoff, qscale, magic, unit, bits,
        known_ok, need_crc, slot_version, NO_VISIBLE, False, metric, cand_ids, cand_d,
        seen, mark, cd, ci, chk,
    )  # fmt: skip
    if status != OK:
        return status, postings, 0, 0, 0  # (VERIFY: the count of blocks in chk)
    if cand_ids[0, cand_ids.shape[1] - 1] < 0:
        return SHORT, 0, 0, 0, 0
    at = rows_at(cand_ids, row_of)
    scored = rerank_topk(
        query, cand_ids, at, half, rows16, rows32, metric, cand_d, False, out_ids, out_d
    )
    return OK, postings, pairs, pages, scored


@nb.njit(cache=True, nogil=True)
def search_one_bits(  # type: ignore[no-untyped-def]
    query, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, hk,
    head_ip, labels, m, prune_ip, ratio, always, post_first, blk_next, blk_off, blk_cnt,
    bdim, width, page, u8, u32, u64, f32, magic, unit, bits, known_ok, need_crc, centroid,
    rot, metric, slot_version, eps, cand_ids, cand_d, half, rows16, rows32, row_of, out_ids,
    out_d, seen, mark, cd, ci, held, chk,
):  # fmt: skip
    """`search_one` for a "bits" index (the search then the exact rerank, as
    `index.spann.rerank.search` runs them for one query): the heads and their pruning as
    there, the query's blocks gathered (`gather_blocks`) and checked, `bitscan.scan_blocks`
    (entries in lane groups, posting format 4) keeping the R = cand_ids.shape[1] best
    estimates (eps > 0: lower bounds, the heads' distances given) in cand_ids / cand_d
    (filled here with -1 / +inf), and `rerank.rerank_topk` re-scoring them from the store's
    rows (rows16 when `half`, else rows32; through row_of as `search_one_rerank`) into
    out_ids / out_d (1, k), stopping at the
    first bound past the k-th exact distance when eps > 0. Returns (status, postings, blocks,
    pages, rows re-ranked); SHORT when the probed postings hold fewer than R visible slots
    (the ordinary path widens), FEW_HEADS, CHECK and VERIFY as `search_one`."""
    s, hd = _postings(
        query, vecs, links, nlinks, deleted, up_off, up_links, up_cnt, entry, maxlevel, n, hk,
        head_ip, labels, m, prune_ip, ratio, always, seen, mark, cd, ci,
    )  # fmt: skip
    if s.shape[1] == 0:
        return FEW_HEADS, 0, 0, 0, 0
    ptr, off, cnt, nbytes, pages, postings = gather_blocks(
        s, post_first, blk_next, blk_off, blk_cnt, bdim, width, page
    )
    status, _, todo = check_headers(
        u8, off, cnt, nbytes, bdim, width, magic, unit, bits, off, known_ok
    )
    if status != 0:
        return CHECK, 0, 0, 0, 0
    if need_crc and todo.shape[0] > 0:
        nv = _hand_over(off, cnt, nbytes, todo, chk)
        return (VERIFY, nv, 0, 0, 0) if nv >= 0 else (CHECK, 0, 0, 0, 0)
    cand_ids[:] = -1
    cand_d[:] = np.inf
    if eps <= 0:  # (read only with a bound)
        hsq = np.empty(0, np.float32)
    elif prune_ip:  # inner products: unknown (see `bitsearch.head_distances`)
        hsq = np.full(off.shape[0], np.nan, np.float32)
    else:  # the heads' squared distances
        hsq = block_values(s, hd[:, : s.shape[1]], post_first, blk_next, off.shape[0])
    scan_blocks(
        u8, u32, u64, f32, bdim - 1, off, cnt, ptr, 0, 1, query, centroid, rot, metric,
        slot_version, NO_VISIBLE, False, hsq, eps, cand_ids, cand_d, held,
    )  # fmt: skip
    if cand_ids[0, cand_ids.shape[1] - 1] < 0:
        return SHORT, 0, 0, 0, 0
    stop = eps > 0
    at = rows_at(cand_ids, row_of)
    scored = rerank_topk(
        query, cand_ids, at, half, rows16, rows32, metric, cand_d, stop, out_ids, out_d
    )
    return OK, postings, off.shape[0], pages, scored
