"""One-bit codes of posting entries (RaBitQ: Gao & Long, SIGMOD 2024) and their scan.

This module owns the arithmetic of the estimator and the order of entries in a posting block
(`to_lanes`); the index stores them (`index.spann.bitcodes`, `postings`). An entry
x of a posting with centroid c is coded from its residual r = x - c after a random
orthogonal rotation (`rotation`; rows are rotated as `r @ rot`): the code's bit j is the sign
of r'_j, packed as `hamming.pack_signs` packs (bit j in uint64 word j // 64), and beside it
two factors, ||r|| and <x_bar, o> (o = r / ||r||, x_bar = the code as a unit vector of
+-1/sqrt(d)). A query's rotated residual q' = (q - c) @ rot is quantized to `QUERY_BITS`
unsigned bits per component (offset `lo`, step `delta`, rounded to nearest) and split into
bit planes, so <x_bar, q'> is a few AND + popcount passes over the code's words. The
estimate of <r, q'> is ||r|| <x_bar, q'> / <x_bar, o>; its error is about normal with the
standard deviation `_sd` (the paper's bound with the 4-bit rounding of the query added as a
uniform error), and `ERROR_EPS` of those bound it for nearly every entry (`estimate`).
The estimator is linear in the query, so the centroid's part can live in the entry instead
(`scan_factors`): the rotated query q @ rot is then quantized once for every posting, and
||q - c||^2 is the head search's own distance. `scan_rerank` is one query's whole bit search
over a set of postings: the estimates, the best `r` distinct slots by estimated distance,
their exact distances from float16 rows, the top k. Pure functions on C-contiguous arrays;
no I/O, no state. Every kernel releases the GIL.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np
import numpy.typing as npt

from vecdb.kernels.groupscan import _fold
from vecdb.kernels.hadamard import _structured, is_structured
from vecdb.kernels.hamming import _popcount, code_words, pack_signs
from vecdb.kernels.headgraph import _widen
from vecdb.kernels.posting import (
    BITS_FACTOR_WORDS,
    BITS_GROUP,
    BITS_WIDTH,
    METRIC_IP,
    METRIC_L2,
    SLOT_BYTES,
    _layout,
    body_bytes,
    entry_visible,
    vector_bytes,
)
from vecdb.kernels.prefetch import _prefetch
from vecdb.kernels.rerank import AHEAD, _prefetch_row, _row_dist
from vecdb.kernels.simd64 import WLANES, wadd, wand, wcount, wload, wshl, wstore, wsum, wzero

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
QUERY_BITS = 4  # bits per rotated query component: RaBitQ's B_q = 4, the paper's setting
# (MiniLM-384, 64 postings, the best 100 reranked: recall 0.9530, the float16 scan's own)
QUERY_LEVELS = (1 << QUERY_BITS) - 1
# Standard deviations in the stated error bound. The paper's eps0 = 1.9 is what its rerank
# rule uses; a normal error is inside 3 of them for 99.7% of entries.
ERROR_EPS = 3.0
# 1 - <x_bar, o>^2 at <x_bar, o>'s mean for a normal residual, sqrt(2 / pi): the entry's
# mul holds ||r|| / <x_bar, o> but not <x_bar, o> itself (`bound_gap`)
XO_VAR = 1.0 - 2.0 / np.pi


class QueryCode(NamedTuple):
    """A rotated query residual prepared for the scan: q'_j ~ lo + delta x (its 4-bit value),
    the values' bits as `QUERY_BITS` planes of code words, their sum, and ||q'||^2 (exact)."""

    planes: U64  # (QUERY_BITS, words): plane b holds bit b of every component's value
    lo: float  # the smallest component
    delta: float  # the quantization step ((max - min) / QUERY_LEVELS; 0 for a constant q')
    total: int  # sum of the quantized values
    sq_norm: float  # ||q'||^2


def rotation(d: int, seed: int = 0) -> F32:
    """A random orthogonal (d, d) float32 matrix (QR of a Gaussian matrix, column signs set
    by R's diagonal, so that it is uniformly distributed)."""
    g = np.random.default_rng(seed).standard_normal((d, d))
    q, r = np.linalg.qr(g)
    out: F32 = (q * np.where(np.diag(r) < 0, -1.0, 1.0)).astype(np.float32)
    return out


def encode(residuals: F32) -> tuple[U64, F32, F32]:
    """Codes (n, words) uint64, norms ||r|| and <x_bar, o> (n,) float32 of rotated residuals
    (n, d). A zero residual gets <x_bar, o> = 1 (its estimate is 0 whatever the code)."""
    r = np.ascontiguousarray(residuals, np.float32)
    if r.ndim != 2:
        raise ValueError(f"expected (n, d) residuals, got shape {r.shape}")
    codes = pack_signs(r)
    r64 = r.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", r64, r64))
    l1 = np.abs(r64).sum(1)
    safe = np.where(norms > 0, norms, 1.0)
    xo = np.where(norms > 0, l1 / (np.sqrt(max(r.shape[1], 1)) * safe), 1.0)
    return codes, norms.astype(np.float32), xo.astype(np.float32)


def unpack_signs(codes: U64, d: int) -> npt.NDArray[np.uint8]:
    """The bits (n, d) uint8 of codes (n, code_words(d)): `pack_signs` undone."""
    if codes.ndim != 2 or codes.shape[1] != code_words(d):
        raise ValueError(f"expected (n, {code_words(d)}) codes for d={d}, got {codes.shape}")
    bits = np.unpackbits(codes.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(bits[:, :d])
    return out


def scan_factors(
    residuals: F32, norms: F32, xo: F32, centers: F32 | None = None
) -> tuple[F32, F32]:
    """The two per-entry factors `scan_rerank` reads, (add, mul): the estimated squared
    distance of an entry to q is add + ||q - c||^2 - mul <x_bar, q_hat>, mul = 2 ||r|| /
    <x_bar, o>. Without `centers`, q_hat is the 4-bit rotated residual q' = (q - c) @ rot
    (the paper's form: one quantization per query and centroid) and add = ||r||^2. With the
    rotated centroids c' of the entries (n, d), or one for all (1, d), q_hat is the rotated
    query q @ rot itself, quantized once per query whatever the posting, and the centroid's
    part, <x_bar, c'> (exact, float64), moves into add = ||r||^2 + mul <x_bar, c'>: the same
    estimator (it is linear in the query), without a quantization per posting."""
    r = np.ascontiguousarray(residuals, np.float32)
    mul = (2.0 * norms.astype(np.float64) / xo).astype(np.float32)
    add = norms.astype(np.float64) ** 2
    if centers is not None:
        sign = np.where(r > 0, 1.0, -1.0) / np.sqrt(max(r.shape[1], 1))  # x_bar
        add += mul * np.einsum("ij,ij->i", sign, np.broadcast_to(centers, r.shape))
    return add.astype(np.float32), mul


@nb.njit(cache=True, nogil=True)
def _prepare(qr, planes):  # type: ignore[no-untyped-def]
    """Quantize q' into `planes` (QUERY_BITS = 4 of them); (lo, delta, total, ||q'||^2)."""
    d = qr.shape[0]
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    sq = np.float32(0.0)
    for j in range(d):
        v = qr[j]
        lo = min(lo, v)
        hi = max(hi, v)
        sq += v * v
    if d == 0:
        lo = hi = np.float32(0.0)
    delta = np.float32((hi - lo) / QUERY_LEVELS)
    inv = np.float32(1.0) / delta if delta > 0 else np.float32(0.0)
    total = 0
    half = np.float32(0.5)
    for w in range(planes.shape[1]):  # four planes a word, no branch per bit
        p0 = p1 = p2 = p3 = np.uint64(0)
        for j in range(w * 64, min(d, w * 64 + 64)):
            u = min(QUERY_LEVELS, max(0, int((qr[j] - lo) * inv + half)))
            total += u
            x = np.uint64(u)
            at = np.uint64(j - w * 64)
            p0 |= (x & np.uint64(1)) << at
            p1 |= ((x >> np.uint64(1)) & np.uint64(1)) << at
            p2 |= ((x >> np.uint64(2)) & np.uint64(1)) << at
            p3 |= ((x >> np.uint64(3)) & np.uint64(1)) << at
        planes[0, w] = p0
        planes[1, w] = p1
        planes[2, w] = p2
        planes[3, w] = p3
    return lo, delta, total, sq


def prepare_query(qr: F32) -> QueryCode:
    """The `QueryCode` of a rotated query residual q' (d,)."""
    q = np.ascontiguousarray(qr, np.float32)
    if q.ndim != 1:
        raise ValueError(f"expected a (d,) query residual, got shape {q.shape}")
    planes = np.empty((QUERY_BITS, code_words(len(q))), np.uint64)
    lo, delta, total, sq = _prepare(q, planes)
    return QueryCode(planes, float(lo), float(delta), int(total), float(sq))


@nb.njit(cache=True, nogil=True, inline="always")
def _xbar_dot(code, planes, a, b, c):  # type: ignore[no-untyped-def]
    """<x_bar, q_hat> of one code: a popcount(code) + b sum_p 2^p popcount(code & plane p)
    - c, the 4-bit query's exact value (a, b, c from `_coefficients`)."""
    n0 = np.uint64(0)
    n1 = np.uint64(0)
    n2 = np.uint64(0)
    n3 = np.uint64(0)
    nb_ = np.uint64(0)
    for w in range(code.shape[0]):
        x = code[w]
        nb_ += _popcount(x)
        n0 += _popcount(x & planes[0, w])
        n1 += _popcount(x & planes[1, w])
        n2 += _popcount(x & planes[2, w])
        n3 += _popcount(x & planes[3, w])
    s = n0 + (n1 << np.uint64(1)) + (n2 << np.uint64(2)) + (n3 << np.uint64(3))
    return a * np.float32(nb_) + b * np.float32(s) - c


@nb.njit(cache=True, nogil=True, inline="always")
def _coefficients(d, lo, delta, total):  # type: ignore[no-untyped-def]
    """x_bar_j = (2 bit_j - 1) / sqrt(d) and q_hat_j = lo + delta u_j give <x_bar, q_hat> =
    (2 lo popcount + 2 delta sum_j bit_j u_j - d lo - delta sum_j u_j) / sqrt(d)."""
    sd = np.float32(np.sqrt(max(d, 1)))
    return (
        np.float32(2.0) * lo / sd,
        np.float32(2.0) * delta / sd,
        (np.float32(d) * lo + delta * np.float32(total)) / sd,
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _sd(norm, xo, d, sq, delta):  # type: ignore[no-untyped-def]
    """Standard deviation of the estimate of <r, q'>: ||r|| / <x_bar, o> times the code's
    part, sqrt((1 - <x_bar, o>^2) / (d - 1)) ||q'|| (the paper's bound with ||q'|| for the
    part of q' orthogonal to o), and the rounding's, delta / sqrt(12)."""
    code = (np.float32(1.0) - xo * xo) * sq / np.float32(max(d - 1, 1))
    return norm / xo * np.sqrt(max(code, np.float32(0.0)) + delta * delta / np.float32(12.0))


@nb.njit(cache=True, nogil=True)
def _estimate(codes, norms, xo, planes, lo, delta, total, sq, d, eps, out, bound):  # type: ignore[no-untyped-def]
    a, b, c = _coefficients(d, np.float32(lo), np.float32(delta), total)
    for i in range(codes.shape[0]):
        out[i] = norms[i] * _xbar_dot(codes[i], planes, a, b, c) / xo[i]
    if bound.shape[0]:
        for i in range(codes.shape[0]):
            bound[i] = np.float32(eps) * _sd(norms[i], xo[i], d, np.float32(sq), delta)


def estimate(
    codes: U64,
    norms: F32,
    xo: F32,
    query: QueryCode,
    d: int,
    out: F32,
    bound: F32 | None = None,
    eps: float = ERROR_EPS,
) -> None:
    """out[i] = the estimate of <r_i, q'> for n codes of one block (one centroid); with
    `bound`, bound[i] = eps standard deviations of its error. The squared distance follows:
    ||x - q||^2 = ||r||^2 + ||q'||^2 - 2 <r, q'>."""
    n = codes.shape[0]
    if codes.ndim != 2 or codes.shape[1] != code_words(d) or codes.dtype != np.uint64:
        raise ValueError(
            f"codes must be uint64 (n, {code_words(d)}), got {codes.dtype} {codes.shape}"
        )
    for name, arr in (("norms", norms), ("xo", xo), ("out", out)):
        if arr.shape != (n,) or arr.dtype != np.float32:
            raise ValueError(f"{name} must be float32 ({n},), got {arr.dtype} {arr.shape}")
    if bound is not None and (bound.shape != (n,) or bound.dtype != np.float32):
        raise ValueError(f"bound must be float32 ({n},), got {bound.dtype} {bound.shape}")
    if query.planes.shape != (QUERY_BITS, code_words(d)):
        raise ValueError(f"query planes {query.planes.shape} do not fit d={d}")
    none = np.empty(0, np.float32)
    args = (query.planes, query.lo, query.delta, query.total, query.sq_norm, d, eps)
    _estimate(codes, norms, xo, *args, out, none if bound is None else bound)


@nb.njit(cache=True, nogil=True, inline="always")
def _sift_down(hd, hs, i, n):  # type: ignore[no-untyped-def]
    """Restore the max-heap (hd, hs) of n items below i."""
    while True:
        big = i
        left = 2 * i + 1
        if left < n and hd[left] > hd[big]:
            big = left
        if left + 1 < n and hd[left + 1] > hd[big]:
            big = left + 1
        if big == i:
            return
        hd[i], hd[big] = hd[big], hd[i]
        hs[i], hs[big] = hs[big], hs[i]
        i = big


@nb.njit(cache=True, nogil=True, inline="always")
def _sift_up(hd, hs, i):  # type: ignore[no-untyped-def]
    while i > 0:
        up = (i - 1) // 2
        if hd[up] >= hd[i]:
            return
        hd[i], hd[up] = hd[up], hd[i]
        hs[i], hs[up] = hs[up], hs[i]
        i = up


@nb.njit(cache=True, nogil=True, inline="always")
def _hold(hd, hs, held, n, r, s, e):  # type: ignore[no-untyped-def]
    """Put slot s (not held) at estimate e into the max-heap of n (of at most r): appended
    while it is short, else in place of its largest (whose `held` bit is cleared); sets s's
    bit. Returns the new n."""
    held[s >> 3] |= np.uint8(1 << (s & 7))
    if n < r:
        hd[n] = e
        hs[n] = s
        _sift_up(hd, hs, n)
        return n + 1
    out = hs[0]
    held[out >> 3] &= ~np.uint8(1 << (out & 7))
    hd[0] = e
    hs[0] = s
    _sift_down(hd, hs, 0, n)
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def _admit(hd, hs, held, n, r, s, e):  # type: ignore[no-untyped-def]
    """Offer slot s at estimated distance e to the r best distinct slots (max-heap of n;
    bit s of `held` says s is in it); a slot already held keeps its smaller estimate (found
    by a scan of the heap: only replicas that would enter get there). Returns the new n.
    Callers test a full heap's bound first (`n < r or e < hd[0]`): most entries stop there.
    A bitmap, not a slot -> heap position array: keeping positions wrote that array at
    every step of every sift, across the index's slots (MiniLM-384, 64 postings, one
    query, thread CPU, alternated: the whole bit search 1.13x faster at R = 50, 1.21x at
    R = 200, the same results)."""
    if held[s >> 3] & np.uint8(1 << (s & 7)):
        for j in range(n):
            if hs[j] == s:
                if e < hd[j]:
                    hd[j] = e
                    _sift_down(hd, hs, j, n)
                return n
        return n
    return _hold(hd, hs, held, n, r, s, e)


@nb.njit(cache=True, nogil=True)
def scan_rerank(  # type: ignore[no-untyped-def]
    q, rot, post, head_sq, ptr, codes, add, mul, slots, centers, per_posting, requantize, r,
    rows, metric, hd, hs, held, qrot, qr, planes, out_ids, out_d,
):  # fmt: skip
    """One query's bit search: for each posting id in `post` (-1: skipped), the estimated
    squared distances add + ||q - c||^2 - mul <x_bar, q_hat> (`scan_factors`) of its
    entries ptr[p]:ptr[p + 1] (codes, add, mul, slots) to q, c the rotated centroid
    centers[p] (`per_posting`) or centers[0] (one for all); q_hat is q' = (q - c) @ rot
    quantized per centroid when `requantize` (or with one centroid), else q @ rot
    quantized once, and ||q - c||^2 is then head_sq (aligned with `post`: the head
    search's squared distances), so that no centroid is read. Then the `r` distinct slots of smallest estimate; their exact
    distances from the float16 rows `rows[slot]` (bit patterns) under `metric` (squared L2,
    or 1 - dot for cosine, -dot for ip); the top k in out_ids / out_d, ordered (-1 / inf
    padded). Scratch: hd, hs (r,), qrot, qr (d,), planes (QUERY_BITS, words); held, a
    bitmap of the slots (uint8, ceil(slots / 8)), all 0, left so. Returns (entries scanned,
    candidates reranked)."""
    d = q.shape[0]
    no32 = np.empty((0, d), np.float32)  # (`_row_dist`'s float32 rows: unused, rows are float16)
    qrot[:] = 0.0
    for i in range(d):  # q @ rot, row by row: each pass a vectorised axpy
        qi = q[i]
        for j in range(d):
            qrot[j] += qi * rot[i, j]
    for j in range(d):
        qr[j] = qrot[j] if per_posting else qrot[j] - centers[0, j]
    lo, delta, total, sq = _prepare(qr, planes)  # again per posting when requantizing
    a, b, c = _coefficients(d, lo, delta, total)
    n = 0
    scanned = 0
    for t in range(post.shape[0]):
        p = post[t]
        if p < 0:
            continue
        if per_posting and not requantize:
            sq = np.float32(head_sq[t])
        elif per_posting:
            for j in range(d):
                qr[j] = qrot[j] - centers[p, j]
            lo, delta, total, sq = _prepare(qr, planes)
            a, b, c = _coefficients(d, lo, delta, total)
        for i in range(ptr[p], ptr[p + 1]):
            e = add[i] + sq - mul[i] * _xbar_dot(codes[i], planes, a, b, c)
            if n < r or e < hd[0]:  # most entries stop here (see `_admit`)
                n = _admit(hd, hs, held, n, r, slots[i], e)
        scanned += ptr[p + 1] - ptr[p]
    out_ids[:] = -1
    out_d[:] = np.inf
    for t in range(min(n, AHEAD)):
        _prefetch_row(rows, hs[t], d, 32)
    for t in range(n):  # the exact rerank, an insertion into the ordered top k
        s = hs[t]
        held[s >> 3] = 0
        if t + AHEAD < n:  # rows are random reads: AHEAD of them in flight
            _prefetch_row(rows, hs[t + AHEAD], d, 32)
        _fold(out_ids, out_d, s, _row_dist(q, True, rows, no32, s, metric))  # (distance, slot)
    return scanned, n


# --- the engine's form: one global centroid, entries in posting blocks ----------------------
#
# A "bits" posting entry is `code_words(d) + 1` uint64 words, contiguous (`entry_words`): the
# code, then one word holding the two factors (add, mul) as float32, little-endian, rounded to
# bfloat16 values (a block's lane groups keep only their upper halves: `to_lanes`). They are in
# the metric's units (`encode_rows`), so an estimate is add + C_q - mul <x_bar, q_hat> with
# C_q one constant per query (`_query_constant`):
#   l2:     ||x - q||^2 = ||r||^2 + ||q - c||^2 - 2 <r, q - c>
#           add = ||r||^2, mul = 2 ||r|| / <x_bar, o>, C_q = ||q'||^2
#   ip:     -<x, q> = (||x - q||^2 - ||x||^2 - ||q||^2) / 2
#           add = (||r||^2 - ||x||^2) / 2, mul = ||r|| / <x_bar, o>, C_q = (||q'||^2 - ||q||^2) / 2
#   cosine: 1 - <x, q>: ip's, C_q + 1
# with c the index's one centroid, r = x - c, q' = (q - c) @ rot. A code never depends on the
# posting it sits in, so replicas of a slot estimate alike.


def entry_words(d: int) -> int:
    """uint64 words of one "bits" posting entry: the code and one word of two factors."""
    return code_words(d) + 1


GROUP = WLANES  # entries of a lane group in a block: word w of all of them is one register
assert GROUP == BITS_GROUP  # (the block layout's own constant, `posting.vector_bytes`)
# Lane groups the code stream is hinted ahead of the scan. A block spans 4 KiB pages the
# hardware prefetcher does not cross (MiniLM-384 bits, 20 postings, a 300-query batch, 1
# thread, 11 runs alternated: 3 and 5 groups ahead 0.92x and 0.90x the scan time without;
# 16 ahead 1.0x in a 5-run check).
AHEAD_GROUPS = 5


@nb.njit(cache=True, inline="always")
def group_words(words):  # type: ignore[no-untyped-def]
    """uint64 words of one lane group of entries with `words` code words (`to_lanes`; the
    kernels' and `to_lanes` / `from_lanes`' one measure of a group)."""
    return body_bytes(BITS_WIDTH, words + 1, GROUP) // 8


def to_lanes(entries: U64) -> U64:
    """The block order of "bits" entries (n, words + 1), flat: each full group of GROUP
    entries word-major (`words` rows of GROUP code words, lane l = entry l), then the GROUP
    `add` and the GROUP `mul` factors as bfloat16 (the upper halves of their float32, which
    `encode_rows` rounded: BITS_FACTOR_WORDS words), the last n % GROUP entries as they are
    (entry-major, float32 factors); `posting.vector_bytes` sizes a group and the whole.
    `scan_blocks` reads a group's word w of 8 entries in one load."""
    e = np.ascontiguousarray(entries, np.uint64)
    n, ew = e.shape
    full = n // GROUP * GROUP
    gw = int(group_words(ew - 1))
    out = np.empty(vector_bytes(BITS_WIDTH, ew, n) // 8, np.uint64)
    grp = e[:full].reshape(-1, GROUP, ew)
    head = out[: full // GROUP * gw].reshape(-1, gw)
    head[:, : (ew - 1) * GROUP] = (
        grp[:, :, : ew - 1].transpose(0, 2, 1).reshape(len(grp), (ew - 1) * GROUP)
    )
    fac = np.ascontiguousarray(grp[:, :, ew - 1]).view(np.uint32).reshape(-1, GROUP, 2)
    half = (fac.transpose(0, 2, 1) >> np.uint32(16)).astype(np.uint16)  # (groups, 2, GROUP)
    head[:, (ew - 1) * GROUP :] = (
        np.ascontiguousarray(half).view(np.uint64).reshape(len(grp), BITS_FACTOR_WORDS)
    )
    out[full // GROUP * gw :] = e[full:].ravel()
    return out


def from_lanes(words: U64, n: int, ew: int) -> U64:
    """The entries (n, ew) of a block's words in `to_lanes` order (its inverse; a group's
    bfloat16 factors come back as the float32 they were rounded to)."""
    full = n // GROUP * GROUP
    gw = int(group_words(ew - 1))
    w = np.ascontiguousarray(words[: vector_bytes(BITS_WIDTH, ew, n) // 8], np.uint64)
    out = np.empty((n, ew), np.uint64)
    head = w[: full // GROUP * gw].reshape(-1, gw)
    grp = out[:full].reshape(-1, GROUP, ew)
    codes = head[:, : (ew - 1) * GROUP].reshape(len(head), ew - 1, GROUP)
    grp[:, :, : ew - 1] = codes.transpose(0, 2, 1)
    half = np.ascontiguousarray(head[:, (ew - 1) * GROUP :]).view(np.uint16)
    fac = half.reshape(len(head), 2, GROUP).transpose(0, 2, 1).astype(np.uint32) << np.uint32(16)
    grp[:, :, ew - 1] = np.ascontiguousarray(fac).view(np.uint64).reshape(len(head), GROUP)
    out[full:] = w[full // GROUP * gw :].reshape(-1, ew)
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _rotate(x, centroid, rot, out):  # type: ignore[no-untyped-def]
    """out = (x - centroid) @ rot, row by row (each pass a vectorised axpy, no
    reassociation: the same bits for a row whatever batch or thread it is in); with
    int8 `rot`, the structured rotation of x - centroid (`hadamard`)."""
    d = x.shape[0]
    if is_structured(rot):
        for j in range(d):
            out[j] = x[j] - centroid[j]
        _structured(out, rot)
        return
    out[:] = 0.0
    for i in range(d):
        xi = x[i] - centroid[i]
        for j in range(d):
            out[j] += xi * rot[i, j]


ROTATE_TILE = 8  # queries a scan rotates together (`_rotate_tile`)


@nb.njit(cache=True, nogil=True, inline="always")
def _rotate_tile(queries, lo, hi, centroid, rot, out):  # type: ignore[no-untyped-def]
    """out[t] = (queries[lo + t] - centroid) @ rot for t < hi - lo, each row of rot read
    once for all of them (at 384-d the matrix is 590 KB, read whole per query before), every
    output summed in `_rotate`'s order, so a query's estimates do not depend on the queries
    rotated with it (with a float32 rot, bit-equal to `_rotate`). rot: float32, or its
    float16 bits (uint16, `BitCoder.qrot`: what searches pass; half the bytes to bring in
    per query: MiniLM-384, one query at a time, 18 postings, alternated in one process,
    3 x 6 x 1,000 queries: p50 0.970-0.976x, the same ids on 300 queries)."""
    d = queries.shape[1]
    if is_structured(rot):  # int8 signs: each query on its own, O(d log d)
        for t in range(hi - lo):
            o = out[t]
            for j in range(d):
                o[j] = queries[lo + t, j] - centroid[j]
            _structured(o, rot)
        return
    out[: hi - lo] = 0.0
    for i in range(d):
        for t in range(hi - lo):
            xi = queries[lo + t, i] - centroid[i]
            o = out[t]
            for j in range(d):
                o[j] += xi * _widen(rot[i, j])


@nb.njit(cache=True, nogil=True, inline="always")
def _encode_row(x, centroid, rot, metric, rr, fac, out):  # type: ignore[no-untyped-def]
    d = x.shape[0]
    words = out.shape[0] - 1
    _rotate(x, centroid, rot, rr)
    sq = 0.0
    l1 = 0.0
    xx = 0.0
    for j in range(d):
        v = np.float64(rr[j])
        sq += v * v
        l1 += abs(v)
        xx += np.float64(x[j]) * np.float64(x[j])
    for w in range(words):
        code = np.uint64(0)
        for j in range(w * 64, min(d, w * 64 + 64)):
            if rr[j] > 0:
                code |= np.uint64(1) << np.uint64(j - w * 64)
        out[w] = code
    norm = np.sqrt(sq)
    xo = l1 / (np.sqrt(max(d, 1)) * norm) if norm > 0 else 1.0
    if metric == METRIC_L2:
        add = sq
        mul = 2.0 * norm / xo
    else:
        add = (sq - xx) / 2.0
        mul = norm / xo
    fac[0] = np.float32(add)
    fac[1] = np.float32(mul)
    # rounded to bfloat16 (nearest, ties to even): a lane group stores them in 16 bits
    # (`to_lanes`), so every copy of an entry, in a group or not, holds the same factors
    bits = fac.view(np.uint32)
    for t in range(2):
        b = bits[t]
        bits[t] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(
            0xFFFF0000
        )
    out[words] = fac.view(np.uint64)[0]


@nb.njit(cache=True, nogil=True)
def _encode_serial(x, centroid, rot, metric, out):  # type: ignore[no-untyped-def]
    rr = np.empty(x.shape[1], np.float32)
    fac = np.empty(2, np.float32)
    for i in range(x.shape[0]):
        _encode_row(x[i], centroid, rot, metric, rr, fac, out[i])


@nb.njit(cache=True, parallel=True)
def _encode_parallel(x, centroid, rot, metric, out):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    chunks = (n + 255) // 256
    for c in nb.prange(chunks):
        rr = np.empty(x.shape[1], np.float32)
        fac = np.empty(2, np.float32)
        for i in range(c * 256, min(n, c * 256 + 256)):
            _encode_row(x[i], centroid, rot, metric, rr, fac, out[i])


ENCODE_PARALLEL_ROWS = 4096  # below this, `encode_rows` runs on the calling thread


def encode_rows(x: F32, centroid: F32, rot: F32 | npt.NDArray[np.int8], metric: int) -> U64:
    """The "bits" posting entries (n, entry_words(d)) of rows x (n, d) float32: the sign
    code of (x - centroid) @ rot (int8 `rot`: its structured rotation) and the factors
    (add, mul) of `metric` (see above). A row's entry is the same bits whatever rows it
    comes with."""
    x = np.ascontiguousarray(x, np.float32)
    d = x.shape[1] if x.ndim == 2 else -1
    ok = rot.shape == (d, d) or (rot.dtype == np.int8 and rot.ndim == 2 and rot.shape[1] == d)
    if x.ndim != 2 or not ok or centroid.shape != (d,):
        raise ValueError(f"rows {x.shape}, rotation {rot.shape}, centroid {centroid.shape}")
    out = np.empty((x.shape[0], entry_words(x.shape[1])), np.uint64)
    if len(x) >= ENCODE_PARALLEL_ROWS:
        _encode_parallel(x, centroid, rot, metric, out)
    else:
        _encode_serial(x, centroid, rot, metric, out)
    return out


def entry_factors(entries: U64) -> tuple[F32, F32]:
    """(add, mul) of "bits" entries (n, words + 1)."""
    f = np.ascontiguousarray(entries[:, -1]).view(np.float32).reshape(-1, 2)
    return f[:, 0].copy(), f[:, 1].copy()


@nb.njit(cache=True, nogil=True, inline="always")
def _query_constant(q, sq, metric):  # type: ignore[no-untyped-def]
    """C_q of an estimate (see above): ||q'||^2 for l2; (||q'||^2 - ||q||^2) / 2 for ip,
    and 1 more for cosine."""
    if metric == METRIC_L2:
        return np.float32(sq)
    qq = np.float32(0.0)
    for j in range(q.shape[0]):
        qq += q[j] * q[j]
    out = (np.float32(sq) - qq) / np.float32(2.0)
    return out if metric == METRIC_IP else out + np.float32(1.0)


@nb.njit(cache=True, nogil=True, inline="always")
def _pop_sorted(hd, hs, n, ids, ds):  # type: ignore[no-untyped-def]
    """Empty the max-heap (hd, hs) of n items into ids / ds ascending, -1 / inf after."""
    for t in range(n, ids.shape[0]):
        ids[t] = -1
        ds[t] = np.inf
    while n > 0:
        n -= 1
        ids[n] = hs[0]
        ds[n] = hd[0]
        hd[0] = hd[n]
        hs[0] = hs[n]
        _sift_down(hd, hs, 0, n)


@nb.njit(cache=True, nogil=True, inline="always")
def _xbar_dot8(u64, e0, pm, a, b, c):  # type: ignore[no-untyped-def]
    """`_xbar_dot` of the code at u64[e0:] (3 to WLANES words) in one register
    (`simd64`): the WLANES words from e0 masked to the code's (pm[4 * WLANES:], ones over
    its words), the planes at pm[:4 * WLANES] (zero past the code's words); each lane's
    popcount plus its plane counts shifted by 32 + plane, so that one lane sum holds the
    code's popcount (low 32 bits) and the weighted plane sum (high). A runtime loop of 6
    words stays scalar (LLVM vectorises it for 8 or more): MiniLM-384, 20 postings of the
    bits default, 1,000 queries, 1 thread, alternated: the scan 221 -> 171 us a query
    (18.7 -> 14.6 ns an entry), the same estimates, when every entry came through here.
    Since the lane groups (`_group_counts`) only a block's last count % 8 entries do: under
    1% of a bulk-built posting, all of a small block appended by online upserts."""
    x = wand(wload(u64, e0), wload(pm, 4 * WLANES))
    v = wcount(x)
    v = wadd(v, wshl(wcount(wand(x, wload(pm, 0))), 32))
    v = wadd(v, wshl(wcount(wand(x, wload(pm, WLANES))), 33))
    v = wadd(v, wshl(wcount(wand(x, wload(pm, 2 * WLANES))), 34))
    v = wadd(v, wshl(wcount(wand(x, wload(pm, 3 * WLANES))), 35))
    t = wsum(v)
    return a * np.float32(t & np.uint64(0xFFFFFFFF)) + b * np.float32(t >> np.uint64(32)) - c


@nb.njit(cache=True, nogil=True, inline="always")
def _group_counts(u64, gb, words, pb, out):  # type: ignore[no-untyped-def]
    """For the GROUP entries of the lane group at u64[gb:] (`to_lanes`): lane l of out gets
    entry l's code popcount (low 32 bits) plus its weighted plane sum sum_p 2^p
    popcount(code & plane p) (high), from each code word of the group in one register and
    the planes broadcast in pb (plane p word w at pb[(p * words + w) * GROUP:])."""
    c0 = wzero()
    c1 = wzero()
    c2 = wzero()
    c3 = wzero()
    cn = wzero()
    for w in range(words):
        x = wload(u64, gb + GROUP * w)
        cn = wadd(cn, wcount(x))
        c0 = wadd(c0, wcount(wand(x, wload(pb, w * GROUP))))
        c1 = wadd(c1, wcount(wand(x, wload(pb, (words + w) * GROUP))))
        c2 = wadd(c2, wcount(wand(x, wload(pb, (2 * words + w) * GROUP))))
        c3 = wadd(c3, wcount(wand(x, wload(pb, (3 * words + w) * GROUP))))
    v = wadd(cn, wshl(c0, 32))
    v = wadd(v, wshl(c1, 33))
    v = wadd(v, wshl(c2, 34))
    v = wadd(v, wshl(c3, 35))
    wstore(out, 0, v)


@nb.njit(cache=True, nogil=True, inline="always")
def _block_estimates(  # type: ignore[no-untyped-def]
    u8, u64, f32, base, m, words, pb, pm, planes, fast, a, b, c, cq, g, lanes, cvt, cvtf, est
):  # fmt: skip
    """est[:m] = the estimates of a block's m entries, whose words start at u64[base]
    (`to_lanes` order; u8 the same buffer), less g x the entry's mul (`scan_blocks`' lower
    bounds; g = 0: the estimates themselves): its lane groups 8 at a time
    (`_group_counts`; their bfloat16 factors widened through cvt, a uint32 scratch of 2 x
    GROUP, and cvtf, its float32 view), the lines of the group AHEAD_GROUPS on asked for
    first, the rest one by one (in one register when `fast`, `_xbar_dot8`, else the word
    loop)."""
    ew = words + 1
    gw = group_words(words)
    full = m // GROUP * GROUP
    for j0 in range(0, full, GROUP):
        gb = base + j0 // GROUP * gw
        ahead = 8 * (gb + AHEAD_GROUPS * gw)  # (past the block: a hint, never a fault)
        for t in range(0, gw * 8, 64):
            _prefetch(u8, ahead + t)  # type: ignore[call-arg]
        _group_counts(u64, gb, words, pb, lanes)
        fb = gb + GROUP * words  # the factor words: GROUP adds, then GROUP muls, 16 bits each
        for t in range(BITS_FACTOR_WORDS):
            v = u64[fb + t]
            for h in range(4):
                cvt[4 * t + h] = np.uint32(
                    (v >> np.uint64(16 * h)) & np.uint64(0xFFFF)
                ) << np.uint32(16)
        for t in range(GROUP):
            x = lanes[t]
            dot = a * np.float32(x & np.uint64(0xFFFFFFFF)) + b * np.float32(x >> np.uint64(32)) - c
            est[j0 + t] = cvtf[t] + cq - cvtf[GROUP + t] * (dot + g)
    tb = base + full // GROUP * gw  # the tail: entry-major, float32 factors
    for j in range(full, m):
        e0 = tb + (j - full) * ew
        if fast:
            dot = _xbar_dot8(u64, e0, pm, a, b, c)
        else:
            dot = _xbar_dot(u64[e0 : e0 + words], planes, a, b, c)
        est[j] = f32[2 * (e0 + words)] + cq - f32[2 * (e0 + words) + 1] * (dot + g)


@nb.njit(cache=True, nogil=True, inline="always")
def bound_gap(eps, hsq, gsq, qvar, d):  # type: ignore[no-untyped-def]
    """eps standard deviations of the error of <x_bar, q_hat> (`_sd` without the entry's
    ||r|| / <x_bar, o>, which its mul holds): sqrt(XO_VAR ||q - c||^2 / (d - 1) + delta^2 /
    12), ||q - c||^2 = hsq (gsq, the distance to the global centroid, when hsq is NaN),
    with 1 - <x_bar, o>^2 taken at its mean for a normal residual (XO_VAR: the entry does
    not store <x_bar, o> apart from ||r||)."""
    h = hsq if hsq >= 0 else gsq
    var = np.float32(XO_VAR) * h / np.float32(max(d - 1, 1)) + qvar
    return np.float32(eps) * np.float32(np.sqrt(max(var, np.float32(0.0))))


@nb.njit(cache=True, nogil=True, inline="always")
def _hint_block(u8, off, cnt, blk, ew):  # type: ignore[no-untyped-def]
    """Ask for the lines of block blk's first AHEAD_GROUPS lane groups: `_block_estimates`
    hints each group that far ahead of the one it scores, so without this a block's first
    groups are loaded on demand, one miss after another (`scan_blocks` calls it for the
    next block as it starts one). MiniLM-384, 1 thread, alternated in one process: one
    query at a time (18 postings, 2 x 6 x 1,000 queries) p50 0.955-0.972x; batches of
    1,000 CPU QPS 1.00-1.07x at 18 postings, 1.12x at 36 (10 or 16 groups ahead inside a
    block instead of 5: no better)."""
    m = cnt[blk]
    _, voff = _layout(m)
    start = off[blk] + voff
    end = min(start + min(body_bytes(BITS_WIDTH, ew, m), AHEAD_GROUPS * group_words(ew - 1) * 8),
              u8.shape[0])  # fmt: skip
    for t in range(start, end, 64):
        _prefetch(u8, t)  # type: ignore[call-arg]


@nb.njit(cache=True, nogil=True)
def scan_blocks(  # type: ignore[no-untyped-def]
    u8, u32, u64, f32, words, off, cnt, ptr, q_lo, q_hi, queries, centroid, rot, metric,
    slot_version, vis, use_vis, head_sq, eps, out_ids, out_d, held,
):  # fmt: skip
    """The bit search of queries q_lo:q_hi: query i reads the "bits" blocks ptr[i]:ptr[i+1]
    (block at byte off[b] of the buffer viewed as u8 / u32 / u64 / f32, cnt[b] entries of
    `words` + 1 words each in `to_lanes` order, `entry_words`) and keeps in its row of
    out_ids / out_d the R = out_ids.shape[1] distinct slots of smallest estimated distance
    (ascending, -1 / inf padded; a row coming in with slots keeps them in the running: a
    widened search adds postings to what it found). Only entries passing `entry_visible`
    count. With eps > 0 the key of an entry is not its estimate but the estimate less eps
    standard deviations of its error (`bound_gap`; head_sq[b]: the squared distance of the
    query to block b's posting centroid, NaN: unknown, the query's distance to the global
    centroid stands in; read only when eps > 0, so it may be empty then), a lower bound on its distance for nearly every entry: the R kept
    are the R smallest lower bounds, so a rerank in their order may stop at the first whose
    bound exceeds the k-th exact distance (`rerank.rerank_topk`). eps = 0: the estimates.
    The query is rotated (rot float32 or its float16 bits, `_rotate_tile`, ROTATE_TILE
    queries at a time) and quantized (`_prepare`) once, whatever the number of postings. A block's estimates come first,
    all of them, branch-free (`_block_estimates`); then the slots of the few below the
    heap's bound when the block began are loaded and those slots' current versions asked
    for (independent loads: their cache misses overlap), and they are offered in entry order,
    so the answer is the entry-by-entry one. Every live copy of a
    slot holds the same entry, so replicas are dropped on sight. `held`: a zeroed bitmap of
    at least (slots + 7) // 8 + 1 bytes (the caller's scratch, `BitCoder.held`), zeroed
    again on return. Returns the entries scanned. MiniLM-384, 20 postings of the bits
    default, 1 thread: the scan of a query's blocks (timed the second time) 12.8 -> 8.5 ns
    an entry against entry-major codes with one horizontal sum and a heap test an entry,
    the same slots and estimates; whole queries, the two codes in two processes alternated
    by 50 queries, 4 x 1,000: one query p50 424 -> 364 us, a 250-query batch 3,364 -> 4,174
    QPS, recall@10 0.9539 both; with the rotation tiles and the hints, 362 -> 290 us and
    3,744 -> 5,038 QPS (bench/RESULTS.md, "the bit scan in lane groups")."""
    d = queries.shape[1]
    r = out_ids.shape[1]
    hd = np.empty(r, np.float32)
    hs = np.empty(r, np.int64)
    tile = np.empty((ROTATE_TILE, d), np.float32)
    planes = np.empty((QUERY_BITS, max(words, 1)), np.uint64)
    pb = np.empty(QUERY_BITS * words * GROUP, np.uint64)
    lanes = np.empty(GROUP, np.uint64)
    cvt = np.empty(2 * GROUP, np.uint32)
    cvtf = cvt.view(np.float32)
    most = 0
    for blk in range(ptr[q_lo], ptr[q_hi]):
        most = max(most, cnt[blk])
    est = np.empty(most, np.float32)
    below = np.empty(most, np.int64)
    cand = np.empty(most, np.int64)
    ew = words + 1
    scanned = 0
    nbits = 8 * held.shape[0]  # a slot read from a block is tested against this first
    reg = 3 <= words <= WLANES  # a code fits one register (`_xbar_dot8`)
    pm = np.zeros((QUERY_BITS + 1) * WLANES, np.uint64)
    for w in range(min(words, WLANES)):
        pm[QUERY_BITS * WLANES + w] = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(q_lo, q_hi):
        q = queries[i]
        ids = out_ids[i]
        ds = out_d[i]
        n = 0
        for t in range(r):  # what earlier rounds found (distinct: n < r throughout)
            s = ids[t]
            if s < 0:
                break
            n = _admit(hd, hs, held, n, r, s, ds[t])
        at = (i - q_lo) % ROTATE_TILE
        if at == 0:
            _rotate_tile(queries, i, min(i + ROTATE_TILE, q_hi), centroid, rot, tile)
        lo, delta, total, sq = _prepare(tile[at], planes)
        a, b, c = _coefficients(d, lo, delta, total)
        cq = _query_constant(q, sq, metric)
        qvar = delta * delta / np.float32(12.0)
        for p in range(QUERY_BITS):
            for w in range(words):
                if reg:
                    pm[p * WLANES + w] = planes[p, w]
                for t in range(GROUP):
                    pb[(p * words + w) * GROUP + t] = planes[p, w]
        if ptr[i] < ptr[i + 1]:
            _hint_block(u8, off, cnt, ptr[i], ew)
        for blk in range(ptr[i], ptr[i + 1]):
            if blk + 1 < ptr[i + 1]:
                _hint_block(u8, off, cnt, blk + 1, ew)
            o = off[blk]
            m = cnt[blk]
            cap, voff = _layout(m)
            base = (o + voff) // 8
            sbase = (o + 64) // SLOT_BYTES
            vbase = o + 64 + SLOT_BYTES * cap
            # a register load reads WLANES words from an entry: past the block's last
            # entry by up to WLANES - ew words (masked out), so only inside the buffer
            fast = reg and base + body_bytes(BITS_WIDTH, ew, m) // 8 + WLANES - ew <= u64.shape[0]
            g = bound_gap(eps, head_sq[blk], sq, qvar, d) if eps > 0 else np.float32(0.0)
            _block_estimates(
                u8, u64, f32, base, m, words, pb, pm, planes, fast, a, b, c, cq, g, lanes, cvt,
                cvtf, est,
            )  # fmt: skip
            bound = hd[0] if n == r else np.float32(np.inf)
            k = 0
            for j in range(m):  # branch-free: the entries that may enter
                below[k] = j
                k += est[j] < bound
            for t in range(k):
                s = u32[sbase + below[t]]
                cand[t] = s
                _prefetch(slot_version, s)  # type: ignore[call-arg]
            for t in range(k):
                j = below[t]
                e = est[j]
                if n < r or e < hd[0]:  # the bound has tightened since: most stop here
                    s = cand[t]
                    # every copy of a slot estimates alike (one centroid): a held one is
                    # skipped without `_admit`'s scan of the heap for its estimate (55
                    # postings of MiniLM-384, R = 100: ~75 us a query less, helper W)
                    if s >= nbits or (held[s >> 3] >> (s & 7)) & 1:
                        continue  # (past the bitmap: no slot of the index, never visible)
                    if entry_visible(s, u8[vbase + j], slot_version, vis, use_vis):
                        n = _hold(hd, hs, held, n, r, s, e)
            scanned += m
        for t in range(n):
            s = hs[t]
            held[s >> 3] = 0
        _pop_sorted(hd, hs, n, ids, ds)
    return scanned
