"""One-bit codes (RaBitQ) against numpy references: codes, factors, the estimator, its bound
and the one-query bit search with its exact rerank."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.kernels.bitscan import (
    QUERY_BITS,
    QUERY_LEVELS,
    QueryCode,
    encode,
    estimate,
    prepare_query,
    rotation,
    scan_factors,
    scan_rerank,
    unpack_signs,
)
from vecdb.kernels.hamming import code_words
from vecdb.kernels.posting import METRIC_COSINE, METRIC_IP, METRIC_L2

DIMS = [1, 7, 50, 64, 65, 130, 384]


def _quantized(qc: QueryCode, d: int) -> np.ndarray:
    """The 4-bit query the planes hold, float64 (d,): lo + delta x value."""
    bits = unpack_signs(qc.planes, d).astype(np.int64)  # (QUERY_BITS, d)
    u = (bits << np.arange(QUERY_BITS)[:, None]).sum(0)
    return qc.lo + qc.delta * u.astype(np.float64)


def _reference(codes: np.ndarray, norms: np.ndarray, xo: np.ndarray, qc: QueryCode, d: int):  # type: ignore[no-untyped-def]
    """||r|| <x_bar, q_hat> / <x_bar, o> in float64, x_bar = (2 bits - 1) / sqrt(d)."""
    xbar = (2.0 * unpack_signs(codes, d) - 1.0) / np.sqrt(d)
    return norms * (xbar @ _quantized(qc, d)) / xo


def _clustered(rng: np.random.Generator, n: int, d: int, centers: int = 8):  # type: ignore[no-untyped-def]
    """(points, their centers, center of each point): tight clusters around random centers."""
    c = rng.standard_normal((centers, d)).astype(np.float32)
    of = rng.integers(0, centers, n)
    x = c[of] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x, c, of


def test_rotation_is_orthogonal() -> None:
    """rot @ rot.T is the identity, so rotated rows keep their inner products."""
    for d in (1, 7, 384):
        rot = rotation(d, seed=3).astype(np.float64)
        np.testing.assert_allclose(rot @ rot.T, np.eye(d), atol=1e-5)
    assert not np.allclose(rotation(16, 1), rotation(16, 2))


@pytest.mark.parametrize("d", DIMS)
def test_codes_round_trip_and_factors(d: int) -> None:
    """The code's bits are the signs of r, norms are ||r|| and xo = sum |r_j| / (sqrt(d)
    ||r||), which lies in (0, 1]; a zero residual gets xo = 1."""
    r = np.random.default_rng(d).standard_normal((30, d)).astype(np.float32)
    r[0] = 0.0
    codes, norms, xo = encode(r)
    assert codes.shape == (30, code_words(d)) and codes.dtype == np.uint64
    np.testing.assert_array_equal(unpack_signs(codes, d), r > 0)
    np.testing.assert_allclose(norms, np.linalg.norm(r, axis=1), rtol=1e-6)
    want = np.abs(r[1:]).sum(1) / (np.sqrt(d) * np.linalg.norm(r[1:], axis=1))
    np.testing.assert_allclose(xo[1:], want, rtol=1e-5)
    assert xo[0] == 1.0 and norms[0] == 0.0
    assert (xo > 0).all() and (xo <= 1 + 1e-6).all()


def test_encode_accepts_zero_rows() -> None:
    """No rows give empty codes and factors."""
    codes, norms, xo = encode(np.zeros((0, 70), np.float32))
    assert codes.shape == (0, 2) and norms.shape == (0,) and xo.shape == (0,)


@pytest.mark.parametrize("d", DIMS)
def test_prepare_query_rounds_to_nearest_level(d: int) -> None:
    """Each component is within delta / 2 of lo + delta x its 4-bit value, the values sum to
    `total`, and sq_norm is ||q'||^2."""
    q = np.random.default_rng(d + 1).standard_normal(d).astype(np.float32)
    qc = prepare_query(q)
    assert qc.planes.shape == (QUERY_BITS, code_words(d))
    u = (unpack_signs(qc.planes, d).astype(np.int64) << np.arange(QUERY_BITS)[:, None]).sum(0)
    assert u.min() >= 0 and u.max() <= QUERY_LEVELS and u.sum() == qc.total
    assert np.abs(_quantized(qc, d) - q).max() <= qc.delta / 2 * (1 + 1e-4) + 1e-6
    assert qc.sq_norm == pytest.approx(float(q.astype(np.float64) @ q), rel=1e-5)
    if d > 1:
        assert u.min() == 0 and u.max() == QUERY_LEVELS


