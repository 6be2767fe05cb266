"""Late-interaction (MaxSim) scoring of documents stored doc-major.

This module owns the scoring kernels of multi-vector documents. A document is a run of token
rows ``tokens[offsets[i]:offsets[i + 1]]``; a query is an (m, d) float32 matrix; the MaxSim of
a document is the sum over query tokens of the best dot product with any of its tokens. An
empty document scores -inf (it never ranks). Every kernel scores the documents named by
``cand`` (int64 document numbers) into ``out[len(cand)]`` float32:

- ``maxsim``: exact, over float32 tokens, or int8 tokens with the per-dimension scales folded
  into the query by the caller (``q * scale``);
- ``centroid_scores``: the (K, lanes) table of centroid x query-token scores every other
  kernel reads (16 lanes a register, `vecdb.kernels.simd`);
- ``centroid_interaction``: PLAID's approximation from the tokens' centroid codes and a
  (K, m) table of centroid x query-token scores, optionally over the codes in ``keep`` only;
- ``lut_maxsim``: scores from packed per-token bytes and a byte lookup table (see
  ``vecdb.kernels.bitpack``): residual codes plus the centroid score (WARP-style scoring
  without decompression), or sign bits alone (the asymmetric float-query x sign-bit
  prefilter);
- ``residual_maxsim``: ``lut_maxsim`` with codes, 16 query tokens a vector register
  (`vecdb.kernels.simd`), the residual rerank of the search pipeline;
- ``probe_cells``: the best cells of each query token from a (K, lanes) centroid-score table,
  and the codes whose best query score reaches PLAID's threshold, in one pass over the table;
- ``gather_cells``: the unique live documents of some IVF cells (a CSR of document numbers);
- ``probe_scores``: the same documents from each query token's own probed cells, each scored
  from the postings alone (WARP's candidate score: per query token the best probed centroid
  score among the cells holding the document, a token with none imputed by its lowest probed
  score), a cheap first cut before the centroid interaction;
- ``best_of``: the n best-scored candidates in their own order (a cut of the pipeline);
- ``gather_rows``: the token rows of some documents, back to back (any dtype: rows are
  copied as bytes), the one gather of the raw store, the rerank tier and training.

Pure functions on C-contiguous arrays; no I/O, no state. Each scoring kernel comes serial
(GIL-free) and parallel over candidates, the wrapper picking by the amount of work; the
per-query ones (`centroid_scores`, the probe, `best_of`) are serial.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from vecdb.kernels.simd import (
    LANES,
    vadd,
    vany_gt,
    vfma,
    vhmax,
    vload,
    vmax,
    vsplat,
    vstore,
    vsum,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

# Below this many multiply-adds (or lookups) a call runs serially: waking numba's thread pool
# costs more than the work.
PARALLEL_MIN_WORK = 1 << 24
# `residual_maxsim` pads the query tokens to a multiple of LANES (`simd.LANES` = 16) and
# scores 16 of them at a time, each token's 16 partial sums in one vector register.
FLOOR = np.float32(-3.0e38)  # below every score: `probe_cells`' empty slots (fastmath: no inf)


@njit(cache=True, inline="always")
def code_at(packed: np.ndarray, t: int, bits: int) -> int:
    """Code of token t in a stream of `bits`-bit codes (little-endian, 2 bytes of padding)."""
    pos = t * bits
    b = pos >> 3
    v = np.int64(packed[b]) | (np.int64(packed[b + 1]) << 8) | (np.int64(packed[b + 2]) << 16)
    return int((v >> (pos & 7)) & ((1 << bits) - 1))


@njit(cache=True, inline="always")
def _exact_doc(q, tokens, lo, hi, best):  # type: ignore[no-untyped-def]
    m, d = q.shape
    for i in range(m):
        best[i] = -np.inf
    for t in range(lo, hi):
        row = tokens[t]
        for i in range(m):
            s = np.float32(0.0)
            for j in range(d):
                s += q[i, j] * np.float32(row[j])
            if s > best[i]:
                best[i] = s
    total = np.float32(0.0)
    for i in range(m):
        total += best[i]
    return total


@njit(cache=True, nogil=True, fastmath=True)
def _maxsim_serial(q, tokens, offsets, cand, out):  # type: ignore[no-untyped-def]
    best = np.empty(q.shape[0], np.float32)
    for c in range(cand.shape[0]):
        doc = cand[c]
        out[c] = _exact_doc(q, tokens, offsets[doc], offsets[doc + 1], best)


@njit(cache=True, parallel=True, fastmath=True)
def _maxsim_parallel(q, tokens, offsets, cand, out):  # type: ignore[no-untyped-def]
    for c in prange(cand.shape[0]):
        best = np.empty(q.shape[0], np.float32)
        doc = cand[c]
        out[c] = _exact_doc(q, tokens, offsets[doc], offsets[doc + 1], best)


@njit(cache=True, inline="always")
def _interaction_doc(sf, width, packed, bits, keep, lo, hi):  # type: ignore[no-untyped-def]
    """Sum over lanes of the best kept-code row of the tokens lo:hi, from flat (K * width)
    scores, 16 lanes a register; 0 when no token's code is kept (every kept row sets every
    lane, so the lanes are all set or none)."""
    total = np.float32(0.0)
    for o in range(0, width, LANES):
        best = vsplat(FLOOR)
        hit = False
        for t in range(lo, hi):
            code = code_at(packed, t, bits)
            if keep[code]:
                hit = True
                best = vmax(best, vload(sf, code * width + o))
        if hit:
            total += vsum(best)
    return total


@njit(cache=True, nogil=True)
def _interaction_serial(skq, packed, bits, keep, offsets, cand, out):  # type: ignore[no-untyped-def]
    width = skq.shape[1]
    sf = skq.reshape(-1)
    for c in range(cand.shape[0]):
        doc = cand[c]
        out[c] = _interaction_doc(sf, width, packed, bits, keep, offsets[doc], offsets[doc + 1])


@njit(cache=True, parallel=True)
def _interaction_parallel(skq, packed, bits, keep, offsets, cand, out):  # type: ignore[no-untyped-def]
    width = skq.shape[1]
    sf = skq.reshape(-1)
    for c in prange(cand.shape[0]):
        doc = cand[c]
        out[c] = _interaction_doc(sf, width, packed, bits, keep, offsets[doc], offsets[doc + 1])


@njit(cache=True, inline="always")
def _lut_doc(skq, packed, bits, lut, data, lo, hi, best, acc):  # type: ignore[no-untyped-def]
    npos, _, m = lut.shape
    for i in range(m):
        best[i] = -np.inf
    for t in range(lo, hi):
        if bits > 0:
            base = skq[code_at(packed, t, bits)]
            for i in range(m):
                acc[i] = base[i]
        else:
            for i in range(m):
                acc[i] = 0.0
        row = data[t]
        for p in range(npos):
            tab = lut[p, row[p]]
            for i in range(m):
                acc[i] += tab[i]
        for i in range(m):
            if acc[i] > best[i]:
                best[i] = acc[i]
    total = np.float32(0.0)
    for i in range(m):
        total += best[i]
    return total


@njit(cache=True, nogil=True, fastmath=True)
def _lut_serial(skq, packed, bits, lut, data, offsets, cand, out):  # type: ignore[no-untyped-def]
    m = lut.shape[2]
    best = np.empty(m, np.float32)
    acc = np.empty(m, np.float32)
    for c in range(cand.shape[0]):
        doc = cand[c]
        lo, hi = offsets[doc], offsets[doc + 1]
        out[c] = _lut_doc(skq, packed, bits, lut, data, lo, hi, best, acc)


@njit(cache=True, parallel=True, fastmath=True)
def _lut_parallel(skq, packed, bits, lut, data, offsets, cand, out):  # type: ignore[no-untyped-def]
    m = lut.shape[2]
    for c in prange(cand.shape[0]):
        best = np.empty(m, np.float32)
        acc = np.empty(m, np.float32)
        doc = cand[c]
        lo, hi = offsets[doc], offsets[doc + 1]
        out[c] = _lut_doc(skq, packed, bits, lut, data, lo, hi, best, acc)


@njit(cache=True, inline="always")
def _residual_doc(sf, packed, bits, lf, data, width, lo, hi):  # type: ignore[no-untyped-def]
    """Residual MaxSim of the tokens lo:hi, from flat (K * width) centroid scores `sf` and
    flat (P * 256 * width) byte tables `lf`, 16 lanes at a time in registers."""
    if hi <= lo:
        return -np.inf
    total = np.float32(0.0)
    for o in range(0, width, LANES):
        total += vsum(residual_best(vsplat(FLOOR), sf, packed, bits, lf, data, width, lo, hi, o))
    return total


@njit(cache=True, inline="always")
def residual_best(best, sf, packed, bits, lf, data, width, lo, hi, o):  # type: ignore[no-untyped-def]
    """`best` (16 lanes: query tokens o:o + 16) raised by the residual scores of tokens
    lo:hi: the centroid score plus one table entry per residual byte, nothing decompressed."""
    npos = data.shape[1]
    for t in range(lo, hi):
        acc = vload(sf, code_at(packed, t, bits) * width + o)
        row = data[t]
        base = o
        for p in range(npos):
            acc = vadd(acc, vload(lf, base + np.int64(row[p]) * width))
            base += 256 * width
        best = vmax(best, acc)
    return best


@njit(cache=True, nogil=True, fastmath=True)
def _residual_serial(skq, packed, bits, lut, data, offsets, cand, out):  # type: ignore[no-untyped-def]
    width = lut.shape[2]
    sf, lf = skq.reshape(-1), lut.reshape(-1)
    for c in range(cand.shape[0]):
        doc = cand[c]
        out[c] = _residual_doc(sf, packed, bits, lf, data, width, offsets[doc], offsets[doc + 1])


@njit(cache=True, parallel=True, fastmath=True)
def _residual_parallel(skq, packed, bits, lut, data, offsets, cand, out):  # type: ignore[no-untyped-def]
    width = lut.shape[2]
    sf, lf = skq.reshape(-1), lut.reshape(-1)
    for c in prange(cand.shape[0]):
        doc = cand[c]
        out[c] = _residual_doc(sf, packed, bits, lf, data, width, offsets[doc], offsets[doc + 1])


@njit(cache=True, nogil=True, fastmath=True)
def _centroid_scores(bits, shift, qt, out):  # type: ignore[no-untyped-def]
    """out[r, o:o + 16] = c[r] @ qt[:, o:o + 16], the centroids c given as their float32 bits
    (uint32, shift 0) or as bfloat16 (uint16: the upper halves, shift 16): eight rows at a
    time widened into a float32 scratch, then, for each 16 query-token lanes, eight FMA
    chains, each a register of the lanes (independent chains hide the FMA latency). The
    table is read once per call however many query tokens: a 32-token query read it twice."""
    k, d = bits.shape
    width = qt.shape[1]
    qf, of = qt.reshape(-1), out.reshape(-1)
    wide = np.empty(8 * d, np.uint32)
    row = wide.view(np.float32)
    r = 0
    while r < k:  # each row read and widened once, whatever the number of lane groups
        n = min(8, k - r)
        for t in range(n):
            for j in range(d):
                wide[t * d + j] = np.uint32(bits[r + t, j]) << shift
        for o in range(0, width, LANES):
            if n == 8:
                a0, a1, a2, a3 = vsplat(0.0), vsplat(0.0), vsplat(0.0), vsplat(0.0)
                a4, a5, a6, a7 = vsplat(0.0), vsplat(0.0), vsplat(0.0), vsplat(0.0)
                for j in range(d):
                    x = vload(qf, j * width + o)
                    a0 = vfma(vsplat(row[j]), x, a0)
                    a1 = vfma(vsplat(row[d + j]), x, a1)
                    a2 = vfma(vsplat(row[2 * d + j]), x, a2)
                    a3 = vfma(vsplat(row[3 * d + j]), x, a3)
                    a4 = vfma(vsplat(row[4 * d + j]), x, a4)
                    a5 = vfma(vsplat(row[5 * d + j]), x, a5)
                    a6 = vfma(vsplat(row[6 * d + j]), x, a6)
                    a7 = vfma(vsplat(row[7 * d + j]), x, a7)
                vstore(of, r * width + o, a0)
                vstore(of, (r + 1) * width + o, a1)
                vstore(of, (r + 2) * width + o, a2)
                vstore(of, (r + 3) * width + o, a3)
                vstore(of, (r + 4) * width + o, a4)
                vstore(of, (r + 5) * width + o, a5)
                vstore(of, (r + 6) * width + o, a6)
                vstore(of, (r + 7) * width + o, a7)
            else:
                for t in range(n):
                    a0 = vsplat(0.0)
                    for j in range(d):
                        a0 = vfma(vsplat(row[t * d + j]), vload(qf, j * width + o), a0)
                    vstore(of, (r + t) * width + o, a0)
        r += n


def to_bfloat16(x: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """float32 values as bfloat16 bits (uint16: the upper half, rounded to nearest, ties to
    even); finite inputs only."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return (
        (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    ).astype(np.uint16)


