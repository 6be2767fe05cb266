"""Top-k selection and merging against numpy sort references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.kernels import topk
from vecdb.kernels.topk import merge_topk, topk_rows


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def kernel_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test through both the serial and the prange variant of each kernel."""
    mode: str = request.param
    monkeypatch.setattr(topk, "_PARALLEL_MIN_ENTRIES", 0 if mode == "parallel" else 1 << 62)
    return mode


def _ref_topk(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: stable sort by (distance, index), NaN excluded, padded with -1/+inf."""
    nq, n = dist.shape
    ids = np.full((nq, k), -1, dtype=np.int64)
    out = np.full((nq, k), np.inf, dtype=np.float32)
    for r in range(nq):
        keep = np.flatnonzero(~np.isnan(dist[r]))
        order = keep[np.argsort(dist[r, keep], kind="stable")][:k]
        ids[r, : len(order)] = order
        out[r, : len(order)] = dist[r, order]
    return ids, out


@pytest.mark.parametrize(("nq", "n", "k"), [(5, 100, 10), (3, 7, 7), (4, 1, 1), (2, 50, 1)])
def test_topk_rows_matches_argsort(nq: int, n: int, k: int) -> None:
    """Each row holds its k smallest distances in ascending order."""
    dist = np.random.default_rng(0).random((nq, n), dtype=np.float32)
    ids, d = topk_rows(dist, k)
    assert ids.dtype == np.int64 and d.dtype == np.float32
    ref_ids, ref_d = _ref_topk(dist, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(d, ref_d)


def test_topk_rows_breaks_ties_by_smaller_index() -> None:
    """Among equal distances the smaller column index comes first and wins the cut."""
    dist = np.random.default_rng(1).integers(0, 4, size=(20, 60)).astype(np.float32)
    ids, d = topk_rows(dist, 9)
    ref_ids, ref_d = _ref_topk(dist, 9)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(d, ref_d)


def test_topk_rows_pads_when_k_exceeds_n() -> None:
    """With fewer columns than k the tail is index -1 at +inf."""
    dist = np.array([[3.0, 1.0, 2.0]], dtype=np.float32)
    ids, d = topk_rows(dist, 5)
    np.testing.assert_array_equal(ids, [[1, 2, 0, -1, -1]])
    np.testing.assert_array_equal(d, [[1.0, 2.0, 3.0, np.inf, np.inf]])


def test_topk_rows_keeps_infinite_distances_before_padding() -> None:
    """A real column at +inf is a result; only missing columns are padded with -1."""
    dist = np.array([[np.inf, 1.0]], dtype=np.float32)
    ids, d = topk_rows(dist, 3)
    np.testing.assert_array_equal(ids, [[1, 0, -1]])
    np.testing.assert_array_equal(d, [[1.0, np.inf, np.inf]])


def test_topk_rows_never_selects_nan() -> None:
    """NaN distances are skipped, not ranked."""
    dist = np.array([[np.nan, 2.0, np.nan, 1.0]], dtype=np.float32)
    ids, d = topk_rows(dist, 3)
    np.testing.assert_array_equal(ids, [[3, 1, -1]])
    np.testing.assert_array_equal(d, [[1.0, 2.0, np.inf]])


@pytest.mark.parametrize(("nq", "n"), [(0, 10), (3, 0), (0, 0)])
def test_topk_rows_handles_empty_inputs(nq: int, n: int) -> None:
    """Empty matrices give (nq, k) results, all padding when n is 0."""
    ids, d = topk_rows(np.zeros((nq, n), dtype=np.float32), 4)
    assert ids.shape == (nq, 4) and d.shape == (nq, 4)
    assert (ids == -1).all() and np.isinf(d).all()


def test_topk_rows_rejects_k_below_one() -> None:
    """k must be at least 1."""
    with pytest.raises(ValueError, match="k must be"):
        topk_rows(np.zeros((1, 3), dtype=np.float32), 0)


@settings(max_examples=60, deadline=None)
@given(
    nq=st.integers(0, 5),
    n=st.integers(0, 80),
    k=st.integers(1, 12),
    levels=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_topk_rows_any_shape(nq: int, n: int, k: int, levels: int, seed: int) -> None:
    """Exact match with the stable-sort reference for any shape and tie density."""
    dist = np.random.default_rng(seed).integers(0, levels, size=(nq, n)).astype(np.float32)
    ids, d = topk_rows(dist, k)
    ref_ids, ref_d = _ref_topk(dist, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(d, ref_d)


def _ref_merge(
    ia: np.ndarray, da: np.ndarray, ib: np.ndarray, db: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    nq = ia.shape[0]
    ids = np.full((nq, k), -1, dtype=np.int64)
    out = np.full((nq, k), np.inf, dtype=np.float32)
    for r in range(nq):
        best: dict[int, float] = {}
        for i, dv in zip([*ia[r], *ib[r]], [*da[r], *db[r]], strict=True):
            if i >= 0:
                best[int(i)] = min(best.get(int(i), np.inf), float(dv))
        items = sorted(best.items(), key=lambda t: (t[1], t[0]))[:k]
        for c, (i, dv) in enumerate(items):
            ids[r, c] = i
            out[r, c] = dv
    return ids, out


def _sorted_list(
    rng: np.random.Generator, nq: int, kk: int, live: int, pool: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ascending top lists over ids drawn from a small pool, padded after `live`."""
    ids = np.full((nq, kk), -1, dtype=np.int64)
    d = np.full((nq, kk), np.inf, dtype=np.float32)
    for r in range(nq):
        m = min(live, kk, pool)
        chosen = rng.choice(pool, size=m, replace=False)
        dist = rng.integers(0, 6, size=m).astype(np.float32)
        order = np.lexsort((chosen, dist))
        ids[r, :m] = chosen[order]
        d[r, :m] = dist[order]
    return ids, d


def test_merge_topk_keeps_duplicate_once_at_smaller_distance() -> None:
    """An id in both lists appears once, with the smaller of its two distances."""
    ia = np.array([[1, 2, -1]])
    da = np.array([[0.1, 0.5, np.inf]], dtype=np.float32)
    ib = np.array([[2, 3]])
    db = np.array([[0.2, 0.3]], dtype=np.float32)
    ids, d = merge_topk(ia, da, ib, db, 4)
    np.testing.assert_array_equal(ids, [[1, 2, 3, -1]])
    np.testing.assert_allclose(d, [[0.1, 0.2, 0.3, np.inf]])


def test_merge_topk_truncates_to_k() -> None:
    """Only the k best of the union are kept."""
    ia = np.array([[0, 2]])
    da = np.array([[1.0, 3.0]], dtype=np.float32)
    ib = np.array([[1, 3]])
    db = np.array([[2.0, 4.0]], dtype=np.float32)
    ids, d = merge_topk(ia, da, ib, db, 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2]])
    np.testing.assert_array_equal(d, [[1.0, 2.0, 3.0]])


