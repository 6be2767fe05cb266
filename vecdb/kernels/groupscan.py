"""Numba scan of SPANN posting blocks grouped by block: each block decoded once for all the
queries of a batch that read it. The search's hot loop.

Pure functions on arrays (no I/O, no globals). A batch's reads are (query, block) pairs,
consecutive for one block (`kernels.pairs.gather_pairs`, or `pair_order` for CSR reads);
`scan_pairs` walks a range of them. A block read by several queries of the range is decoded
once into a float32 scratch (float16 bits widened, int8 codes mapped through the
per-dimension offset and scale; float32 is read in place) and each query is scored against
it from L1 cache; a float16 or int8 block read by one query is widened in registers instead
(int8: offset + scale x code per component, `_decode`'s expression). Either way four
dimensions per pass, the same values in the same order, so a query's distances do not depend
on the batch it came in. float16 is widened by the CPU's conversion instruction where it has
one (x86 F16C, `HARDWARE_HALF`), else by shifts and masks: the same values. Prefetch: a
block scored in registers hints the blocks two and three ahead a share per pass (a steady
stream the CPU keeps); a decoded block hints the next three whole. Then the entries that may
enter its query's top-k row (a branch-free pre-test, `_admit`) are folded into it with the
one "entry visible" predicate (`posting.entry_visible`) and replica dedupe. Measured on
GloVe-50 (56 postings of ~125 entries per query, warm): one query's scan 96-105 us -> 50-60
us (the hardware widening, the per-pass prefetch and the metric's branch hoisted out of the
passes), a 2,000-query batch's scan 68 -> 40 us per query (the decode pass vectorised); the
int8 path the same way (issue 12, helper C, 48 and 56 postings, thread CPU, old and new side
by side on a loaded machine: one query's int8 scan 1.57-1.62x faster; a batch's blocks are
mostly shared and decoded as before, and `_admit` makes batches 1.07-1.09x faster, float16
and int8); a posting fetched from memory, not arithmetic, is what a query waits for.
`merge_topk` folds one top-k table into another (the per-thread tables of
`index.spann.fanout.fan_out_pairs`). Every kernel releases the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.borrow import borrow, keep
from vecdb.kernels.posting import METRIC_IP, METRIC_L2, SLOT_BYTES, _layout, entry_visible
from vecdb.kernels.postscan import HALF_SCALE, HARDWARE_HALF, _half, _half_bits
from vecdb.kernels.prefetch import _next_run, _prefetch_pair, _prefetch_run, _share, _span

I64 = npt.NDArray[np.int64]


def pair_order(ptr: I64, off: I64) -> tuple[I64, I64]:
    """(order, pair_query) for the CSR reads of a batch (query i reads blocks
    ptr[i]:ptr[i+1] of `off`): `order` sorts the pairs by block offset, queries ascending
    within a block (a stable sort of the CSR order); pair_query[p] is the query of pair p.
    One query reads distinct blocks, so its pairs need no sort."""
    if len(ptr) == 2:
        return np.arange(len(off), dtype=np.int64), np.zeros(len(off), dtype=np.int64)
    pq: I64 = np.repeat(np.arange(len(ptr) - 1, dtype=np.int64), np.diff(ptr))
    order: I64 = np.argsort(off, kind="stable").astype(np.int64)
    return order, pq


@nb.njit(cache=True, nogil=True, inline="always")
def _score_half(u16, base, dim, cap, q, l2, a, u8, s2, e2, s3, e3):  # type: ignore[no-untyped-def]
    """`_score` straight from a block's float16 rows (u16[base:], [dim][cap]), widening in
    registers: the values and the order of operations are `_score`'s on the decoded block,
    so the distances are bit-identical. Each pass over four dimensions also prefetches its
    share of the lines of two blocks ahead (u8[s2:e2], u8[s3:e3]): a steady stream of hints
    the CPU keeps, where hinting whole blocks at once overflows its miss queue and most
    hints are dropped (GloVe-50, 56 postings, one query: the scan ~100 -> ~50 us). The
    metric's branch is taken once, outside the passes (inside them it cost ~20 us)."""
    a[:] = 0.0
    parts = max(1, dim // 4)  # passes of four dimensions; shares worked out once (integer
    per2 = _share(s2, e2, parts)  # divisions in the pass loop cost more than prefetching
    per3 = _share(s3, e3, parts)  # saves)
    if dim < 4:
        _prefetch_run(u8, s2, e2 - s2, e2)
        _prefetch_run(u8, s3, e3 - s3, e3)
    if l2:
        _half_passes_l2(u16, base, dim, cap, q, a, u8, s2, e2, per2, s3, e3, per3)
    else:
        _half_passes_dot(u16, base, dim, cap, q, a, u8, s2, e2, per2, s3, e3, per3)


@nb.njit(cache=True, nogil=True, inline="always")
def _half_passes_l2(u16, base, dim, cap, q, a, u8, s2, e2, per2, s3, e3, per3):  # type: ignore[no-untyped-def]
    """`_score_half`'s passes for squared L2 (a[j] += squared differences)."""
    t = 0
    while t + 4 <= dim:
        s2 = _prefetch_run(u8, s2, per2, e2)
        s3 = _prefetch_run(u8, s3, per3, e3)
        q0, q1, q2, q3 = q[t], q[t + 1], q[t + 2], q[t + 3]
        r0 = u16[base + t * cap : base + (t + 1) * cap]
        r1 = u16[base + (t + 1) * cap : base + (t + 2) * cap]
        r2 = u16[base + (t + 2) * cap : base + (t + 3) * cap]
        r3 = u16[base + (t + 3) * cap : base + (t + 4) * cap]
        for j in range(cap):
            d0 = q0 - _half(r0[j])
            d1 = q1 - _half(r1[j])
            d2 = q2 - _half(r2[j])
            d3 = q3 - _half(r3[j])
            a[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        t += 4
    while t < dim:
        qt = q[t]
        r0 = u16[base + t * cap : base + (t + 1) * cap]
        for j in range(cap):
            d0 = qt - _half(r0[j])
            a[j] += d0 * d0
        t += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _half_passes_dot(u16, base, dim, cap, q, a, u8, s2, e2, per2, s3, e3, per3):  # type: ignore[no-untyped-def]
    """`_score_half`'s passes for inner products (a[j] += q . x)."""
    t = 0
    while t + 4 <= dim:
        s2 = _prefetch_run(u8, s2, per2, e2)
        s3 = _prefetch_run(u8, s3, per3, e3)
        q0, q1, q2, q3 = q[t], q[t + 1], q[t + 2], q[t + 3]
        r0 = u16[base + t * cap : base + (t + 1) * cap]
        r1 = u16[base + (t + 1) * cap : base + (t + 2) * cap]
        r2 = u16[base + (t + 2) * cap : base + (t + 3) * cap]
        r3 = u16[base + (t + 3) * cap : base + (t + 4) * cap]
        for j in range(cap):
            a[j] += (q0 * _half(r0[j]) + q1 * _half(r1[j])) + (
                q2 * _half(r2[j]) + q3 * _half(r3[j])
            )
        t += 4
    while t < dim:
        qt = q[t]
        r0 = u16[base + t * cap : base + (t + 1) * cap]
        for j in range(cap):
            a[j] += qt * _half(r0[j])
        t += 1


@nb.njit(cache=True, nogil=True)
def _score_int8(u8, base, dim, cap, q, qoff, qscale, l2, a, s2, e2, s3, e3):  # type: ignore[no-untyped-def]
    """`_score` straight from a block's int8 codes (u8[base:], [dim][cap]), each mapped
    through its dimension's offset and scale in registers: `_decode`'s expression
    (offset + scale x code, in float32) and then `_score`'s, so the distances are
    bit-identical to decoding first. Prefetch and the metric's branch as `_score_half`.
    A call, not inlined: inlined beside `_score_half` it made the float16 path's single
    queries ~8% slower at 384 dims (synthetic blocks, side by side; no change at 50)."""
    a[:] = 0.0
    parts = max(1, dim // 4)
    per2 = _share(s2, e2, parts)
    per3 = _share(s3, e3, parts)
    if dim < 4:
        _prefetch_run(u8, s2, e2 - s2, e2)
        _prefetch_run(u8, s3, e3 - s3, e3)
    if l2:
        _int8_passes_l2(u8, base, dim, cap, q, qoff, qscale, a, s2, e2, per2, s3, e3, per3)
    else:
        _int8_passes_dot(u8, base, dim, cap, q, qoff, qscale, a, s2, e2, per2, s3, e3, per3)


@nb.njit(cache=True, nogil=True, inline="always")
def _int8_passes_l2(u8, base, dim, cap, q, qoff, qscale, a, s2, e2, per2, s3, e3, per3):  # type: ignore[no-untyped-def]
    """`_score_int8`'s passes for squared L2."""
    t = 0
    while t + 4 <= dim:
        s2 = _prefetch_run(u8, s2, per2, e2)
        s3 = _prefetch_run(u8, s3, per3, e3)
        q0, q1, q2, q3 = q[t], q[t + 1], q[t + 2], q[t + 3]
        l0, l1, l2, l3 = qoff[t], qoff[t + 1], qoff[t + 2], qoff[t + 3]
        c0, c1, c2, c3 = qscale[t], qscale[t + 1], qscale[t + 2], qscale[t + 3]
        r0 = u8[base + t * cap : base + (t + 1) * cap]
        r1 = u8[base + (t + 1) * cap : base + (t + 2) * cap]
        r2 = u8[base + (t + 2) * cap : base + (t + 3) * cap]
        r3 = u8[base + (t + 3) * cap : base + (t + 4) * cap]
        for j in range(cap):
            d0 = q0 - (l0 + c0 * np.float32(r0[j]))
            d1 = q1 - (l1 + c1 * np.float32(r1[j]))
            d2 = q2 - (l2 + c2 * np.float32(r2[j]))
            d3 = q3 - (l3 + c3 * np.float32(r3[j]))
            a[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        t += 4
    while t < dim:
        qt, lt, ct = q[t], qoff[t], qscale[t]
        r0 = u8[base + t * cap : base + (t + 1) * cap]
        for j in range(cap):
            d0 = qt - (lt + ct * np.float32(r0[j]))
            a[j] += d0 * d0
        t += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _int8_passes_dot(u8, base, dim, cap, q, qoff, qscale, a, s2, e2, per2, s3, e3, per3):  # type: ignore[no-untyped-def]
    """`_score_int8`'s passes for inner products."""
    t = 0
    while t + 4 <= dim:
        s2 = _prefetch_run(u8, s2, per2, e2)
        s3 = _prefetch_run(u8, s3, per3, e3)
        q0, q1, q2, q3 = q[t], q[t + 1], q[t + 2], q[t + 3]
        l0, l1, l2, l3 = qoff[t], qoff[t + 1], qoff[t + 2], qoff[t + 3]
        c0, c1, c2, c3 = qscale[t], qscale[t + 1], qscale[t + 2], qscale[t + 3]
        r0 = u8[base + t * cap : base + (t + 1) * cap]
        r1 = u8[base + (t + 1) * cap : base + (t + 2) * cap]
        r2 = u8[base + (t + 2) * cap : base + (t + 3) * cap]
        r3 = u8[base + (t + 3) * cap : base + (t + 4) * cap]
        for j in range(cap):
            a[j] += (q0 * (l0 + c0 * np.float32(r0[j])) + q1 * (l1 + c1 * np.float32(r1[j]))) + (
                q2 * (l2 + c2 * np.float32(r2[j])) + q3 * (l3 + c3 * np.float32(r3[j]))
            )
        t += 4
    while t < dim:
        qt, lt, ct = q[t], qoff[t], qscale[t]
        r0 = u8[base + t * cap : base + (t + 1) * cap]
        for j in range(cap):
            a[j] += qt * (lt + ct * np.float32(r0[j]))
        t += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _decode(u8, f32, u16, dim, width, qoff, qscale, o, cap, voff, bits):  # type: ignore[no-untyped-def]
    """The block's components as float32 values, dimension-major ([dim][cap]): a view of
    the file for float32, else decoded into `bits` (a uint32 scratch, viewed as float32)."""
    m = dim * cap
    if width == 4:
        base = (o + voff) // 4
        return f32[base : base + m]
    raw = bits[:m].view(np.float32)
    if width == 2:
        base = (o + voff) // 2
        if HARDWARE_HALF:
            h = u16[base : base + m]
            for j in range(m):
                raw[j] = _half(h[j])  # the in-register widening: the same values
            return raw
        _half_bits(u16[base : base + m], bits[:m])
        for j in range(m):
            raw[j] = raw[j] * HALF_SCALE  # exact: normal halves only (see postscan)
        return raw
    for t in range(dim):
        codes = u8[o + voff + t * cap : o + voff + (t + 1) * cap]
        row = raw[t * cap : (t + 1) * cap]
        lo = qoff[t]
        sc = qscale[t]
        for j in range(cap):
            row[j] = lo + sc * np.float32(codes[j])
    return raw


@nb.njit(cache=True, nogil=True, inline="always")
def _score(x, dim, cap, q, metric, a):  # type: ignore[no-untyped-def]
    """a[:cap] = squared L2 (metric l2) or q . x of q against the decoded block x, four
    dimensions per pass over `a` (a fixed summation order, whatever the batch). The
    metric's branch is taken once, outside the passes."""
    a[:] = 0.0
    if metric == METRIC_L2:
        _passes_l2(x, dim, cap, q, a)
    else:
        _passes_dot(x, dim, cap, q, a)


@nb.njit(cache=True, nogil=True, inline="always")
def _passes_l2(x, dim, cap, q, a):  # type: ignore[no-untyped-def]
    """`_score`'s passes for squared L2."""
    t = 0
    while t + 4 <= dim:
        q0, q1, q2, q3 = q[t], q[t + 1], q[t + 2], q[t + 3]
        r0 = x[t * cap : (t + 1) * cap]
        r1 = x[(t + 1) * cap : (t + 2) * cap]
        r2 = x[(t + 2) * cap : (t + 3) * cap]
        r3 = x[(t + 3) * cap : (t + 4) * cap]
        for j in range(cap):
            d0 = q0 - r0[j]
            d1 = q1 - r1[j]
            d2 = q2 - r2[j]
            d3 = q3 - r3[j]
            a[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        t += 4
    while t < dim:
        qt = q[t]
        r0 = x[t * cap : (t + 1) * cap]
        for j in range(cap):
            d0 = qt - r0[j]
            a[j] += d0 * d0
        t += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _passes_dot(x, dim, cap, q, a):  # type: ignore[no-untyped-def]
    """`_score`'s passes for inner products."""
    t = 0
    while t + 4 <= dim:
        q0, q1, q2, q3 = q[t], q[t + 1], q[t + 2], q[t + 3]
        r0 = x[t * cap : (t + 1) * cap]
        r1 = x[(t + 1) * cap : (t + 2) * cap]
        r2 = x[(t + 2) * cap : (t + 3) * cap]
        r3 = x[(t + 3) * cap : (t + 4) * cap]
        for j in range(cap):
            a[j] += (q0 * r0[j] + q1 * r1[j]) + (q2 * r2[j] + q3 * r3[j])
        t += 4
    while t < dim:
        qt = q[t]
        r0 = x[t * cap : (t + 1) * cap]
        for j in range(cap):
            a[j] += qt * r0[j]
        t += 1


@nb.njit(cache=True, nogil=True, inline="always")
def _admit(a, n, metric, worst, pick):  # type: ignore[no-untyped-def]
    """The entries j < n that may enter a top-k row whose last distance is `worst` (before
    the block), in order, into pick; returns how many. The test is made in float32, as the
    fold's (cosine's 1 - a included: float32 of the exact difference, the value the row
    stores), branch-free (the index is written always, the count moves only on a hit) with
    the metric's branch outside the loop: the per-entry test before the fold was a data-dependent branch the
    CPU mispredicts while a batch's rows fill. The fold tests each one again, exactly as
    before, against the row as it is then: the top k is the per-entry loop's, bit for
    bit (2,000 GloVe-50 queries, 56 postings, int8 + rerank: the scan ~1.09x faster)."""
    m = 0
    if metric == METRIC_L2:
        for j in range(n):
            pick[m] = j
            m += 0 if a[j] > worst else 1
    elif metric == METRIC_IP:
        for j in range(n):
            pick[m] = j
            m += 0 if -a[j] > worst else 1
    else:
        one = np.float32(1.0)
        for j in range(n):
            pick[m] = j
            m += 0 if one - a[j] > worst else 1
    return m


@nb.njit(cache=True, nogil=True, inline="always")
def _fold(ids, ds, s, d):  # type: ignore[no-untyped-def]
    """Insert slot s at distance d into the top-k row, ordered by (distance, slot), unless
    it does not come before the k-th or is already there (replicas of a slot score alike).
    Equal distances order by slot, so the row does not depend on the order blocks come in.
    One exit (`topk._insert_sorted` says why)."""
    k = ids.shape[0]
    if d < ds[k - 1] or (d == ds[k - 1] and not (0 <= ids[k - 1] <= s)):
        r = 0
        while r < k and ids[r] != s:
            r += 1
        if r == k:  # not there yet
            r = k - 1
            while r > 0 and (ds[r - 1] > d or (ds[r - 1] == d and ids[r - 1] > s)):
                ds[r] = ds[r - 1]
                ids[r] = ids[r - 1]
                r -= 1
            ds[r] = d
            ids[r] = s


@nb.njit(cache=True, nogil=True)
def scan_pairs(  # type: ignore[no-untyped-def]
    u8,
    u32,
    f32,
    u16,
    dim,
    width,
    qoff,
    qscale,
    off,
    cnt,
    order,
    pair_query,
    lo,
    hi,
    queries,
    slot_version,
    vis,
    use_vis,
    metric,
    out_ids,
    out_d,
):
    """Fold the pairs order[lo:hi] (pair p: block at byte off[p] of u8 with cnt[p] entries,
    read by query pair_query[p]) into the top-k rows out_ids / out_d (k = out_ids.shape[1];
    they come in padded with -1 / +inf or holding earlier results). Consecutive pairs of one
    block decode it once. Only entries passing `entry_visible` count; replicas of one slot
    are deduped. Distances: squared L2, -q.x (ip) or 1 - q.x (cosine)."""
    room = 8
    for p in range(lo, hi):
        room = max(room, cnt[order[p]])
    acc_owned = np.empty(room, dtype=np.float32)
    pick_owned = np.empty(room, dtype=np.int64)  # a block's entries that may enter the top k
    bits_owned = np.empty(room * dim, dtype=np.uint32)
    # the loop below slices these per pair: borrowed, its views take no atomic reference
    acc, pick, bits = borrow(acc_owned), borrow(pick_owned), borrow(bits_owned)
    u8, u32, f32, u16 = borrow(u8), borrow(u32), borrow(f32), borrow(u16)
    queries, out_ids, out_d = borrow(queries), borrow(out_ids), borrow(out_d)
    off, cnt, order, pair_query = borrow(off), borrow(cnt), borrow(order), borrow(pair_query)
    qoff, qscale = borrow(qoff), borrow(qscale)
    slot_version, vis = borrow(slot_version), borrow(vis)
    x = bits.view(np.float32)
    prev = -1
    cap = 0
    # the first two blocks whole (the blocks after them come in while earlier ones score)
    _prefetch_pair(u8, off, cnt, order, lo, hi, dim, width)
    _prefetch_pair(u8, off, cnt, order, _next_run(off, order, lo, hi), hi, dim, width)
    for p in range(lo, hi):
        b = order[p]
        o = off[b]
        n = cnt[b]
        i = pair_query[b]
        a = acc[:cap]
        if o != prev:
            cap, voff = _layout(n)
            a = acc[:cap]
            prev = o
            n1 = _next_run(off, order, p, hi)
            n2 = _next_run(off, order, n1, hi)
            n3 = _next_run(off, order, n2, hi)
            if width <= 2 and (p + 1 == hi or off[order[p + 1]] != o):
                # read by this query alone here: widen in registers, no decode pass, and
                # prefetch the blocks two and three ahead a share per pass
                s2, e2 = _span(u8, off, cnt, order, n2, hi, dim, width)
                s3, e3 = _span(u8, off, cnt, order, n3, hi, dim, width)
                l2 = metric == METRIC_L2
                if width == 2:
                    base = (o + voff) // 2
                    _score_half(u16, base, dim, cap, queries[i], l2, a, u8, s2, e2, s3, e3)
                else:
                    base = o + voff
                    _score_int8(u8, base, dim, cap, queries[i], qoff, qscale, l2, a, s2, e2, s3, e3)
            else:
                # the next three blocks come in while this one is decoded and scored (each
                # hinted up to three times: a hint dropped while the miss queue was full is
                # not lost)
                _prefetch_pair(u8, off, cnt, order, n1, hi, dim, width)
                _prefetch_pair(u8, off, cnt, order, n2, hi, dim, width)
                _prefetch_pair(u8, off, cnt, order, n3, hi, dim, width)
                x = _decode(u8, f32, u16, dim, width, qoff, qscale, o, cap, voff, bits)
                _score(x, dim, cap, queries[i], metric, a)
        else:
            _score(x, dim, cap, queries[i], metric, a)
        ids = out_ids[i]
        ds = out_d[i]
        slots = u32[(o + 64) // SLOT_BYTES : (o + 64) // SLOT_BYTES + n]
        vers = u8[o + 64 + SLOT_BYTES * cap : o + 64 + SLOT_BYTES * cap + n]
        m = _admit(a, n, metric, ds[ds.shape[0] - 1], pick)
        for t in range(m):
            j = pick[t]
            if metric == METRIC_L2:
                d = a[j]
            elif metric == METRIC_IP:
                d = -a[j]
            else:  # in float32, as the row holds it (a float64 d broke ties by slot: a
                # tie with the k-th compared unequal to its stored, rounded value)
                d = np.float32(1.0) - a[j]
            if d > ds[ds.shape[0] - 1]:  # (the row may have tightened since `_admit`)
                continue
            s = slots[j]
            if entry_visible(s, vers[j], slot_version, vis, use_vis):
                _fold(ids, ds, s, d)
    keep(acc_owned)
    keep(pick_owned)
    keep(bits_owned)


@nb.njit(cache=True, nogil=True)
def merge_topk(src_ids, src_d, out_ids, out_d):  # type: ignore[no-untyped-def]
    """Fold every row of one top-k table (-1 padded) into the same rows of another."""
    for i in range(src_ids.shape[0]):
        for r in range(src_ids.shape[1]):
            s = src_ids[i, r]
            if s < 0:
                break
            _fold(out_ids[i], out_d[i], s, src_d[i, r])