@njit(cache=True, nogil=True, fastmath=True)
def _probe(skq, m, nprobe, tau, keep, allowed, topv, topi, flag):  # type: ignore[no-untyped-def]
    k, width = skq.shape
    sf = skq.reshape(-1)
    # finite sentinels, not -inf: fastmath assumes no infinities. Per lane: `last` is the
    # token's nprobe-th best so far (lanes >= m: above every score, so never hit) and `mask`
    # is 0 (lanes >= m: FLOOR, so the code's best over the m tokens ignores them).
    last = np.full(width, -FLOOR, np.float32)
    last[:m] = FLOOR
    mask = np.full(width, FLOOR, np.float32)
    mask[:m] = 0.0
    lf, mf = last.reshape(-1), mask.reshape(-1)
    for i in range(m):
        for j in range(nprobe):
            topv[i, j] = FLOOR
            topi[i, j] = -1
    for c in range(k):
        best = FLOOR
        hit = False
        for o in range(0, width, LANES):  # 16 lanes a register: the usual centroid beats
            row = vload(sf, c * width + o)  # no token's list, found without a branch a lane
            best = max(best, vhmax(vadd(row, vload(mf, o))))
            hit |= vany_gt(row, vload(lf, o))
        keep[c] = best >= tau
        if not hit or not allowed[c]:
            continue
        for i in range(m):
            s = skq[c, i]
            if s > last[i]:  # insert into token i's sorted best list
                j = nprobe - 1
                while j > 0 and topv[i, j - 1] < s:
                    topv[i, j] = topv[i, j - 1]
                    topi[i, j] = topi[i, j - 1]
                    j -= 1
                topv[i, j] = s
                topi[i, j] = c
                last[i] = topv[i, nprobe - 1]
    n = 0
    for i in range(m):
        for j in range(nprobe):
            c = topi[i, j]
            if c >= 0 and not flag[c]:
                flag[c] = True
                n += 1
    out = np.empty(n, np.int64)
    n = 0
    for c in range(k):  # ascending, and the flags are cleared for the next call
        if flag[c]:
            flag[c] = False
            out[n] = c
            n += 1
    return out