def test_merge_topk_handles_empty_inputs() -> None:
    """Zero queries or zero-width lists give correctly shaped, padded output."""
    e_i = np.zeros((0, 3), dtype=np.int64)
    e_d = np.zeros((0, 3), dtype=np.float32)
    ids, d = merge_topk(e_i, e_d, e_i, e_d, 2)
    assert ids.shape == (0, 2) and d.shape == (0, 2)
    w_i = np.zeros((2, 0), dtype=np.int64)
    w_d = np.zeros((2, 0), dtype=np.float32)
    ids, d = merge_topk(w_i, w_d, w_i, w_d, 2)
    assert (ids == -1).all() and np.isinf(d).all()


def test_merge_topk_rejects_mismatched_rows() -> None:
    """Lists for different query counts cannot be merged."""
    a_i = np.zeros((2, 1), dtype=np.int64)
    a_d = np.zeros((2, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="row counts"):
        merge_topk(a_i, a_d, a_i[:1], a_d[:1], 1)


@settings(max_examples=60, deadline=None)
@given(
    nq=st.integers(0, 4),
    ka=st.integers(0, 10),
    kb=st.integers(0, 10),
    live_a=st.integers(0, 10),
    live_b=st.integers(0, 10),
    pool=st.integers(1, 15),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_merge_topk_matches_dict_model(
    nq: int, ka: int, kb: int, live_a: int, live_b: int, pool: int, k: int, seed: int
) -> None:
    """Merging equals a dict of id -> min distance sorted by (distance, id)."""
    rng = np.random.default_rng(seed)
    ia, da = _sorted_list(rng, nq, ka, live_a, pool)
    ib, db = _sorted_list(rng, nq, kb, live_b, pool)
    ids, d = merge_topk(ia, da, ib, db, k)
    ref_ids, ref_d = _ref_merge(ia, da, ib, db, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(d, ref_d)


def test_merge_topk_large_k_with_overlap_and_huge_ids() -> None:
    """Thousands of entries with many shared, huge ids merge like the dict model, fast."""
    rng = np.random.default_rng(7)
    pool = rng.choice(2**62, size=6000, replace=False).astype(np.int64)

    def side(m: int) -> tuple[np.ndarray, np.ndarray]:
        ids = rng.choice(pool, size=(3, m), replace=True)
        d = rng.random((3, m), dtype=np.float32)
        order = np.lexsort((ids, d), axis=1)
        return np.take_along_axis(ids, order, 1), np.take_along_axis(d, order, 1)

    ia, da = side(4000)
    ib, db = side(5000)
    ids, d = merge_topk(ia, da, ib, db, 6000)
    ref_ids, ref_d = _ref_merge(ia, da, ib, db, 6000)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(d, ref_d)
