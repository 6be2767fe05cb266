"""MaxSim, centroid-interaction, LUT and Hamming kernels against one-line numpy references."""

from __future__ import annotations

import numpy as np
import pytest

import vecdb.kernels.maxsim as ms
from vecdb.kernels.bitpack import (
    append_codes,
    book_slots,
    build_lut,
    code_bits,
    encode_books,
    grid_books,
    pack_codes,
    pack_small,
    row_bytes,
    sign_lut,
    unpack_codes,
    unpack_small,
)
from vecdb.kernels.hamming import pack_signs

DIMS = [1, 7, 50, 128]


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def kernel_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs through both the serial and the prange variant of each kernel."""
    mode: str = request.param
    monkeypatch.setattr(ms, "PARALLEL_MIN_WORK", 0 if mode == "parallel" else 1 << 62)
    return mode


def _docs(d: int, seed: int = 0, n_docs: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens (N, d) and offsets (D+1,), one document empty."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, size=n_docs)
    sizes[3] = 0
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return rng.standard_normal((int(offsets[-1]), d)).astype(np.float32), offsets


def _ref(q: np.ndarray, tok: np.ndarray, offsets: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """sum over query tokens of the best score per document, -inf when empty."""
    out = []
    for c in cand:
        t = tok[offsets[c] : offsets[c + 1]]
        out.append((q @ t.T).max(1).sum() if len(t) else -np.inf)
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("d", DIMS)
def test_maxsim_matches_numpy(d: int) -> None:
    """Exact MaxSim equals numpy's max over (q @ t.T) summed, for every candidate order."""
    tok, off = _docs(d)
    q = np.random.default_rng(5).standard_normal((4, d)).astype(np.float32)
    cand = np.array([8, 0, 3, 2, 2], np.int64)
    out = np.empty(len(cand), np.float32)
    ms.maxsim(q, tok, off, cand, out)
    np.testing.assert_allclose(out, _ref(q, tok, off, cand), rtol=1e-4, atol=1e-4)


def test_maxsim_on_int8_tokens_with_folded_scales() -> None:
    """int8 tokens with the scales folded into the query score as the dequantised floats."""
    tok, off = _docs(33)
    scale = (np.abs(tok).max(0) / 127).astype(np.float32)
    q8 = np.round(tok / scale).astype(np.int8)
    q = np.random.default_rng(2).standard_normal((3, 33)).astype(np.float32)
    cand = np.arange(len(off) - 1, dtype=np.int64)
    out = np.empty(len(cand), np.float32)
    ms.maxsim(q * scale, q8, off, cand, out)
    np.testing.assert_allclose(out, _ref(q, q8 * scale, off, cand), rtol=1e-4, atol=1e-4)


def test_maxsim_with_no_candidates_or_query_rows() -> None:
    """Zero candidates write nothing; a zero-row query scores every non-empty document 0."""
    tok, off = _docs(5)
    ms.maxsim(
        np.zeros((2, 5), np.float32), tok, off, np.empty(0, np.int64), np.empty(0, np.float32)
    )
    out = np.empty(2, np.float32)
    ms.maxsim(np.zeros((0, 5), np.float32), tok, off, np.array([0, 1], np.int64), out)
    np.testing.assert_array_equal(out, [0.0, 0.0])


@pytest.mark.parametrize("k", [1, 2, 3, 256, 257, 1000, 65536])
def test_code_streams_round_trip(k: int) -> None:
    """Codes packed at ceil(log2 K) bits read back exactly, through numpy and code_at."""
    bits = code_bits(k)
    assert (1 << bits) >= k and (bits == 1 or (1 << (bits - 1)) < k)
    codes = np.random.default_rng(k).integers(0, k, size=301)
    packed = pack_codes(codes, bits)
    assert len(packed) == (301 * bits + 7) // 8 + 2
    np.testing.assert_array_equal(unpack_codes(packed, bits, 301), codes)
    assert [ms.code_at(packed, t, bits) for t in (0, 1, 150, 300)] == list(codes[[0, 1, 150, 300]])