@njit(cache=True, nogil=True)
def _best_of(cand, scores, n, out_c, out_s):  # type: ignore[no-untyped-def]
    thr = np.partition(scores, scores.shape[0] - n)[scores.shape[0] - n]  # the n-th best
    above = 0
    for i in range(scores.shape[0]):
        above += scores[i] > thr
    ties = n - above  # of the scores equal to the n-th best, the first ones in order
    j = 0
    for i in range(scores.shape[0]):
        s = scores[i]
        if s > thr or (s == thr and ties > 0):
            ties -= s == thr
            out_c[j] = cand[i]
            out_s[j] = s
            j += 1


@njit(cache=True, nogil=True)
def _gather_rows(src, offsets, docs, local, out):  # type: ignore[no-untyped-def]
    for i in range(docs.shape[0]):
        lo = offsets[docs[i]]
        base = local[i]
        for t in range(local[i + 1] - base):
            for j in range(src.shape[1]):
                out[base + t, j] = src[lo + t, j]


@njit(cache=True, nogil=True)
def _gather(cells, indptr, docs, alive, stamp, mark, out):  # type: ignore[no-untyped-def]
    n = 0
    for c in cells:
        for j in range(indptr[c], indptr[c + 1]):
            doc = docs[j]
            if stamp[doc] != mark and alive[doc]:
                stamp[doc] = mark
                out[n] = doc
                n += 1
    return n


