"""The one-pass cell probe and the padded lookup tables against numpy references."""

from __future__ import annotations

import numpy as np
import pytest

import vecdb.kernels.maxsim as ms
from vecdb.index.multivector.additive import additive_lut
from vecdb.kernels.bitpack import build_lut, pack_codes, row_bytes


@pytest.mark.parametrize("k", [1, 5, 300])
@pytest.mark.parametrize("m", [1, 3, 12])
@pytest.mark.parametrize("nprobe", [1, 2, 7])
def test_probe_cells_equals_argpartition_and_column_max(k: int, m: int, nprobe: int) -> None:
    """The cells are the unique top-nprobe of every query token (ascending), lanes past m are
    ignored, and keep flags the centroids whose best query score reaches tau."""
    rng = np.random.default_rng(k * 100 + m * 10 + nprobe)
    width = ms.lanes(m)
    skq = np.zeros((k, width), np.float32)
    skq[:, :m] = rng.standard_normal((k, m))
    skq[:, m:] = 50.0  # padded lanes must not be probed nor count for tau
    keep = np.empty(k, np.bool_)
    cells = ms.probe_cells(skq, m, nprobe, 0.5, keep)
    n = min(nprobe, k)
    want = np.unique(np.argsort(-skq[:, :m].T, axis=1, kind="stable")[:, :n])
    np.testing.assert_array_equal(cells, want)
    np.testing.assert_array_equal(keep, skq[:, :m].max(axis=1) >= 0.5)
    again = ms.probe_cells(skq, m, nprobe, 0.5, keep)  # scratch flags are left clear
    np.testing.assert_array_equal(again, cells)


@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("nprobe", [1, 4, 30])
def test_an_allowed_mask_probes_only_those_cells(m: int, nprobe: int) -> None:
    """With `allowed`, each token's best cells are its best among the allowed ones (fewer
    than nprobe allowed: -1 past them), and keep is still set for every centroid."""
    rng = np.random.default_rng(m * 7 + nprobe)
    k = 64
    skq = np.zeros((k, ms.lanes(m)), np.float32)
    skq[:, :m] = rng.standard_normal((k, m))
    allowed = rng.random(k) < 0.3
    keep = np.empty(k, np.bool_)
    cells, topv, topi = ms.probe_token_cells(skq, m, nprobe, 0.5, keep, allowed)
    np.testing.assert_array_equal(keep, skq[:, :m].max(axis=1) >= 0.5)
    ok = np.flatnonzero(allowed)
    n = min(nprobe, len(ok))
    want = ok[np.argsort(-skq[ok, :m].T, axis=1, kind="stable")[:, :n]]
    np.testing.assert_array_equal(topi[:, :n], want)
    assert (topi[:, n:] == -1).all()
    np.testing.assert_array_equal(cells, np.unique(want))
    with pytest.raises(ValueError, match="allowed"):
        ms.probe_cells(skq, m, nprobe, 0.5, keep, allowed[:-1])


def test_probe_cells_of_no_query_tokens_is_empty() -> None:
    """A query with no tokens probes no cell and keeps no code."""
    keep = np.ones(4, np.bool_)
    cells = ms.probe_cells(np.ones((4, 16), np.float32), 0, 2, 0.0, keep)
    assert cells.shape == (0,) and cells.dtype == np.int64 and not keep.any()


def test_probe_cells_rejects_more_tokens_than_lanes() -> None:
    """m must fit the table's lanes, and keep must have one flag per centroid."""
    skq = np.zeros((4, 16), np.float32)
    with pytest.raises(ValueError, match="disagree"):
        ms.probe_cells(skq, 17, 1, 0.0, np.empty(4, np.bool_))
    with pytest.raises(ValueError, match="disagree"):
        ms.probe_cells(skq, 3, 1, 0.0, np.empty(5, np.bool_))