def test_prepare_query_of_a_constant_vector() -> None:
    """A constant q' has delta 0: every value is 0 and q_hat = lo exactly."""
    qc = prepare_query(np.full(70, 0.25, np.float32))
    assert qc.delta == 0 and qc.total == 0 and (qc.planes == 0).all()
    np.testing.assert_allclose(_quantized(qc, 70), 0.25)


def _residuals(
    rng: np.random.Generator, data: str, n: int, d: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n residuals, a query residual): standard normal, or of clustered rows to their
    centres with the query near the first row (`noise` x a normal step)."""
    if data == "random":
        return (
            rng.standard_normal((n, d)).astype(np.float32),
            rng.standard_normal(d).astype(np.float32),
        )
    x, c, of = _clustered(rng, n, d)
    q = x[0] + noise * rng.standard_normal(d).astype(np.float32) - c[of[0]]
    return x - c[of], q


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("data", ["random", "clustered"])
def test_estimate_matches_the_formula(d: int, data: str) -> None:
    """The kernel's estimates are ||r|| <x_bar, q_hat> / <x_bar, o> (float64 reference)."""
    r, q = _residuals(np.random.default_rng(7 * d), data, 200, d, 0.1)
    codes, norms, xo = encode(r)
    qc = prepare_query(q)
    out = np.empty(200, np.float32)
    bound = np.empty(200, np.float32)
    estimate(codes, norms, xo, qc, d, out, bound)
    want = _reference(codes, norms, xo, qc, d)
    scale = np.abs(norms).max() * np.sqrt(qc.sq_norm) + 1e-6
    np.testing.assert_allclose(out, want, atol=1e-5 * scale, rtol=1e-5)
    assert (bound >= 0).all()
    empty = np.empty(0, np.float32)
    estimate(codes[:0], norms[:0], xo[:0], qc, d, empty, empty)  # zero rows


@pytest.mark.parametrize("d", [50, 128, 384])
@pytest.mark.parametrize("data", ["random", "clustered"])
def test_estimate_error_within_bound(d: int, data: str) -> None:
    """|estimate - <r, q'>| is within the stated bound (3 standard deviations) for >= 99%
    of entries, and the bound is not slack: within 1 deviation for at most 90% (a normal
    error: 68%)."""
    r, q = _residuals(np.random.default_rng(d), data, 4000, d, 0.2)
    rot = rotation(d, seed=d)
    rr, qr = r @ rot, q @ rot
    codes, norms, xo = encode(rr)
    qc = prepare_query(qr)
    out = np.empty(len(r), np.float32)
    bound = np.empty(len(r), np.float32)
    estimate(codes, norms, xo, qc, d, out, bound)
    err = np.abs(out - r.astype(np.float64) @ q.astype(np.float64))
    assert (err <= bound).mean() >= 0.99
    assert (err <= bound / 3).mean() <= 0.90


def test_estimate_rejects_mismatched_arguments() -> None:
    """Wrong shapes or dtypes are errors naming the argument."""
    codes, norms, xo = encode(np.ones((3, 70), np.float32))
    qc = prepare_query(np.ones(70, np.float32))
    with pytest.raises(ValueError, match="out"):
        estimate(codes, norms, xo, qc, 70, np.empty(2, np.float32))
    with pytest.raises(ValueError, match="codes"):
        estimate(codes, norms, xo, qc, 200, np.empty(3, np.float32))
    with pytest.raises(ValueError, match="xo"):
        estimate(codes, norms, xo.astype(np.float64), qc, 70, np.empty(3, np.float32))  # type: ignore[arg-type]


def test_scan_factors_fold_the_centroid_into_add() -> None:
    """With the entries' rotated centroids, add + ||q - c||^2 - mul <x_bar, q @ rot> equals
    the residual form ||r||^2 + ||q'||^2 - mul <x_bar, q'> (no quantization: the algebra)."""
    d = 65
    rng = np.random.default_rng(4)
    x, c, of = _clustered(rng, 300, d)
    rot = rotation(d, 4)
    r = (x - c[of]) @ rot
    q = rng.standard_normal(d).astype(np.float32)
    codes, norms, xo = encode(r)
    add0, mul0 = scan_factors(r, norms, xo)
    add, mul = scan_factors(r, norms, xo, (c @ rot)[of])
    np.testing.assert_allclose(add0, norms.astype(np.float64) ** 2, rtol=1e-6)
    np.testing.assert_allclose(mul, 2 * norms.astype(np.float64) / xo, rtol=1e-6)
    np.testing.assert_array_equal(mul, mul0)
    xbar = (2.0 * unpack_signs(codes, d) - 1.0) / np.sqrt(d)
    qr = (q - c[of]) @ rot  # each entry's residual query
    once = add + ((q - c[of]) ** 2).sum(1) - mul * (xbar @ (q @ rot).astype(np.float64))
    resid = add0 + (qr**2).sum(1) - mul * (xbar * qr).sum(1)
    np.testing.assert_allclose(once, resid, rtol=1e-4, atol=1e-4)