@njit(cache=True, nogil=True)
def _probe_scores(skq, topv, topi, indptr, docs, alive, stamp, mark, slot, cand, best, out):  # type: ignore[no-untyped-def]
    m, nprobe = topi.shape
    width = best.shape[1]
    bf = best.reshape(-1)
    floor = vsplat(FLOOR)
    n = 0
    for i in range(m):
        for j in range(nprobe):
            c = topi[i, j]
            if c < 0:
                continue
            s = skq[c, i]
            for p in range(indptr[c], indptr[c + 1]):
                doc = docs[p]
                if not alive[doc]:
                    continue
                if stamp[doc] != mark:
                    stamp[doc] = mark
                    slot[doc] = n
                    cand[n] = doc
                    for o in range(0, width, LANES):
                        vstore(bf, n * width + o, floor)
                    n += 1
                r = slot[doc]
                if s > best[r, i]:
                    best[r, i] = s
    # A token none of whose probed cells holds the document is imputed its lowest probed
    # score; every probed score is at least that, so the max of the two is the score (lanes
    # past m: max(FLOOR, 0) = 0, summed after the m tokens, in lane order as a scalar loop).
    low = np.zeros(width, np.float32)
    for i in range(m):
        low[i] = topv[i, nprobe - 1]
    for r in range(n):
        total = np.float32(0.0)
        for o in range(0, width, LANES):
            total += vsum(vmax(vload(bf, r * width + o), vload(low, o)))
        out[r] = total
    return n


