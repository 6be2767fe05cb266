"""Numba scan of SPANN posting blocks grouped by block: each block decoded once for all the
queries of a batch that read it. The search's hot loop.

Pure functions on arrays (no I/O, no globals). A batch's reads are (query, block) pairs,
consecutive for one block (`kernels.pairs.gather_pairs`, or `pair_order` for CSR reads);
`scan_pairs` walks a range of them. A block read by several queries of the range is decoded
once into a float32 scratch (float16 bits widened, int8 codes mapped through the
per-dimension offset and scale; float32 is read in place) and each query is scored against
it from L1 cache; a float16 block read by one query is widened in registers instead (an LLVM
bitcast, no scratch). Either way four dimensions per pass, the same values in the same order,
so a query's distances do not depend on the batch it came in. The next three blocks are
prefetched while one is scored. Then each entry is folded into its query's top-k row with
the one "entry visible" predicate (`posting.entry_visible`) and replica dedupe. Measured on
GloVe-50 (48 postings of ~147 entries per query, 2,000 queries): the old per-query scan was
bound by fetching postings from memory (74 us per query with them in cache, 127 us from
memory); grouped, a posting is fetched once for the ~5 queries that read it (~60-70 us per
query), and alone with the prefetch ~100-120 us. `merge_topk` folds one top-k table into
another (the per-thread tables of `index.spann.fanout.fan_out_pairs`). Every kernel
releases the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vecdb.kernels.posting import METRIC_IP, METRIC_L2, _layout, entry_visible
from vecdb.kernels.postscan import HALF_SCALE, _half_bits

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


@intrinsic
def _as_f32(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose bit pattern is the uint32 `bits` (an LLVM bitcast: free, and it
    vectorises, unlike a store and reload through a view)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _prefetch(typingctx, arr, at):  # type: ignore[no-untyped-def]
    """Hint the CPU to bring u8[at]'s cache line in (llvm.prefetch: read, keep in all
    levels); no effect on results, never faults."""
    sig = types.void(arr, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")  # type: ignore[no-untyped-call]
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_block(u8, o, nbytes):  # type: ignore[no-untyped-def]
    """Prefetch the block at o (nbytes long), one hint per 64-byte line."""
    end = min(o + nbytes, u8.shape[0])
    for at in range(o, end, 64):
        _prefetch(u8, at)  # type: ignore[call-arg]


@nb.njit(cache=True, nogil=True, inline="always")
def _next_run(off, order, p, hi):  # type: ignore[no-untyped-def]
    """The first pair after p (up to hi) reading a block other than pair p's."""
    if p >= hi:
        return hi
    o = off[order[p]]
    p += 1
    while p < hi and off[order[p]] == o:
        p += 1
    return p


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_pair(u8, off, cnt, order, p, hi, dim, width):  # type: ignore[no-untyped-def]
    """Prefetch pair p's block, if p < hi."""
    if p < hi:
        b = order[p]
        cap, voff = _layout(cnt[b])
        _prefetch_block(u8, off[b], voff + width * dim * cap)


