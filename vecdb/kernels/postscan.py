"""Numba scan of SPANN posting blocks for a batch of queries: the search's hot loop.

Pure functions on arrays (no I/O, no globals). For each query, its blocks (CSR `ptr` into
`off` / `cnt`, as `posting.gather_blocks` lays them out) are scored dimension-major, the
survivors filtered against the k-th distance, checked with the one "entry visible" predicate
(`posting.entry_visible`) and deduped against the top-k. One query's work is `_scan_query`;
`scan_blocks` runs queries in turn on the calling thread with the GIL released, so concurrent
searches, and chunks of one batch on several threads (`index.spann.fanout`), run in parallel;
`search_threads` says how many threads a batch gets. Hot loops slice views instead of indexing
with computed signed offsets, which blocks vectorisation in numba.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.posting import METRIC_IP, METRIC_L2, _layout, entry_visible

HALF_SCALE = np.float32(2.0**112)  # float16 bits moved into a float32 are 2^-112 too small
HALF_SAFE = 6.0e4  # above this a query component times HALF_SCALE could overflow


@nb.njit(cache=True, nogil=True)
def _half_bits(h, bits):  # type: ignore[no-untyped-def]
    """float16 bit patterns -> float32 patterns of the same value times 2^-112: sign in
    place, exponent and mantissa shifted (exact for normal halves and zero; the writer
    stores no subnormal, inf or NaN). Callers multiply by HALF_SCALE, usually folded into the
    query component. Shifts and masks only, so it vectorises."""
    for j in range(h.shape[0]):
        x = np.uint32(h[j])
        bits[j] = ((x & 0x8000) << 16) | ((x & 0x7FFF) << 13)


def half_to_float(h: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Widen float16 bit patterns as the scan kernel does (for tests and tools)."""
    bits = np.empty(len(h), dtype=np.uint32)
    _half_bits(h, bits)
    out: npt.NDArray[np.float32] = bits.view(np.float32) * HALF_SCALE
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _score_block(u8, f32, u16, dim, width, qoff, qscale, o, cap, voff, q, metric, a, bits):  # type: ignore[no-untyped-def]
    """a[:cap] = the block's raw scores against q (squared L2, or q . x without the int8
    offsets' share)."""
    a[:] = 0.0
    raw = bits.view(np.float32)
    for t in range(dim):
        qt = q[t]
        if width == 1:
            codes = u8[o + voff + t * cap : o + voff + (t + 1) * cap]
            if metric == METRIC_L2:
                qd = qt - qoff[t]
                st = qscale[t]
                for j in range(cap):
                    diff = qd - st * np.float32(codes[j])
                    a[j] += diff * diff
            else:
                qs = qt * qscale[t]
                for j in range(cap):
                    a[j] += qs * np.float32(codes[j])
            continue
        if width == 4:
            base = (o + voff) // 4 + t * cap
            row = f32[base : base + cap]
            if metric == METRIC_L2:
                for j in range(cap):
                    diff = qt - row[j]
                    a[j] += diff * diff
            else:
                for j in range(cap):
                    a[j] += qt * row[j]
            continue
        base = (o + voff) // 2 + t * cap
        _half_bits(u16[base : base + cap], bits)
        if metric == METRIC_L2 or abs(qt) > HALF_SAFE:
            for j in range(cap):
                v = raw[j] * HALF_SCALE
                if metric == METRIC_L2:
                    v = qt - v
                    a[j] += v * v
                else:
                    a[j] += qt * v
        else:
            qs = qt * HALF_SCALE
            for j in range(cap):
                a[j] += qs * raw[j]


@nb.njit(cache=True, nogil=True, inline="always")
def _scan_query(  # type: ignore[no-untyped-def]
    u8,
    i64,
    f32,
    u16,
    dim,
    width,
    qoff,
    qscale,
    lo,
    hi,
    off,
    cnt,
    q,
    slot_version,
    vis,
    use_vis,
    metric,
    ids,
    ds,
):
    """Fold blocks lo:hi into one query's top-k row (ids, ds: ascending, -1 / +inf padded)."""
    k = ids.shape[0]
    shift = np.float32(0.0)  # int8 codes, ip/cosine: the offsets' share of q . x
    if width == 1 and metric != METRIC_L2:
        for t in range(dim):
            shift += q[t] * qoff[t]
    room = 8
    for b in range(lo, hi):
        room = max(room, cnt[b])
    acc = np.empty(room, dtype=np.float32)
    bits = np.empty(room, dtype=np.uint32)
    for b in range(lo, hi):
        o = off[b]
        n = cnt[b]
        cap, voff = _layout(n)
        a = acc[:cap]
        _score_block(u8, f32, u16, dim, width, qoff, qscale, o, cap, voff, q, metric, a, bits[:cap])
        slots = i64[(o + 64) // 8 : (o + 64) // 8 + n]
        vers = u8[o + 64 + 8 * cap : o + 64 + 8 * cap + n]
        for j in range(n):
            if metric == METRIC_L2:
                d = a[j]
            elif metric == METRIC_IP:
                d = -(a[j] + shift)
            else:
                d = 1.0 - (a[j] + shift)
            if d >= ds[k - 1]:
                continue
            s = slots[j]
            if not entry_visible(s, vers[j], slot_version, vis, use_vis):
                continue
            dup = False
            for r in range(k):
                if ids[r] == s:
                    dup = True
                    break
            if dup:
                continue
            r = k - 1
            while r > 0 and ds[r - 1] > d:
                ds[r] = ds[r - 1]
                ids[r] = ids[r - 1]
                r -= 1
            ds[r] = d
            ids[r] = s


@nb.njit(cache=True, nogil=True)
def scan_blocks(  # type: ignore[no-untyped-def]
    u8,
    i64,
    f32,
    u16,
    dim,
    width,
    qoff,
    qscale,
    ptr,
    off,
    cnt,
    queries,
    slot_version,
    vis,
    use_vis,
    metric,
    out_ids,
    out_d,
):
    """Top-k (k = out_ids.shape[1]) of each query over its blocks ptr[i]:ptr[i+1]; only
    entries passing `entry_visible` count (stale, removed and, with `use_vis`, slots outside
    the bitmap `vis` are skipped inside the scan); replicas of one slot are deduped.
    Components are float32 (width 4, read in place), float16 (width 2, widened row by row) or
    uint8 codes x = qoff + qscale * code (width 1; the scale is folded into the query).
    out_ids/out_d must come in padded with -1 / +inf (or hold earlier rounds' results)."""
    for i in range(queries.shape[0]):
        _scan_query(
            u8,
            i64,
            f32,
            u16,
            dim,
            width,
            qoff,
            qscale,
            ptr[i],
            ptr[i + 1],
            off,
            cnt,
            queries[i],
            slot_version,
            vis,
            use_vis,
            metric,
            out_ids[i],
            out_d[i],
        )


PARALLEL_MIN_QUERIES = 16  # smaller batches run on the calling thread


def search_threads(nq: int) -> int:
    """Threads a search of `nq` queries uses: numba's count for the calling thread
    (`numba.set_num_threads`, the process's thread setting) once the batch repays handing
    chunks to other threads, else 1."""
    return nb.get_num_threads() if nq >= PARALLEL_MIN_QUERIES else 1