def _postings(rng: np.random.Generator, d: int, n_slots: int, n_post: int, reps: int):  # type: ignore[no-untyped-def]
    """Clustered points, each in `reps` postings (replicas), as CSR by posting: (points,
    centers, ptr, slots of the entries, posting of the entries)."""
    x, c, _ = _clustered(rng, n_slots, d, n_post)
    dist = ((x[:, None] - c[None]) ** 2).sum(-1)
    near = np.argsort(dist, 1)[:, :reps]
    post = near.ravel()
    slot = np.repeat(np.arange(n_slots), reps)
    order = np.argsort(post, kind="stable")
    post, slot = post[order], slot[order]
    ptr = np.searchsorted(post, np.arange(n_post + 1)).astype(np.int64)
    return x, c, ptr, slot.astype(np.int64), post


MODES = ["posting", "requantize", "global"]  # scan_rerank's centroid and query forms


def _coded(x, c, slots, post_of, mode, rot):  # type: ignore[no-untyped-def]
    """(codes, add, mul, rotated centers) of the entries for a mode."""
    mid = x.mean(0, keepdims=True) if mode == "global" else c[post_of]  # each entry's centroid
    res = np.ascontiguousarray((x[slots] - mid) @ rot, np.float32)
    centers = np.ascontiguousarray((mid if mode == "global" else c) @ rot, np.float32)
    codes, norms, xo = encode(res)
    add, mul = scan_factors(res, norms, xo, (mid @ rot) if mode == "posting" else None)
    return codes, add, mul, centers