@intrinsic
def _fpext_half(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 value of the float16 whose bit pattern is the uint16 `bits` (an LLVM
    bitcast to half and fpext: one vcvtph2ps per vector with F16C; exact for every half)."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


def _has_f16c() -> bool:
    """Whether the host CPU converts halves in hardware (x86 F16C; aarch64 always does)."""
    try:
        import llvmlite.binding as llvm

        if llvm.get_process_triple().startswith(("aarch64", "arm64")):
            return True
        return bool(llvm.get_host_cpu_features().get("f16c", False))
    except Exception:  # noqa: BLE001 - no feature query: keep the portable widening
        return False


HARDWARE_HALF = _has_f16c()  # a compile-time constant of the kernels below


@nb.njit(cache=True, nogil=True, inline="always")
def _half(h):  # type: ignore[no-untyped-def]
    """The float32 value of float16 bits h (normal halves and zero, as `_half_bits`: the
    same value either way). With hardware conversion (F16C) one instruction per vector of
    halves instead of shifts, masks and a multiply: GloVe-50's single-query scan is about
    a third compute, and this is most of that compute."""
    if HARDWARE_HALF:
        return _fpext_half(np.uint16(h))  # type: ignore[call-arg]
    x = np.uint32(h)
    return _as_f32(np.uint32(((x & 0x8000) << 16) | ((x & 0x7FFF) << 13))) * HALF_SCALE  # type: ignore[call-arg]


@nb.njit(cache=True, nogil=True, inline="always")
def _span(u8, off, cnt, order, p, hi, dim, width):  # type: ignore[no-untyped-def]
    """Byte range [start, end) of pair p's block in u8 (empty if p >= hi)."""
    if p >= hi:
        return 0, 0
    b = order[p]
    cap, voff = _layout(cnt[b])
    return off[b], min(off[b] + voff + width * dim * cap, u8.shape[0])


@nb.njit(cache=True, nogil=True, inline="always")
def _share(start, end, parts):  # type: ignore[no-untyped-def]
    """Bytes (whole 64-byte lines) of one of `parts` equal shares of [start, end)."""
    return ((end - start + 63) // 64 + parts - 1) // parts * 64


@nb.njit(cache=True, nogil=True, inline="always")
def _prefetch_run(u8, at, per, end):  # type: ignore[no-untyped-def]
    """Prefetch the lines of u8[at : min(at + per, end)]; return where the next run starts."""
    stop = min(at + per, end)
    while at < stop:
        _prefetch(u8, at)  # type: ignore[call-arg]
        at += 64
    return stop


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
def _fold(ids, ds, s, d):  # type: ignore[no-untyped-def]
    """Insert slot s at distance d into the top-k row, ordered by (distance, slot), unless
    it does not come before the k-th or is already there (replicas of a slot score alike).
    Equal distances order by slot, so the row does not depend on the order blocks come in."""
    k = ids.shape[0]
    if d > ds[k - 1] or (d == ds[k - 1] and 0 <= ids[k - 1] <= s):
        return
    for r in range(k):
        if ids[r] == s:
            return
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
    i64,
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
    acc = np.empty(room, dtype=np.float32)
    bits = np.empty(room * dim, dtype=np.uint32)
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
            if width == 2 and (p + 1 == hi or off[order[p + 1]] != o):
                # read by this query alone here: widen in registers, no decode pass, and
                # prefetch the blocks two and three ahead a share per pass
                base = (o + voff) // 2
                s2, e2 = _span(u8, off, cnt, order, n2, hi, dim, width)
                s3, e3 = _span(u8, off, cnt, order, n3, hi, dim, width)
                _score_half(
                    u16, base, dim, cap, queries[i], metric == METRIC_L2, a, u8, s2, e2, s3, e3
                )
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
        slots = i64[(o + 64) // 8 : (o + 64) // 8 + n]
        vers = u8[o + 64 + 8 * cap : o + 64 + 8 * cap + n]
        for j in range(n):
            if metric == METRIC_L2:
                d = a[j]
            elif metric == METRIC_IP:
                d = -a[j]
            else:
                d = 1.0 - a[j]
            if d > ds[ds.shape[0] - 1]:
                continue
            s = slots[j]
            if entry_visible(s, vers[j], slot_version, vis, use_vis):
                _fold(ids, ds, s, d)


@nb.njit(cache=True, nogil=True)
def merge_topk(src_ids, src_d, out_ids, out_d):  # type: ignore[no-untyped-def]
    """Fold every row of one top-k table (-1 padded) into the same rows of another."""
    for i in range(src_ids.shape[0]):
        for r in range(src_ids.shape[1]):
            s = src_ids[i, r]
            if s < 0:
                break
            _fold(out_ids[i], out_d[i], s, src_d[i, r])