def lanes(m: int) -> int:
    """Width the residual kernel pads m query tokens to (a multiple of LANES)."""
    return max(LANES, -(-m // LANES) * LANES)


def centroid_scores(centroids: npt.NDArray[np.generic], q: F32) -> F32:
    """The centroid x query-token scores ``centroids @ q.T`` as a (K, lanes(m)) table, the
    lanes past the m query tokens zero: the layout every kernel here reads. A broadcast-FMA
    kernel, not BLAS: on t2 (K = 4,096, d = 128, 16 lanes) 0.66x numpy's matmul into the
    same layout with equal results (bench/RESULTS.md, "Issue 11: the default pipeline in 16-lane
    registers"), BLAS being tuned for larger outputs. Centroids as uint16 are bfloat16
    (`to_bfloat16`): half the bytes, scores within ~1e-3 of the float32 ones for unit rows."""
    if centroids.ndim != 2 or q.ndim != 2 or centroids.shape[1] != q.shape[1]:
        raise ValueError(f"centroids {centroids.shape} and query {q.shape} disagree")
    width = lanes(len(q))
    qt = np.zeros((q.shape[1], width), np.float32)
    qt[:, : len(q)] = q.T
    out = np.empty((len(centroids), width), np.float32)
    if centroids.dtype == np.uint16:
        _centroid_scores(np.ascontiguousarray(centroids), np.uint32(16), qt, out)
    else:
        f32 = np.ascontiguousarray(centroids, np.float32)
        _centroid_scores(f32.view(np.uint32), np.uint32(0), qt, out)
    return out


def _tokens_of(offsets: I64, cand: I64) -> int:
    """Tokens of the candidate documents (the work unit of every kernel)."""
    if len(cand) == 0:
        return 0
    return int((offsets[cand + 1] - offsets[cand]).sum())


def _check(offsets: I64, cand: I64, out: F32) -> None:
    if out.shape != cand.shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {cand.shape}, got {out.dtype} {out.shape}")
    if offsets.dtype != np.int64 or cand.dtype != np.int64:
        raise ValueError("offsets and cand must be int64")


def maxsim(q: F32, tokens: npt.NDArray[np.generic], offsets: I64, cand: I64, out: F32) -> None:
    """out[c] = sum_i max_t q[i] . tokens[t] over the tokens of document cand[c]; tokens are
    float32 or int8 (then q carries the per-dimension scales)."""
    _check(offsets, cand, out)
    if q.ndim != 2 or tokens.ndim != 2 or q.shape[1] != tokens.shape[1]:
        raise ValueError(f"query {q.shape} and tokens {tokens.shape} disagree")
    work = _tokens_of(offsets, cand) * q.shape[0] * q.shape[1]
    fn = _maxsim_parallel if len(cand) > 1 and work >= PARALLEL_MIN_WORK else _maxsim_serial
    fn(q, tokens, offsets, cand, out)


def centroid_interaction(
    skq: F32, packed: U8, bits: int, offsets: I64, cand: I64, out: F32, keep: npt.NDArray[np.bool_]
) -> None:
    """PLAID's centroid interaction: out[c] = sum_i max over the document's codes in `keep` of
    skq[code, i] (a query token with no such code adds 0); `packed` holds `bits`-bit codes."""
    _check(offsets, cand, out)
    if keep.shape != (skq.shape[0],):
        raise ValueError(f"keep must have one flag per centroid ({skq.shape[0]})")
    work = _tokens_of(offsets, cand) * skq.shape[1]
    width = lanes(skq.shape[1])
    if skq.shape[1] != width or not skq.flags.c_contiguous:  # the kernel reads 16 lanes a row
        wide = np.zeros((skq.shape[0], width), np.float32)  # padded lanes score 0: add 0
        wide[:, : skq.shape[1]] = skq
        skq = wide
    par = len(cand) > 1 and work >= PARALLEL_MIN_WORK
    fn = _interaction_parallel if par else _interaction_serial
    fn(skq, packed, bits, keep, offsets, cand, out)


def lut_maxsim(
    lut: F32,
    data: U8,
    offsets: I64,
    cand: I64,
    out: F32,
    skq: F32 | None = None,
    packed: U8 | None = None,
    bits: int = 0,
) -> None:
    """MaxSim from packed token bytes: a token's score for query token i is
    sum_p lut[p, data[t, p], i], plus skq[code(t), i] when codes are given (bits > 0)."""
    _check(offsets, cand, out)
    if lut.ndim != 3 or lut.shape[1] != 256 or data.ndim != 2 or data.shape[1] != lut.shape[0]:
        raise ValueError(f"lut {lut.shape} and data {data.shape} disagree")
    if bits > 0 and (skq is None or packed is None or skq.shape[1] != lut.shape[2]):
        raise ValueError("codes need a (K, m) skq and the packed codes")
    if skq is None or packed is None or bits == 0:
        skq, packed, bits = np.zeros((1, lut.shape[2]), np.float32), np.zeros(3, np.uint8), 0
    work = _tokens_of(offsets, cand) * lut.shape[0] * lut.shape[2]
    fn = _lut_parallel if len(cand) > 1 and work >= PARALLEL_MIN_WORK else _lut_serial
    fn(skq, packed, bits, lut, data, offsets, cand, out)


def residual_maxsim(
    lut: F32, data: U8, offsets: I64, cand: I64, out: F32, skq: F32, packed: U8, bits: int
) -> None:
    """`lut_maxsim` with codes (the residual rerank): each token's scores for 16 query
    tokens at a time are one `simd.F16` register, its centroid's row plus one table row per
    byte, so the partial sums are never stored and each table row is one vector load. Equal
    to `lut_maxsim(lut, data, offsets, cand, out, skq, packed, bits)` up to float rounding;
    on t2's 96 reranked candidates 0.35-0.39x the time of the position-major blocked kernel
    it replaced (bench/RESULTS.md, "Issue 11: the default pipeline in 16-lane registers"). Tables
    already `lanes(m)` wide, zero past the query's tokens,
    are used as they are."""
    _check(offsets, cand, out)
    if lut.ndim != 3 or lut.shape[1] != 256 or data.ndim != 2 or data.shape[1] != lut.shape[0]:
        raise ValueError(f"lut {lut.shape} and data {data.shape} disagree")
    if bits <= 0 or skq.ndim != 2 or skq.shape[1] != lut.shape[2]:
        raise ValueError("residual scoring needs codes and a (K, m) skq")
    npos, _, m = lut.shape
    width = max(LANES, -(-m // LANES) * LANES)
    if m == width:  # the caller padded both (`lanes`): no copies
        lut_w, skq_w = lut, skq
    else:
        lut_w = np.zeros((npos, 256, width), np.float32)  # padded lanes add 0 to every score
        lut_w[:, :, :m] = lut
        skq_w = np.zeros((skq.shape[0], width), np.float32)
        skq_w[:, :m] = skq
    if len(cand) == 0:
        return
    work = _tokens_of(offsets, cand) * npos * m
    fn = _residual_parallel if len(cand) > 1 and work >= PARALLEL_MIN_WORK else _residual_serial
    fn(np.ascontiguousarray(skq_w), packed, bits, np.ascontiguousarray(lut_w), data, offsets,
       cand, out)  # fmt: skip


def probe_cells(
    skq: F32, m: int, nprobe: int, tau: float, keep: npt.NDArray[np.bool_],
    allowed: npt.NDArray[np.bool_] | None = None,
) -> I64:  # fmt: skip
    """The unique cells (ascending) among the `nprobe` best of each query token i < m, from
    the centroid scores ``skq[c, i]`` (K, lanes >= m; lanes past m are ignored), and
    ``keep[c] = max_i skq[c, i] >= tau`` for every centroid, in one pass over the table (what
    ``np.unique(np.argpartition(skq[:, :m].T, -nprobe)[:, -nprobe:])`` and a column max give,
    without the transposed copy; ties may pick a different cell). With m = 0, no cells and no
    code kept. `allowed` (K flags): only those cells are probed (a tenant's own cells; `keep`
    is still set for every centroid)."""
    return probe_token_cells(skq, m, nprobe, tau, keep, allowed)[0]


def probe_token_cells(
    skq: F32, m: int, nprobe: int, tau: float, keep: npt.NDArray[np.bool_],
    allowed: npt.NDArray[np.bool_] | None = None,
) -> tuple[I64, F32, I64]:  # fmt: skip
    """`probe_cells`, plus each query token's own best cells: (unique cells, scores (m,
    nprobe) best first, cell numbers (m, nprobe); -1 where fewer cells than nprobe are
    allowed)."""
    k = skq.shape[0]
    if skq.ndim != 2 or not 0 <= m <= skq.shape[1] or keep.shape != (k,):
        raise ValueError(f"skq {skq.shape}, m = {m} and keep {keep.shape} disagree")
    if allowed is None:
        allowed = np.ones(k, np.bool_)
    elif allowed.shape != (k,) or allowed.dtype != np.bool_:
        raise ValueError(f"allowed must be {k} booleans, got {allowed.dtype} {allowed.shape}")
    nprobe = max(1, min(nprobe, k))
    topv = np.empty((m, nprobe), np.float32)
    topi = np.empty((m, nprobe), np.int64)
    flag = np.zeros(k, np.bool_)
    if skq.shape[1] % LANES or not skq.flags.c_contiguous:  # the kernel reads 16 lanes a row
        wide = np.zeros((k, lanes(skq.shape[1])), np.float32)
        wide[:, : skq.shape[1]] = skq
        skq = wide
    cells: I64 = _probe(skq, m, nprobe, np.float32(tau), keep, allowed, topv, topi, flag)
    return cells, topv, topi


def probe_scores(
    skq: F32,
    topv: F32,
    topi: I64,
    indptr: I64,
    docs: npt.NDArray[np.integer],
    alive: npt.NDArray[np.bool_],
    stamp: npt.NDArray[np.int64],
    mark: int,
    slot: npt.NDArray[np.int64],
) -> tuple[I64, F32]:
    """The live documents of the probed cells (`probe_token_cells`' topv / topi) in order of
    first appearance, and their WARP-style score from the postings alone: sum over query
    tokens i of the best ``skq[c, i]`` over token i's probed cells c that hold the document,
    or, when none does, token i's lowest probed score ``topv[i, -1]`` (an upper bound on what
    the document's unprobed cells give it). `stamp` / `mark` as in `gather_cells`; `slot` is
    caller scratch of at least len(alive) (any contents)."""
    if topv.shape != topi.shape or topv.ndim != 2 or topi.shape[0] > skq.shape[1]:
        raise ValueError(f"topv {topv.shape}, topi {topi.shape} and skq {skq.shape} disagree")
    cells = topi[topi >= 0]
    total = int((indptr[cells + 1] - indptr[cells]).sum()) if len(cells) else 0
    cap = min(total, len(alive))
    cand = np.empty(cap, np.int64)
    best = np.empty((cap, lanes(topi.shape[0])), np.float32)  # 16 lanes a register
    out = np.empty(cap, np.float32)
    n = _probe_scores(skq, topv, topi, indptr, docs, alive, stamp, mark, slot, cand, best, out)
    return cand[:n], out[:n]


def best_of(cand: I64, scores: F32, n: int) -> tuple[I64, F32]:
    """The n best-scored (highest) of `cand`, in their order in `cand` (all of them when n
    >= len(cand)); of the scores equal to the n-th best, the first ones. One pass of
    quickselect and one of copying: the pipeline's intermediate cuts, which need the set,
    not its order (the final `top` orders it)."""
    if n >= len(cand):
        return cand, scores
    out_c = np.empty(max(n, 0), np.int64)
    out_s = np.empty(max(n, 0), np.float32)
    if n > 0:
        _best_of(cand, np.ascontiguousarray(scores, np.float32), n, out_c, out_s)
    return out_c, out_s


def gather_cells(
    cells: I64,
    indptr: I64,
    docs: npt.NDArray[np.integer],
    alive: npt.NDArray[np.bool_],
    stamp: npt.NDArray[np.int64],
    mark: int,
) -> I64:
    """Unique documents (in order of first appearance) of the given cells whose `alive` flag
    is set. `stamp` is caller scratch of at least len(alive) that is never reset: a document
    counts as seen when its stamp equals `mark`, so each call needs a mark no earlier call on
    the same scratch used (a counter; allocate the scratch filled with -1 once, marks >= 0)."""
    total = int((indptr[cells + 1] - indptr[cells]).sum()) if len(cells) else 0
    out = np.empty(min(total, len(alive)), np.int64)
    n = _gather(cells, indptr, docs, alive, stamp, mark, out)
    return out[:n]


def gather_rows(
    src: npt.NDArray[np.generic], offsets: I64, docs: I64
) -> tuple[npt.NDArray[np.generic], I64]:
    """The rows ``src[offsets[d]:offsets[d + 1]]`` of each document d in `docs`, back to
    back, and their local offsets (len(docs) + 1)."""
    sizes = offsets[docs + 1] - offsets[docs] if len(docs) else np.zeros(0, np.int64)
    local = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(sizes, out=local[1:])
    out = np.empty((int(local[-1]), src.shape[1]), src.dtype)
    if len(out) and src.shape[1]:
        as_bytes = np.ascontiguousarray(src).view(np.uint8)
        _gather_rows(as_bytes, offsets, docs, local, out.view(np.uint8))
    return out, local