@pytest.mark.parametrize("bits", [1, 3, 10, 16])
def test_appended_code_streams_equal_one_packing(bits: int) -> None:
    """Appending codes in pieces (in place, growing) gives the stream of one packing, and
    the codes before each append read back unchanged."""
    rng = np.random.default_rng(bits)
    parts = [rng.integers(0, 1 << bits, size=int(n)) for n in (5, 0, 17, 1, 300)]
    buf, n = np.zeros(0, np.uint8), 0
    for part in parts:
        before = unpack_codes(buf, bits, n) if n else np.zeros(0, np.int64)
        buf = append_codes(buf, n, part, bits)
        np.testing.assert_array_equal(unpack_codes(buf, bits, n), before)
        n += len(part)
    whole = pack_codes(np.concatenate(parts), bits)
    np.testing.assert_array_equal(buf[: len(whole)], whole)
    assert not buf[len(whole) :].any()


@pytest.mark.parametrize("d", DIMS)
def test_centroid_interaction_matches_numpy(d: int) -> None:
    """Sum over query tokens of the best kept centroid score among the document's codes."""
    k, m = 37, 5
    tok, off = _docs(d, seed=3)
    codes = np.random.default_rng(4).integers(0, k, size=len(tok))
    skq = np.random.default_rng(6).standard_normal((k, m)).astype(np.float32)
    keep = np.random.default_rng(7).random(k) < 0.6
    cand = np.arange(len(off) - 1, dtype=np.int64)
    out = np.empty(len(cand), np.float32)
    ms.centroid_interaction(
        skq, pack_codes(codes, code_bits(k)), code_bits(k), off, cand, out, keep
    )
    want = []
    for c in cand:
        mine = [x for x in codes[off[c] : off[c + 1]] if keep[x]]
        want.append(skq[mine].max(0).sum() if mine else 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b", [1, 2, 4, 8])
@pytest.mark.parametrize("d", DIMS)
def test_small_rows_round_trip(b: int, d: int) -> None:
    """b-bit values per dimension pack into ceil(d b / 8) bytes and unpack unchanged."""
    v = np.random.default_rng(d).integers(0, 1 << b, size=(6, d)).astype(np.uint8)
    p = pack_small(v, b)
    assert p.shape == (6, row_bytes(d, b))
    np.testing.assert_array_equal(unpack_small(p, b, d), v)


@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("d", DIMS)
def test_residual_lut_scores_without_decompression(b: int, d: int) -> None:
    """Centroid score plus LUT sums equals MaxSim over the decompressed tokens."""
    k, m = 11, 4
    rng = np.random.default_rng(9)
    tok, off = _docs(d, seed=8)
    centroids = rng.standard_normal((k, d)).astype(np.float32)
    codes = rng.integers(0, k, size=len(tok))
    values = rng.standard_normal((d, 1 << b)).astype(np.float32)
    rcodes = rng.integers(0, 1 << b, size=(len(tok), d))
    decoded = centroids[codes] + values[np.arange(d)[None, :], rcodes]
    q = rng.standard_normal((m, d)).astype(np.float32)
    skq = np.ascontiguousarray((q @ centroids.T).T)
    cand = np.arange(len(off) - 1, dtype=np.int64)
    out = np.empty(len(cand), np.float32)
    bits = code_bits(k)
    ms.lut_maxsim(build_lut(q, grid_books(values, b)), pack_small(rcodes, b), off, cand, out,
                  skq, pack_codes(codes, bits), bits)  # fmt: skip
    np.testing.assert_allclose(out, _ref(q, decoded, off, cand), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("d", DIMS)
def test_byte_codebook_lut_scores_the_codewords(b: int, d: int) -> None:
    """With free byte codebooks (product quantisation), LUT sums equal MaxSim over the
    concatenated codewords."""
    per = 8 // b
    nb = row_bytes(d, b)
    rng = np.random.default_rng(14)
    tok, off = _docs(d, seed=15)
    books = rng.standard_normal((nb, 256, per)).astype(np.float32)
    data = rng.integers(0, 256, size=(len(tok), nb)).astype(np.uint8)
    decoded = np.concatenate([books[p][data[:, p]] for p in range(nb)], axis=1)[:, :d]
    q = rng.standard_normal((3, d)).astype(np.float32)
    cand = np.arange(len(off) - 1, dtype=np.int64)
    out = np.empty(len(cand), np.float32)
    ms.lut_maxsim(build_lut(q, books), data, off, cand, out)
    np.testing.assert_allclose(out, _ref(q, decoded, off, cand), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("d", [7, 50])
def test_encode_books_picks_the_nearest_codeword(d: int) -> None:
    """Plain coding is the nearest codeword per byte position (brute force), and on a
    per-dimension grid it is the nearest grid value per dimension."""
    rng = np.random.default_rng(16)
    nb = row_bytes(d, 2)
    books = rng.standard_normal((nb, 256, 4)).astype(np.float32)
    x = rng.standard_normal((40, d)).astype(np.float32)
    xp = np.zeros((40, nb * 4), np.float32)
    xp[:, :d] = x
    want = np.stack(
        [
            ((xp[:, None, p * 4 : p * 4 + 4] - books[p][None]) ** 2).sum(2).argmin(1)
            for p in range(nb)
        ],
        axis=1,
    )
    np.testing.assert_array_equal(encode_books(x, books), want)
    values = np.sort(rng.standard_normal((d, 4)), axis=1).astype(np.float32)
    got = unpack_small(encode_books(x, grid_books(values, 2)), 2, d)
    np.testing.assert_array_equal(got, np.abs(x[:, :, None] - values[None]).argmin(2))


def test_anisotropic_coding_trades_total_error_for_error_along_the_direction() -> None:
    """eta > 1 lowers the error component along each row's direction (what moves the
    matching query tokens' scores), at a bounded cost in total error."""
    rng = np.random.default_rng(17)
    d, nb = 32, 8
    books = (0.3 * rng.standard_normal((nb, 256, 4))).astype(np.float32)
    tokens = rng.standard_normal((500, d)).astype(np.float32)
    unit = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
    resid = (0.3 * rng.standard_normal((500, d))).astype(np.float32)

    def errors(codes: np.ndarray) -> tuple[float, float]:
        rec = np.concatenate([books[p][codes[:, p]] for p in range(nb)], axis=1)
        e = resid - rec
        return float((e * e).sum(1).mean()), float(((e * unit).sum(1) ** 2).mean())

    plain_total, plain_par = errors(encode_books(resid, books))
    aniso_total, aniso_par = errors(encode_books(resid, books, unit, 8.0, 2))
    assert aniso_par < 0.5 * plain_par
    assert aniso_total < 1.5 * plain_total
    with pytest.raises(ValueError, match="direction"):
        encode_books(resid, books, None, 4.0, 1)


def _descent_reference(
    x: np.ndarray, books: np.ndarray, u: np.ndarray, eta: float, passes: int
) -> np.ndarray:
    """`encode_books` spelled out in float64: per row, the nearest codeword of each byte
    position on its own dimensions, then `passes` rounds over the positions in order, each
    taking the codeword (the first of equal ones) of least |e|^2 + (eta - 1) (u . e)^2 with
    the other positions' codewords fixed, e = x - reconstruction."""
    n, d = x.shape
    nb, nv, per = books.shape
    slots = book_slots(d, nb, per).reshape(nb, per)
    words = np.zeros((nb, nv, d))  # each codeword put in its position's dimensions
    for p in range(nb):
        used = slots[p] >= 0
        words[p][:, slots[p][used]] = books[p][:, used]
    codes = np.zeros((n, nb), np.int64)
    for t in range(n):
        for p in range(nb):
            own = slots[p][slots[p] >= 0]
            codes[t, p] = ((x[t, own] - words[p][:, own]) ** 2).sum(1).argmin()
        for _ in range(passes):
            for p in range(nb):
                others = sum(words[q, codes[t, q]] for q in range(nb) if q != p)
                e = x[t] - others - words[p]  # (nv, d): every codeword at p
                codes[t, p] = ((e * e).sum(1) + (eta - 1.0) * (e @ u[t]) ** 2).argmin()
    return codes


@pytest.mark.parametrize("eta", [1.0, 4.0])
@pytest.mark.parametrize("passes", [0, 1, 2])
@pytest.mark.parametrize(
    ("d", "nb", "per"),
    [(7, 7, 1), (7, 4, 2), (50, 13, 4), (50, 25, 4), (128, 32, 4), (9, 2, 8), (9, 3, 8)],
)
def test_encode_books_is_the_coordinate_descent(
    d: int, nb: int, per: int, passes: int, eta: float
) -> None:
    """The kernel's codes equal the descent spelled out on whole rows, for 1 to 8 dimensions a
    byte, rows not a multiple of a byte's dimensions, wider rows (`book_slots`), 0 to 2
    passes, with and without the anisotropic weight. Codewords and directions are eighths,
    rows sixteenths, in [-1/2, 1/2] (the descent does not need unit directions), so every
    cost here is a sum of few-bit fractions, exact in float32 as in float64: no rounding can
    tip a close call, and the many exact ties must go to the first codeword. The padding columns of the codebooks are 0, as
    `train_books` makes them."""
    rng = np.random.default_rng(d * 1000 + nb * 10 + per)
    slots = book_slots(d, nb, per).reshape(nb, per)
    books = (rng.integers(-4, 5, (nb, 256, per)) / 8).astype(np.float32)
    books[np.broadcast_to((slots < 0)[:, None, :], books.shape)] = 0.0
    x = (rng.integers(-8, 9, (25, d)) / 16).astype(np.float32)
    u = (rng.integers(-4, 5, (25, d)) / 8).astype(np.float32)
    want = _descent_reference(x, books, u, eta, passes)
    np.testing.assert_array_equal(encode_books(x, books, u, eta, passes), want)
    if passes and eta > 1:  # the refinement moved some codes: the passes are exercised
        assert (want != _descent_reference(x, books, u, eta, 0)).any()


@pytest.mark.parametrize("d", DIMS)
def test_sign_lut_is_the_asymmetric_sign_score(d: int) -> None:
    """Over hamming.pack_signs' bytes, the sign LUT gives MaxSim of q against sign(t)."""
    tok, off = _docs(d, seed=10)
    q = np.random.default_rng(11).standard_normal((3, d)).astype(np.float32)
    signs = pack_signs(tok).view(np.uint8)[:, : row_bytes(d, 1)].copy()
    cand = np.arange(len(off) - 1, dtype=np.int64)
    out = np.empty(len(cand), np.float32)
    ms.lut_maxsim(sign_lut(q), signs, off, cand, out)
    np.testing.assert_allclose(out, _ref(q, np.where(tok > 0, 1.0, -1.0), off, cand), rtol=1e-4)


def test_gather_cells_deduplicates_and_skips_dead_documents() -> None:
    """The union of the cells' documents, each once, without the dead ones."""
    indptr = np.array([0, 3, 5, 5, 8], np.int64)
    docs = np.array([0, 2, 4, 2, 5, 1, 4, 6], np.int64)
    alive = np.ones(7, bool)
    alive[5] = False
    stamp = np.full(7, -1, np.int64)
    got = ms.gather_cells(np.array([0, 1, 3, 2], np.int64), indptr, docs, alive, stamp, 0)
    assert sorted(got.tolist()) == [0, 1, 2, 4, 6]
    assert len(ms.gather_cells(np.empty(0, np.int64), indptr, docs, alive, stamp, 1)) == 0
    # The scratch is never refilled: a new mark is a fresh "seen" set, and documents outside
    # the cells keep their stamps (a per-call fill would have cost O(documents) per query).
    stamp[3] = 99
    again = ms.gather_cells(np.array([1, 0], np.int64), indptr, docs, alive, stamp, 2)
    assert sorted(again.tolist()) == [0, 2, 4]
    assert stamp[3] == 99 and stamp[6] == 0
    narrow = ms.gather_cells(
        np.array([1], np.int64), indptr, docs.astype(np.int32), alive, stamp, 3
    )
    assert sorted(narrow.tolist()) == [2]


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.float16])
def test_gather_rows_is_the_documents_rows_back_to_back(dtype: type) -> None:
    """One gather for every store: rows of the chosen documents in order, local offsets."""
    tok, off = _docs(5, seed=19)
    src = (10 * tok).astype(dtype)
    docs = np.array([3, 0, 3, len(off) - 2], np.int64)
    rows, local = ms.gather_rows(src, off, docs)
    want = np.concatenate([src[off[d] : off[d + 1]] for d in docs])
    np.testing.assert_array_equal(rows, want)
    assert rows.dtype == src.dtype
    assert local.tolist() == [0, *np.cumsum([off[d + 1] - off[d] for d in docs]).tolist()]
    empty, lo = ms.gather_rows(src, off, np.zeros(0, np.int64))
    assert empty.shape == (0, 5) and lo.tolist() == [0]


@pytest.mark.parametrize("m", [1, 12, 16, 17, 40])
@pytest.mark.parametrize("d", [7, 26, 128])  # 2, 7 and 32 residual bytes: 4-at-a-time + rest
def test_residual_maxsim_equals_the_reference_and_lut_maxsim(m: int, d: int) -> None:
    """The residual kernel (16 lanes a register) equals MaxSim over centroid + decoded
    codewords and `lut_maxsim` with codes, for query widths around its lane padding,
    candidates in any order (with repeats, an empty document among them), serial and
    parallel."""
    k, nb = 37, row_bytes(d, 2)
    rng = np.random.default_rng(m * 1000 + d)
    tok, off = _docs(d, seed=m + d, n_docs=150)
    centroids = rng.standard_normal((k, d)).astype(np.float32)
    codes = rng.integers(0, k, size=len(tok))
    books = rng.standard_normal((nb, 256, 4)).astype(np.float32) * 0.3
    data = rng.integers(0, 256, size=(len(tok), nb)).astype(np.uint8)
    decoded = centroids[codes] + np.concatenate([books[p][data[:, p]] for p in range(nb)], 1)[:, :d]
    q = rng.standard_normal((m, d)).astype(np.float32)
    skq = np.ascontiguousarray((q @ centroids.T).T)
    bits = code_bits(k)
    packed = pack_codes(codes, bits)
    cand = rng.permutation(np.concatenate([np.arange(150), [3, 5, 5]])).astype(np.int64)
    lut = build_lut(q, books)
    got = np.empty(len(cand), np.float32)
    ms.residual_maxsim(lut, data, off, cand, got, skq, packed, bits)
    old = np.empty(len(cand), np.float32)
    ms.lut_maxsim(lut, data, off, cand, old, skq, packed, bits)
    want = _ref(q, decoded, off, cand)
    assert np.isneginf(got[cand == 3]).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got, old, rtol=1e-5, atol=1e-4)
    par = np.empty(len(cand), np.float32)
    w = ms.lanes(m)
    lut_w = np.zeros((nb, 256, w), np.float32)
    lut_w[:, :, :m] = lut
    skq_w = np.zeros((k, w), np.float32)
    skq_w[:, :m] = skq
    ms._residual_parallel(skq_w, packed, bits, lut_w, data, off, cand, par)
    np.testing.assert_array_equal(par, got)