@pytest.mark.parametrize("d", [1, 7, 128])
@pytest.mark.parametrize("width", [0, 16, 32])
def test_padded_lut_equals_the_plain_table_and_zero_lanes(d: int, width: int) -> None:
    """build_lut and additive_lut with a width: the plain table in the first m lanes, zeros
    after, for product and additive codebooks."""
    rng = np.random.default_rng(d + width)
    m = 12 if d > 1 else 3
    q = rng.standard_normal((m, d)).astype(np.float32)
    books = rng.standard_normal((row_bytes(d, 2), 256, 4)).astype(np.float32)
    for lut_of, bk in ((build_lut, books), (additive_lut, books[:, :, :1].repeat(d, axis=2))):
        plain = lut_of(q, bk)
        wide = lut_of(q, bk, width)
        assert wide.shape == (bk.shape[0], 256, max(width, m)) and wide.flags.c_contiguous
        np.testing.assert_allclose(wide[:, :, :m], plain, rtol=1e-5, atol=1e-5)
        assert not wide[:, :, m:].any()


def test_padded_residual_tables_score_like_unpadded_ones() -> None:
    """residual_maxsim given tables already padded to `lanes(m)` (no copy) scores as given
    unpadded ones."""
    rng = np.random.default_rng(3)
    k, m = 9, 5
    sizes = rng.integers(0, 30, size=40)
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(off[-1])
    lut = rng.standard_normal((4, 256, m)).astype(np.float32)
    skq = rng.standard_normal((k, m)).astype(np.float32)
    data = rng.integers(0, 256, size=(n, 4)).astype(np.uint8)
    bits = 4
    packed = pack_codes(rng.integers(0, k, size=n), bits)
    cand = rng.permutation(40).astype(np.int64)
    want = np.empty(40, np.float32)
    ms.residual_maxsim(lut, data, off, cand, want, skq, packed, bits)
    w = ms.lanes(m)
    lut_w = np.zeros((4, 256, w), np.float32)
    lut_w[:, :, :m] = lut
    skq_w = np.zeros((k, w), np.float32)
    skq_w[:, :m] = skq
    got = np.empty(40, np.float32)
    ms.residual_maxsim(lut_w, data, off, cand, got, skq_w, packed, bits)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("m", [1, 5, 12])
@pytest.mark.parametrize("nprobe", [1, 3])
def test_probe_scores_equal_a_loop_over_each_tokens_cells(m: int, nprobe: int) -> None:
    """The documents are those of any token's probed cells (dead ones left out, each once),
    and each one's score is, per query token, its best probed cell score or else the token's
    lowest probed score."""
    rng = np.random.default_rng(m * 10 + nprobe)
    k, n_docs = 40, 60
    width = ms.lanes(m)
    skq = np.zeros((k, width), np.float32)
    skq[:, :m] = rng.standard_normal((k, m))
    cells_of = [rng.choice(k, size=rng.integers(1, 4), replace=False) for _ in range(n_docs)]
    members = [[d for d in range(n_docs) if c in cells_of[d]] for c in range(k)]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in members])]).astype(np.int64)
    docs = np.concatenate([np.asarray(x, np.int32) for x in members])
    alive = rng.random(n_docs) > 0.2
    keep = np.empty(k, np.bool_)
    cells, topv, topi = ms.probe_token_cells(skq, m, nprobe, 0.0, keep)
    np.testing.assert_array_equal(cells, ms.probe_cells(skq, m, nprobe, 0.0, keep))
    np.testing.assert_allclose(topv, np.take_along_axis(skq[:, :m].T, topi, axis=1))
    stamp = np.full(n_docs, -1, np.int64)
    cand, score = ms.probe_scores(
        skq, topv, topi, indptr, docs, alive, stamp, 0, np.empty(n_docs, np.int64)
    )
    want: dict[int, float] = {}
    for d in range(n_docs):
        hit = [set(topi[i]) & set(cells_of[d]) for i in range(m)]
        if not alive[d] or not any(hit):
            continue
        want[d] = sum(max(skq[c, i] for c in hit[i]) if hit[i] else topv[i, -1] for i in range(m))
    assert sorted(cand.tolist()) == sorted(want) and len(set(cand.tolist())) == len(cand)
    np.testing.assert_allclose(score, [want[d] for d in cand.tolist()], rtol=1e-5, atol=1e-5)