def _bit_search(q, x, c, ptr, slots, post_of, probe, mode, r, metric, rot):  # type: ignore[no-untyped-def]
    """Run scan_rerank once; (ids, distances, scanned, candidates, held after, coded)."""
    d = len(q)
    codes, add, mul, centers = coded = _coded(x, c, slots, post_of, mode, rot)
    rows = x.astype(np.float16).view(np.uint16)
    held = np.zeros(-(-len(x) // 8), np.uint8)
    k = 10
    ids, dd = np.empty(k, np.int64), np.empty(k, np.float32)
    w = code_words(d)
    scratch = (
        np.empty(r, np.float32), np.empty(r, np.int64), held, np.empty(d, np.float32),
        np.empty(d, np.float32), np.empty((QUERY_BITS, w), np.uint64),
    )  # fmt: skip
    head_sq = ((q @ rot - centers[np.maximum(probe, 0) if mode != "global" else 0]) ** 2).sum(-1)
    head_sq = np.ascontiguousarray(np.broadcast_to(head_sq, probe.shape), np.float32)
    n, cand = scan_rerank(
        q, rot, probe, head_sq, ptr, codes, add, mul, slots, centers, mode != "global",
        mode == "requantize", r, rows, metric, *scratch, ids, dd,
    )  # fmt: skip
    return ids, dd, n, cand, held, coded


def _exact(q: np.ndarray, rows: np.ndarray, metric: int) -> np.ndarray:
    if metric == METRIC_L2:
        return ((rows - q) ** 2).sum(1)
    dot = rows @ q
    return -dot if metric == METRIC_IP else 1 - dot


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", [METRIC_L2, METRIC_COSINE, METRIC_IP])
@pytest.mark.parametrize("d", [7, 65])
def test_scan_rerank_with_every_slot_is_exact(mode: str, metric: int, d: int) -> None:
    """With r at least the distinct slots of the probed postings, the rerank sees them all:
    the top k is the exact top k of their float16 rows, replicas once."""
    rng = np.random.default_rng(d)
    x, c, ptr, slots, post_of = _postings(rng, d, 300, 12, 3)
    rot = rotation(d, 1)
    probe = np.array([3, -1, 0, 7, 5], np.int64)
    q = (x[5] + 0.1 * rng.standard_normal(d)).astype(np.float32)
    ids, dd, n, cand, held, _ = _bit_search(
        q, x, c, ptr, slots, post_of, probe, mode, 400, metric, rot
    )
    inside = np.unique(np.concatenate([slots[ptr[p] : ptr[p + 1]] for p in probe if p >= 0]))
    assert n == sum(ptr[p + 1] - ptr[p] for p in probe if p >= 0) and cand == len(inside)
    rows = x[inside].astype(np.float16).astype(np.float64)
    ex = _exact(q.astype(np.float64), rows, metric)
    order = np.lexsort((inside, ex))[:10]
    np.testing.assert_array_equal(ids, inside[order])
    np.testing.assert_allclose(dd, ex[order], rtol=1e-4, atol=1e-4)
    assert (held == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_scan_rerank_keeps_the_best_estimates(mode: str) -> None:
    """With a small r, the candidates are the r distinct slots of smallest estimated
    distance (a replica keeps its best estimate), computed here with the float64 formula
    on the query each mode quantizes."""
    d = 130
    rng = np.random.default_rng(5)
    x, c, ptr, slots, post_of = _postings(rng, d, 600, 10, 2)
    rot = rotation(d, 2)
    probe = np.arange(10, dtype=np.int64)[::-1].copy()
    q = (x[11] + 0.2 * rng.standard_normal(d)).astype(np.float32)
    r = 40
    ids, _, _, cand, held, (codes, add, mul, centers) = _bit_search(
        q, x, c, ptr, slots, post_of, probe, mode, r, METRIC_L2, rot
    )
    assert cand == r and (held == 0).all()
    xbar = (2.0 * unpack_signs(codes, d) - 1.0) / np.sqrt(d)
    qrot = (q @ rot).astype(np.float32)
    best: dict[int, float] = {}
    for p in probe:
        lo, hi = ptr[p], ptr[p + 1]
        cen = centers[0 if mode == "global" else p]
        sq = float(((qrot.astype(np.float64) - cen) ** 2).sum())
        qc = prepare_query(qrot if mode == "posting" else qrot - cen)
        est = add[lo:hi] + sq - mul[lo:hi] * (xbar[lo:hi] @ _quantized(qc, d))
        for s, e in zip(slots[lo:hi].tolist(), est.tolist(), strict=True):
            best[s] = min(best.get(s, np.inf), e)
    keys = np.array(list(best))
    chosen = keys[np.argsort([best[s] for s in keys])[:r]]
    ex = _exact(q.astype(np.float64), x[chosen].astype(np.float16).astype(np.float64), METRIC_L2)
    np.testing.assert_array_equal(ids, chosen[np.argsort(ex)[:10]])


# --- the engine's form (`encode_rows`, `entry_factors`) ----------------------------------

from vecdb.kernels.bitscan import encode_rows, entry_factors, entry_words  # noqa: E402

METRICS = {"l2": METRIC_L2, "ip": METRIC_IP, "cosine": METRIC_COSINE}


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_encode_rows_against_numpy(d: int, metric: str) -> None:
    """Entries = the sign code of (x - c) @ rot (where the component is not within rounding
    of 0) and the metric's factors (float64 reference) rounded to bfloat16, and a row codes to the same bits
    alone, in a batch, and in the parallel kernel's batch."""
    rng = np.random.default_rng(d)
    x = rng.normal(size=(300, d)).astype(np.float32)
    x[3] = 0.0  # a zero row
    c = x.mean(0).astype(np.float32)
    rot = rotation(d, seed=d)
    ent = encode_rows(x, c, rot, METRICS[metric])
    assert ent.shape == (300, entry_words(d)) and entry_words(d) == code_words(d) + 1
    r = (x.astype(np.float64) - c) @ rot.astype(np.float64)
    bits = unpack_signs(np.ascontiguousarray(ent[:, :-1]), d)
    clear = np.abs(r) > 1e-4
    np.testing.assert_array_equal(bits[clear], (r > 0)[clear])
    norm = np.sqrt((r * r).sum(1))
    xo = np.where(norm > 0, np.abs(r).sum(1) / (np.sqrt(d) * np.where(norm > 0, norm, 1)), 1.0)
    add, mul = entry_factors(ent)
    if metric == "l2":
        want_add, want_mul = norm**2, 2 * norm / xo
    else:
        want_add = (norm**2 - (x.astype(np.float64) ** 2).sum(1)) / 2
        want_mul = norm / xo
    # bfloat16 values (a lane group keeps 16 bits of each), rounded to nearest: within half
    # of bfloat16's 2^-7 relative spacing, plus float32's own rounding of the sum
    for f in (add, mul):
        assert not (f.view(np.uint32) & 0xFFFF).any()
    scale = np.abs(want_add).max() + 1.0
    np.testing.assert_allclose(add, want_add, rtol=2**-8 + 1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(mul, want_mul, rtol=2**-8 + 1e-4, atol=1e-6)
    for i in (0, 3, 299):
        np.testing.assert_array_equal(encode_rows(x[i : i + 1], c, rot, METRICS[metric])[0], ent[i])
    big = np.repeat(x, 15, axis=0)  # 4,500 rows: the parallel kernel
    np.testing.assert_array_equal(encode_rows(big, c, rot, METRICS[metric])[::15], ent)


# --- the register path of `scan_blocks` (`_xbar_dot8`) -------------------------------------

from vecdb.index.params import BITS_WIDTH  # noqa: E402
from vecdb.index.spann.postings import encode_block  # noqa: E402
from vecdb.kernels.bitscan import scan_blocks  # noqa: E402
from vecdb.kernels.posting import NO_VISIBLE, SLOT_DTYPE, block_layout  # noqa: E402


@pytest.mark.parametrize("d", [130, 384, 512, 50, 600])
@pytest.mark.parametrize("metric", [METRIC_L2, METRIC_IP])
def test_scan_blocks_register_path_equals_the_word_loop(d: int, metric: int) -> None:
    """One block read twice by the same query: once from the start of the buffer (codes of
    3 to 8 words take the 8-lane register path there) and once ending the buffer exactly,
    where a register load would read past it, so the word loop runs: every estimate is
    bit-equal, with every entry kept (R = the entries). d = 50 (1 word) and 600 (10
    words) take the word loop both times. The slot bitmap (the caller's scratch) comes back
    zeroed."""
    rng = np.random.default_rng(d + metric)
    n = 300
    x = rng.standard_normal((n, d)).astype(np.float32)
    centroid = x.mean(0)
    rot = rotation(d, seed=3)
    entries = encode_rows(x, centroid, rot, metric)
    slots = np.arange(n, dtype=np.int64)
    versions = np.ones(n, np.uint8)
    block = encode_block(7, slots, versions, entries, width=BITS_WIDTH)
    end = block_layout(n, entries.shape[1], BITS_WIDTH)[2]  # the last entry's end
    a_len = len(block) + (-len(block)) % 64
    buf = np.zeros(a_len + end, np.uint8)
    buf[: len(block)] = block
    buf[a_len:] = block[:end]
    u64 = buf.view(np.uint64)
    q = np.repeat(rng.standard_normal((1, d)).astype(np.float32), 2, axis=0)
    ids = np.full((2, n), -1, np.int64)
    dist = np.full((2, n), np.inf, np.float32)
    off = np.array([0, a_len], np.int64)
    cnt = np.array([n, n], np.int64)
    ptr = np.array([0, 1, 2], np.int64)
    slot_version = np.ones(n, np.uint8)
    words = entries.shape[1] - 1
    held = np.zeros(n // 8 + 2, np.uint8)
    args = (buf, buf.view(SLOT_DTYPE), u64, buf.view(np.float32), words, off, cnt, ptr)
    got = scan_blocks(
        *args,
        0,
        2,
        q,
        centroid,
        rot,
        metric,
        slot_version,
        NO_VISIBLE,
        False,
        np.full(2, np.nan, np.float32),
        0.0,
        ids,
        dist,
        np.zeros(n // 8 + 2, np.uint8),
    )
    assert got == 2 * n
    assert not held.any()  # the scratch comes back zeroed
    assert sorted(ids[0].tolist()) == list(range(n))
    np.testing.assert_array_equal(ids[0], ids[1])
    np.testing.assert_array_equal(dist[0], dist[1])


# --- lane groups: the block order of entries and the scan over it ----------------------------

from vecdb.kernels.bitscan import GROUP, from_lanes, to_lanes  # noqa: E402
from vecdb.kernels.posting import vector_bytes  # noqa: E402


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 23])
def test_to_lanes_puts_word_w_of_a_group_in_one_run(n: int) -> None:
    """Word w of the entries of group g is the GROUP words at g * gw + w * GROUP (gw =
    GROUP (ew - 1) + 4 words a group), the factors (add, mul) follow as GROUP bfloat16 each
    (the upper half of each float32), the tail stays entry-major with its float32 factors,
    `from_lanes` gives the entries back, and `vector_bytes` is the flat length in bytes."""
    ew = 7
    rng = np.random.default_rng(n)
    e = rng.integers(0, 2**63, (n, ew), dtype=np.uint64)
    f = e[:, ew - 1 :].view(np.uint32)  # factors as encode_rows leaves them: bfloat16 values
    f &= np.uint32(0xFFFF0000)
    flat = to_lanes(e)
    gw = GROUP * (ew - 1) + 4
    full = n // GROUP * GROUP
    assert flat.shape == (full // GROUP * gw + (n - full) * ew,)
    assert flat.nbytes == vector_bytes(BITS_WIDTH, ew, n)
    for j in range(full):
        g, t = divmod(j, GROUP)
        for w in range(ew - 1):
            assert flat[g * gw + w * GROUP + t] == e[j, w]
        half = flat[g * gw + (ew - 1) * GROUP : (g + 1) * gw].view(np.uint16)
        want = tuple(int(v) >> 16 for v in e[j, ew - 1 :].view(np.uint32))
        assert (int(half[t]), int(half[GROUP + t])) == want
    np.testing.assert_array_equal(flat[full // GROUP * gw :], e[full:].ravel())
    np.testing.assert_array_equal(from_lanes(flat, n, ew), e)


NO_HEADS = np.full(1, np.nan, np.float32)  # one block, head distance unknown (no bound asked)


def _reference_estimates(entries: np.ndarray, q: np.ndarray, centroid: np.ndarray,
                         rot: np.ndarray, metric: int) -> np.ndarray:  # fmt: skip
    """The estimates from the estimator's definition, entry by entry in numpy: add + C_q -
    mul <x_bar, q_hat>, x_bar_j = (2 bit_j - 1) / sqrt(d), q_hat_j = lo + delta u_j."""
    d = len(q)
    qr = ((q - centroid).astype(np.float64) @ rot.astype(np.float64)).astype(np.float32)
    code = prepare_query(qr)
    u = sum(unpack_signs(code.planes[p : p + 1], d)[0].astype(np.float64) * 2**p for p in range(4))
    q_hat = code.lo + code.delta * u
    x_bar = (2.0 * unpack_signs(entries[:, :-1].copy(), d).astype(np.float64) - 1) / np.sqrt(d)
    fac = entries[:, -1].copy().view(np.float32).reshape(-1, 2).astype(np.float64)
    cq = code.sq_norm if metric == METRIC_L2 else (code.sq_norm - float(q @ q)) / 2
    out: np.ndarray = fac[:, 0] + cq - fac[:, 1] * (x_bar @ q_hat)
    return out


@pytest.mark.parametrize("d", [50, 384, 600])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 61])
@pytest.mark.parametrize("half_rot", [False, True])
def test_scan_blocks_estimates_every_entry_by_definition(d: int, n: int, half_rot: bool) -> None:
    """Blocks of whole lane groups, a tail, or both (n = 1 ... 61), codes of 1, 6 and 10
    words: with R = all entries, every estimate `scan_blocks` returns is the estimator's
    value for that slot (numpy reference; the query's 4-bit rounding may differ in a
    component at a rounding edge, hence the tolerance), and every slot comes back once;
    also when the query is rotated with the float16 bits of the rotation (what searches
    pass, `BitCoder.qrot`) while the reference and the codes use the float32 one."""
    rng = np.random.default_rng(d * 100 + n)
    x = rng.standard_normal((n, d)).astype(np.float32)
    centroid = x.mean(0)
    rot = rotation(d, seed=5)
    entries = encode_rows(x, centroid, rot, METRIC_L2)
    slots = rng.permutation(n * 3)[:n].astype(np.int64)
    block = encode_block(3, slots, np.ones(n, np.uint8), entries, width=BITS_WIDTH)
    buf = np.zeros(len(block) + 64, np.uint8)
    buf[: len(block)] = block
    u64 = buf.view(np.uint64)
    q = rng.standard_normal((1, d)).astype(np.float32)
    ids = np.full((1, n), -1, np.int64)
    dist = np.full((1, n), np.inf, np.float32)
    held = np.zeros(n * 3 // 8 + 2, np.uint8)
    got = scan_blocks(
        buf, buf.view(SLOT_DTYPE), u64, buf.view(np.float32), entries.shape[1] - 1,
        np.array([0]), np.array([n]), np.array([0, 1]), 0, 1, q, centroid,
        rot.astype(np.float16).view(np.uint16) if half_rot else rot, METRIC_L2,
        np.ones(n * 3, np.uint8), NO_VISIBLE, False, NO_HEADS, 0.0, ids, dist, held,
    )  # fmt: skip
    assert got == n and not held.any()
    assert sorted(ids[0].tolist()) == sorted(slots.tolist())
    want = dict(zip(slots.tolist(), _reference_estimates(entries, q[0], centroid, rot, METRIC_L2)))
    scale = max(abs(v) for v in want.values()) + 1.0
    for s, e in zip(ids[0].tolist(), dist[0].tolist()):
        assert abs(e - want[s]) <= 2e-3 * scale, (s, e, want[s])
    assert (np.diff(dist[0]) >= 0).all()


@pytest.mark.parametrize("r", [1, 10, 40])
def test_scan_blocks_keeps_the_r_smallest_distinct(r: int) -> None:
    """Two blocks (61 and 30 entries, the second holding replicas of 15 of the first's
    slots, stale copies among them): with R = r the scan keeps exactly the r smallest
    distinct visible estimates that R = all finds, in order, whatever block they came from;
    the incoming row of a widened search stays in the running."""
    d = 384
    rng = np.random.default_rng(r)
    x = rng.standard_normal((76, d)).astype(np.float32)
    centroid = x.mean(0)
    rot = rotation(d, seed=2)
    entries = encode_rows(x, centroid, rot, METRIC_L2)
    slots = np.arange(76, dtype=np.int64)
    second = np.r_[rng.choice(61, 15, replace=False), np.arange(61, 76)]
    versions = np.ones(76, np.uint8)
    stale = second[:5]  # copies written before their slot moved: not visible
    b1 = encode_block(1, slots[:61], versions[:61], entries[:61], width=BITS_WIDTH)
    v2 = np.where(np.isin(second, stale), 2, 1).astype(np.uint8)
    b2 = encode_block(2, slots[second], v2, entries[second], width=BITS_WIDTH)
    at = len(b1) + (-len(b1)) % 64
    buf = np.zeros(at + len(b2) + 64, np.uint8)
    buf[: len(b1)] = b1
    buf[at : at + len(b2)] = b2
    u64 = buf.view(np.uint64)
    q = rng.standard_normal((1, d)).astype(np.float32)
    views = (buf, buf.view(SLOT_DTYPE), u64, buf.view(np.float32), entries.shape[1] - 1,
             np.array([0, at]), np.array([61, 30]), np.array([0, 2]))  # fmt: skip

    def run(ids: np.ndarray, dist: np.ndarray) -> None:
        held = np.zeros(500 // 8 + 2, np.uint8)  # slots up to 500 (the widened row's)
        scan_blocks(*views, 0, 1, q, centroid, rot, METRIC_L2, np.ones(76, np.uint8),
                    NO_VISIBLE, False, np.full(2, np.nan, np.float32), 0.0, ids, dist,
                    held)  # fmt: skip
        assert not held.any()

    all_ids = np.full((1, 76), -1, np.int64)
    all_d = np.full((1, 76), np.inf, np.float32)
    run(all_ids, all_d)
    assert sorted(all_ids[0].tolist()) == list(range(76))  # each slot once
    ids = np.full((1, r), -1, np.int64)
    dist = np.full((1, r), np.inf, np.float32)
    run(ids, dist)
    np.testing.assert_array_equal(ids[0], all_ids[0, :r])
    np.testing.assert_array_equal(dist[0], all_d[0, :r])
    # a widened search: the row comes in holding a slot at a better estimate than any entry
    ids[0, 0], dist[0, 0] = 500, all_d[0, 0] - 1.0
    ids[0, 1:], dist[0, 1:] = -1, np.inf
    run(ids, dist)
    assert ids[0, 0] == 500 and (r == 1 or ids[0, 1] == all_ids[0, 0])


@pytest.mark.parametrize("half", [False, True])
def test_rotate_tile_is_bit_equal_to_one_query_at_a_time(half: bool) -> None:
    """The scan rotates ROTATE_TILE queries together: each comes out with the bits of its
    rotation alone (`_rotate`), so its estimates do not depend on its neighbours. Given
    rot's float16 bits (uint16, what searches pass), that is `_rotate` of the widened
    float16 matrix, within float16 rounding of the float32 rotation."""
    from vecdb.kernels.bitscan import ROTATE_TILE, _rotate, _rotate_tile

    rng = np.random.default_rng(9)
    d = 384 if half else 96
    q = rng.standard_normal((ROTATE_TILE + 3, d)).astype(np.float32)
    c = rng.standard_normal(d).astype(np.float32)
    rot = rotation(d, seed=4)
    bits = rot.astype(np.float16).view(np.uint16)
    given, same = (bits, bits.view(np.float16).astype(np.float32)) if half else (rot, rot)
    tile = np.full((ROTATE_TILE, d), np.nan, np.float32)
    one = np.empty(d, np.float32)
    exact = np.empty(d, np.float32)
    for lo, hi in ((0, ROTATE_TILE), (ROTATE_TILE, ROTATE_TILE + 3)):
        _rotate_tile(q, lo, hi, c, given, tile)
        for t in range(hi - lo):
            _rotate(q[lo + t], c, same, one)
            np.testing.assert_array_equal(tile[t], one)
            _rotate(q[lo + t], c, rot, exact)
            err = np.abs(tile[t] - exact).max()
            assert (0 < err <= 2e-3 * np.abs(exact).max()) if half else err == 0


# --- lower bounds: the keys a scan keeps with eps > 0 (`bound_gap`) ---------------------------

from vecdb.kernels.bitscan import XO_VAR  # noqa: E402


def _scan_keys(entries: np.ndarray, q: np.ndarray, centroid: np.ndarray, rot: np.ndarray,
               metric: int, hsq: float, eps: float) -> dict[int, float]:  # fmt: skip
    """slot -> key of one block of `entries` (slots 0..n-1) scanned with R = n."""
    n = len(entries)
    block = encode_block(3, np.arange(n, dtype=np.int64), np.ones(n, np.uint8), entries,
                         width=BITS_WIDTH)  # fmt: skip
    buf = np.zeros(len(block) + 64, np.uint8)
    buf[: len(block)] = block
    u64 = buf.view(np.uint64)
    ids = np.full((1, n), -1, np.int64)
    dist = np.full((1, n), np.inf, np.float32)
    held = np.zeros(n // 8 + 2, np.uint8)
    scan_blocks(
        buf, buf.view(SLOT_DTYPE), u64, buf.view(np.float32), entries.shape[1] - 1,
        np.array([0]), np.array([n]), np.array([0, 1]), 0, 1, q[None, :], centroid, rot,
        metric, np.ones(n, np.uint8), NO_VISIBLE, False, np.array([hsq], np.float32), eps,
        ids, dist, held,
    )  # fmt: skip
    assert (np.diff(dist[0]) >= 0).all()  # ascending keys
    return dict(zip(ids[0].tolist(), dist[0].tolist()))


@pytest.mark.parametrize("d", [384, 600])
@pytest.mark.parametrize("known", [True, False])
def test_scan_blocks_keys_are_estimates_less_eps_deviations(d: int, known: bool) -> None:
    """With eps > 0 a key is the entry's estimate less mul x eps x sqrt(XO_VAR H / (d - 1)
    + delta^2 / 12): H the given head distance, or (NaN) the query's squared distance to
    the global centroid ||q'||^2; eps = 0 gives the estimates themselves."""
    rng = np.random.default_rng(d + known)
    n = 61
    x = rng.standard_normal((n, d)).astype(np.float32)
    centroid = x.mean(0)
    rot = rotation(d, seed=5)
    entries = encode_rows(x, centroid, rot, METRIC_L2)
    q = rng.standard_normal(d).astype(np.float32)
    est = _reference_estimates(entries, q, centroid, rot, METRIC_L2)
    qr = ((q - centroid).astype(np.float64) @ rot.astype(np.float64)).astype(np.float32)
    code = prepare_query(qr)
    h = 7.5 if known else code.sq_norm
    gap = 2.5 * np.sqrt(XO_VAR * h / (d - 1) + code.delta**2 / 12)
    mul = entries[:, -1].copy().view(np.float32).reshape(-1, 2)[:, 1].astype(np.float64)
    got = _scan_keys(entries, q, centroid, rot, METRIC_L2, 7.5 if known else np.nan, 2.5)
    plain = _scan_keys(entries, q, centroid, rot, METRIC_L2, 7.5, 0.0)
    scale = np.abs(est).max() + 1.0
    for s in range(n):
        assert abs(plain[s] - est[s]) <= 2e-3 * scale
        assert abs(got[s] - (est[s] - mul[s] * gap)) <= 2e-3 * scale, (s, got[s], est[s])
        assert got[s] < plain[s]


@pytest.mark.parametrize("metric", [METRIC_L2, METRIC_IP])
def test_lower_bounds_hold_for_nearly_every_entry(metric: int) -> None:
    """Points around one centroid (384-d), a query near it, the true head distance given:
    with eps = 3 the key is below the entry's exact distance for >= 99% of entries (a
    normal error passes 3 deviations for 0.13%); the estimates themselves (eps = 0) are
    above it for a good share, so the check can fail."""
    d, n = 384, 4000
    rng = np.random.default_rng(11 + metric)
    c = rng.standard_normal(d).astype(np.float32)
    x = (c + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    q = (c + 0.3 * rng.standard_normal(d)).astype(np.float32)
    rot = rotation(d, seed=4)
    entries = encode_rows(x, c, rot, metric)
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    exact = ((x64 - q64) ** 2).sum(1) if metric == METRIC_L2 else -(x64 @ q64)
    hsq = float(((q64 - c) ** 2).sum())
    keys = _scan_keys(entries, q, c, rot, metric, hsq, 3.0)
    plain = _scan_keys(entries, q, c, rot, metric, hsq, 0.0)
    above = np.mean([keys[s] > exact[s] for s in range(n)])
    assert above <= 0.01, above
    assert np.mean([plain[s] > exact[s] for s in range(n)]) >= 0.2