def test_residual_maxsim_rejects_missing_codes_and_scores_no_candidates() -> None:
    """Without codes (bits 0) it refuses; an empty candidate list writes nothing."""
    tok, off = _docs(8)
    lut = np.zeros((2, 256, 3), np.float32)
    data = np.zeros((len(tok), 2), np.uint8)
    skq = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="codes"):
        ms.residual_maxsim(lut, data, off, np.arange(2, dtype=np.int64),
                           np.empty(2, np.float32), skq, pack_codes([0] * len(tok), 2), 0)  # fmt: skip
    out = np.empty(0, np.float32)
    ms.residual_maxsim(lut, data, off, np.empty(0, np.int64), out, skq,
                       pack_codes([0] * len(tok), 2), 2)  # fmt: skip
    assert out.shape == (0,)


@pytest.mark.parametrize(
    ("d", "nb", "per"), [(128, 32, 4), (128, 36, 4), (50, 13, 4), (50, 25, 4), (9, 9, 8)]
)
def test_book_slots_cover_every_dimension_once(d: int, nb: int, per: int) -> None:
    """Each dimension sits in exactly one column, in order; the natural byte count keeps the
    contiguous layout of `grid_books`; wider rows split the dimensions evenly."""
    slots = book_slots(d, nb, per)
    assert slots.shape == (nb * per,)
    np.testing.assert_array_equal(slots[slots >= 0], np.arange(d))
    sizes = (slots.reshape(nb, per) >= 0).sum(1)
    if -(-d // per) == nb:
        np.testing.assert_array_equal(slots[:d], np.arange(d))
    else:
        assert sizes.max() - sizes.min() <= 1
    with pytest.raises(ValueError):
        book_slots(d, d + 1, per)


def test_wider_byte_codebooks_score_their_codewords() -> None:
    """36 byte positions over 128 dimensions (3 or 4 a byte): the LUT sums equal MaxSim over
    the codewords put back in their dimensions, and coding picks the nearest codeword."""
    d, nb, per = 128, 36, 4
    rng = np.random.default_rng(21)
    tok, off = _docs(d, seed=22)
    slots = book_slots(d, nb, per).reshape(nb, per)
    books = rng.standard_normal((nb, 256, per)).astype(np.float32)
    for p in range(nb):
        books[p][:, slots[p] < 0] = 0.0
    data = rng.integers(0, 256, size=(len(tok), nb)).astype(np.uint8)
    decoded = np.zeros((len(tok), d), np.float32)
    for p in range(nb):
        used = slots[p] >= 0
        decoded[:, slots[p][used]] = books[p][data[:, p]][:, used]
    q = rng.standard_normal((5, d)).astype(np.float32)
    cand = np.arange(len(off) - 1, dtype=np.int64)
    out = np.empty(len(cand), np.float32)
    ms.lut_maxsim(build_lut(q, books), data, off, cand, out)
    np.testing.assert_allclose(out, _ref(q, decoded, off, cand), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(encode_books(decoded, books), data)


@pytest.mark.parametrize("m", [0, 1, 16, 17, 40])
@pytest.mark.parametrize("k", [1, 8, 37])  # the kernel's 8-centroid body, its rest, both
def test_centroid_scores_equal_numpy_with_zero_padded_lanes(m: int, k: int) -> None:
    """`centroid_scores` is centroids @ q.T in a (K, lanes(m)) table, zero past the m
    query tokens."""
    rng = np.random.default_rng(m * 100 + k)
    c = rng.standard_normal((k, 13)).astype(np.float32)
    q = rng.standard_normal((m, 13)).astype(np.float32)
    got = ms.centroid_scores(c, q)
    assert got.shape == (k, ms.lanes(m)) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, :m], c @ q.T, rtol=1e-5, atol=1e-5)
    assert not got[:, m:].any()
    with pytest.raises(ValueError, match="disagree"):
        ms.centroid_scores(c, q[:, :5])


