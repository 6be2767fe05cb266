"""Numba kernels that prepare a SPANN batch for the grouped scan (`vecdb.kernels.groupscan`).

Pure functions on arrays (no I/O, no globals). `gather_pairs` turns each query's selected
postings into (query, block) pairs grouped by block, with the distinct blocks listed once
(so they are checked once per batch) and the same byte and page accounting as
`posting.gather_blocks`; `check_headers` is the per-block bounds and header test of
`index.spann.blockcheck` in one pass; `touch_pages` faults in the pages of the blocks whose
CRC is still to compute, without the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from vecdb.kernels.posting import BLOCK_HEADER, _layout, body_bytes


@nb.njit(cache=True, nogil=True)
def check_headers(u8, at, cnt, nbytes, dim, width, magic, unit, bits, where, known_ok):  # type: ignore[no-untyped-def]
    """One pass over the blocks a search is about to scan (`index.spann.blockcheck`): returns
    (1, i) for the first block i lying outside u8 (negative, not on a `unit` boundary, past
    the end, shorter than a header), (2, i) for the first whose header words disagree with
    the block table (magic, byte size, entry count, dimension, width), else (0, n_todo) with
    todo[:n_todo] the blocks whose CRC is still to check: those whose file offset `where`
    has no bit in `bits` (one per `unit` bytes), or all of them unless `known_ok`."""
    n = at.shape[0]
    todo = np.empty(n, dtype=np.int64)
    nt = 0
    size = u8.shape[0]
    for i in range(n):
        a = at[i]
        nb_ = nbytes[i]
        if a < 0 or a % unit != 0 or a + nb_ > size or nb_ < BLOCK_HEADER:
            return 1, i, todo[:0]
    words = u8[: size // 4 * 4].view(np.uint32)
    for i in range(n):
        w = at[i] // 4
        if (
            words[w] != magic
            or words[w + 2] != nbytes[i]
            or words[w + 3] != cnt[i]
            or words[w + 6] != dim
            or words[w + 8] != width
        ):
            return 2, i, todo[:0]
        if known_ok:
            u = where[i] // unit
            byte = u >> 3
            if byte < bits.shape[0] and (bits[byte] >> (u & 7)) & 1 == 1:
                continue
        todo[nt] = i
        nt += 1
    return 0, nt, todo[:nt]


@nb.njit(cache=True, nogil=True)
def touch_pages(u8, at, nbytes, todo, page):  # type: ignore[no-untyped-def]
    """Read one byte of every `page`-sized page of the blocks todo (indices into at /
    nbytes) and return their sum (which keeps the reads). Called without the GIL before
    their CRCs are computed with it (`blockcheck.check_blocks`): the page faults of a block
    not in the page cache (a read from the disk each) then happen here, beside other
    threads' searches, not inside the CRC, which holds the GIL (`blockcheck.block_crc`)."""
    s = 0
    for j in range(todo.shape[0]):
        i = todo[j]
        p = at[i]
        end = p + nbytes[i]
        while p < end:
            s += u8[p]
            p += page - p % page
    return s


@nb.njit(cache=True, nogil=True)
def gather_pairs(sel, post_first, blk_next, blk_off, blk_cnt, dim, width, page):  # type: ignore[no-untyped-def]
    """The (query, block) reads of a batch grouped by block, for the grouped scan: sel (nq,
    m) holds each query's posting ids (-1 padded; ids past the table count as -1). Returns
    (block offsets, counts and bytes of each distinct block read; per pair, in block order
    (posting id, or a single query's own order; then its chain; then query ascending):
    block offset, count, query; pages the pairs span in total, postings selected), the
    byte and page accounting per pair as `gather_blocks` does it per query."""
    posts, start, queries = _group_queries(sel, post_first.shape[0])
    return _expand(posts, start, queries, post_first, blk_next, blk_off, blk_cnt, dim, width, page)


@nb.njit(cache=True, nogil=True)
def bucket_parts(sel, lo, hi, part_of, keys, ptr):  # type: ignore[no-untyped-def]
    """The selected postings of queries lo:hi (rows of sel, -1 padded; ids past `part_of`
    count as -1) as keys posting * nq + query in keys[lo * m:], grouped by part (posting p
    is in part part_of[p], non-decreasing in p; rows ascending within a part), with
    ptr[j]:ptr[j + 1] (relative to lo * m) part j's keys. One heads chunk's share of a
    threaded batch (`gather_part` takes each part's keys from every chunk)."""
    nq, m = sel.shape
    npost = part_of.shape[0]
    parts = ptr.shape[0] - 1
    ptr[:] = 0
    for i in range(lo, hi):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                ptr[part_of[p] + 1] += 1
    for j in range(parts):
        ptr[j + 1] += ptr[j]
    fill = ptr[:parts].copy()
    base = lo * m
    for i in range(lo, hi):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                r = part_of[p]
                keys[base + fill[r]] = p * nq + i
                fill[r] += 1