@pytest.mark.parametrize("m", [0, 1, 16, 17, 40])
@pytest.mark.parametrize("k", [1, 8, 37])
def test_bfloat16_centroid_scores_equal_numpy_on_the_rounded_centroids(m: int, k: int) -> None:
    """Centroids given as bfloat16 bits (uint16) score as their rounded float32 values do,
    within a few thousandths of the float32 scores for unit rows; to_bfloat16 rounds each
    value to the nearest bfloat16 (ties to even)."""
    rng = np.random.default_rng(m * 10 + k)
    c = rng.standard_normal((k, 13)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = rng.standard_normal((m, 13)).astype(np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
    c16 = ms.to_bfloat16(c)
    back = (c16.astype(np.uint32) << 16).view(np.float32)
    assert c16.dtype == np.uint16 and c16.shape == c.shape
    assert (np.abs(back - c) <= np.abs(c) * 2.0**-8).all()  # half a bfloat16 ulp (8 bits)
    got = ms.centroid_scores(c16, q)
    assert got.shape == (k, ms.lanes(m)) and not got[:, m:].any()
    np.testing.assert_allclose(got[:, :m], back @ q.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, :m], c @ q.T, atol=1e-2)
    # the ties: exactly halfway values go to the even neighbour
    halves = np.array([0x3F808000, 0x3F818000], np.uint32).view(np.float32)
    assert ms.to_bfloat16(halves).tolist() == [0x3F80, 0x3F82]


@pytest.mark.parametrize("n", [0, 1, 7, 50, 64])
def test_best_of_keeps_the_n_best_in_their_order_first_ties_first(n: int) -> None:
    """`best_of` keeps the n highest scores (of ties at the n-th, the first ones), in the
    candidates' own order; n >= len keeps everything."""
    rng = np.random.default_rng(n)
    cand = rng.permutation(1000)[:50].astype(np.int64)
    scores = rng.integers(0, 12, 50).astype(np.float32)  # many ties
    got_c, got_s = ms.best_of(cand, scores, n)
    order = np.argsort(-scores, kind="stable")[: min(n, 50)]  # first of equal scores first
    keep = np.sort(order)
    np.testing.assert_array_equal(got_c, cand[keep])
    np.testing.assert_array_equal(got_s, scores[keep])