@nb.njit(cache=True, nogil=True)
def gather_part(  # type: ignore[no-untyped-def]
    keys, ptr, chunk, part, nq, bounds, post_first, blk_next, blk_off, blk_cnt, dim, width, page
):
    """`gather_pairs` for the postings bounds[part]:bounds[part + 1] (`bucket_parts`' part
    `part`; ptr[c] holds heads chunk c's part offsets, its keys start at c * chunk in
    `keys`): the same outputs, restricted to those postings, in the same order (posting id
    ascending, then chain, then query ascending). The parts of a batch together hold
    exactly gather_pairs' pairs, pages and postings."""
    p_lo = bounds[part]
    p_hi = bounds[part + 1]
    count = np.zeros(p_hi - p_lo + 1, dtype=np.int64)
    for c in range(ptr.shape[0]):
        for t in range(c * chunk + ptr[c, part], c * chunk + ptr[c, part + 1]):
            count[keys[t] // nq - p_lo + 1] += 1
    used = 0
    for p in range(p_hi - p_lo):
        if count[p + 1] > 0:
            used += 1
        count[p + 1] += count[p]
    n = count[p_hi - p_lo]
    fill = count[: p_hi - p_lo].copy()
    queries = np.empty(n, dtype=np.int64)
    for c in range(ptr.shape[0]):  # chunks in query order: queries ascending per posting
        for t in range(c * chunk + ptr[c, part], c * chunk + ptr[c, part + 1]):
            r = keys[t] // nq - p_lo
            queries[fill[r]] = keys[t] % nq
            fill[r] += 1
    posts = np.empty(used, dtype=np.int64)
    start = np.empty(used + 1, dtype=np.int64)
    r = 0
    for p in range(p_hi - p_lo):
        if count[p + 1] > count[p]:
            posts[r] = p_lo + p
            start[r] = count[p]
            r += 1
    start[used] = n
    return _expand(posts, start, queries, post_first, blk_next, blk_off, blk_cnt, dim, width, page)


@nb.njit(cache=True, nogil=True)
def _expand(posts, start, queries, post_first, blk_next, blk_off, blk_cnt, dim, width, page):  # type: ignore[no-untyped-def]
    """`gather_pairs`' outputs from postings `posts` with CSR `start` into `queries`: each
    posting's chain of blocks, every block once in the distinct list and once per query in
    the pairs."""
    postings = start[-1]
    nblocks = 0
    npairs = 0
    for r in range(posts.shape[0]):
        c = start[r + 1] - start[r]
        b = post_first[posts[r]]
        while b >= 0:
            nblocks += 1
            npairs += c
            b = blk_next[b]
    u_off = np.empty(nblocks, dtype=np.int64)
    u_cnt = np.empty(nblocks, dtype=np.int64)
    u_bytes = np.empty(nblocks, dtype=np.int64)
    p_off = np.empty(npairs, dtype=np.int64)
    p_cnt = np.empty(npairs, dtype=np.int64)
    p_query = np.empty(npairs, dtype=np.int64)
    pages = 0
    u = 0
    t = 0
    for r in range(posts.shape[0]):
        lo, hi = start[r], start[r + 1]
        b = post_first[posts[r]]
        while b >= 0:
            o = blk_off[b]
            n = blk_cnt[b]
            cap, voff = _layout(n)
            size = voff + body_bytes(width, dim, cap)
            u_off[u] = o
            u_cnt[u] = n
            u_bytes[u] = size
            u += 1
            pages += ((o + size + page - 1) // page - o // page) * (hi - lo)
            for j in range(lo, hi):
                p_off[t] = o
                p_cnt[t] = n
                p_query[t] = queries[j]
                t += 1
            b = blk_next[b]
    return u_off, u_cnt, u_bytes, p_off, p_cnt, p_query, pages, postings


@nb.njit(cache=True, nogil=True)
def _group_queries(sel, npost):  # type: ignore[no-untyped-def]
    """The selected postings of sel (nq, m) in ascending id order (a single query's in its
    own order, nearest first: the k-th distance tightens sooner), with CSR `start` into the
    queries that selected each (ascending): a counting pass over the posting ids for big
    batches, a sort of the selected (posting, query) keys for small ones (a single query
    must not pay for every posting of the index)."""
    nq, m = sel.shape
    n = 0
    for i in range(nq):
        for j in range(m):
            if 0 <= sel[i, j] < npost:
                n += 1
    if nq == 1:  # one query: its postings are distinct, kept nearest first
        posts = np.empty(n, dtype=np.int64)
        t = 0
        for j in range(m):
            if 0 <= sel[0, j] < npost:
                posts[t] = sel[0, j]
                t += 1
        return posts, np.arange(n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if n * 8 < npost:
        keys = np.empty(n, dtype=np.int64)
        t = 0
        for i in range(nq):
            for j in range(m):
                p = sel[i, j]
                if 0 <= p < npost:
                    keys[t] = p * nq + i
                    t += 1
        keys.sort()
        posts = np.empty(n, dtype=np.int64)
        start = np.zeros(n + 1, dtype=np.int64)
        queries = np.empty(n, dtype=np.int64)
        r = -1
        for t in range(n):
            p = keys[t] // nq
            if r < 0 or posts[r] != p:
                r += 1
                posts[r] = p
                start[r] = t
            queries[t] = keys[t] % nq
        start[r + 1] = n
        return posts[: r + 1], start[: r + 2], queries
    count = np.zeros(npost + 1, dtype=np.int64)
    for i in range(nq):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                count[p + 1] += 1
    used = 0
    for p in range(npost):
        if count[p + 1] > 0:
            used += 1
        count[p + 1] += count[p]
    fill = count[:npost].copy()
    queries = np.empty(n, dtype=np.int64)
    for i in range(nq):
        for j in range(m):
            p = sel[i, j]
            if 0 <= p < npost:
                queries[fill[p]] = i
                fill[p] += 1
    posts = np.empty(used, dtype=np.int64)
    start = np.empty(used + 1, dtype=np.int64)
    r = 0
    for p in range(npost):
        if count[p + 1] > count[p]:
            posts[r] = p
            start[r] = count[p]
            r += 1
    start[used] = n
    return posts, start, queries
