"""Distance kernels against one-line numpy references."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from vecdb.kernels import distance
from vecdb.kernels.distance import (
    METRICS,
    dot,
    l2_sq,
    normalize_rows,
    pairwise,
    parallel_ranges,
)

DIMS = [1, 3, 17, 50, 129]


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def kernel_variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test through both the serial and the prange variant of each kernel."""
    mode: str = request.param
    monkeypatch.setattr(distance, "_PARALLEL_MIN_WORK", 0 if mode == "parallel" else 1 << 62)
    return mode


def _data(nq: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    return xq, xb


def _ref(metric: str, xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    q = xq.astype(np.float64)
    b = xb.astype(np.float64)
    if metric == "l2":
        out: np.ndarray = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    else:
        out = -(q @ b.T) if metric == "ip" else 1.0 - q @ b.T
    return out


@pytest.mark.parametrize("d", DIMS)
def test_l2_sq_matches_numpy(d: int) -> None:
    """l2_sq writes squared Euclidean distances for every query/base pair."""
    xq, xb = _data(7, 13, d)
    out = np.empty((7, 13), dtype=np.float32)
    l2_sq(xq, xb, out)
    np.testing.assert_allclose(out, ((xq[:, None] - xb[None]) ** 2).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("d", DIMS)
def test_dot_matches_numpy(d: int) -> None:
    """dot writes inner products for every query/base pair."""
    xq, xb = _data(7, 13, d)
    out = np.empty((7, 13), dtype=np.float32)
    dot(xq, xb, out)
    np.testing.assert_allclose(out, xq @ xb.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("nq", "n"), [(0, 5), (5, 0), (0, 0)])
def test_out_kernels_accept_zero_rows(nq: int, n: int) -> None:
    """l2_sq and dot accept empty query or base matrices."""
    xq, xb = _data(nq, n, 3)
    out = np.empty((nq, n), dtype=np.float32)
    l2_sq(xq, xb, out)
    dot(xq, xb, out)
    assert out.shape == (nq, n)


def test_out_kernels_reject_bad_out() -> None:
    """A wrongly shaped or typed out array is a ValueError, not memory corruption."""
    xq, xb = _data(2, 3, 4)
    with pytest.raises(ValueError, match="out"):
        l2_sq(xq, xb, np.empty((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="out"):
        dot(xq, xb, np.empty((2, 3), dtype=np.float64))
    with pytest.raises(ValueError, match="xq"):
        dot(np.asfortranarray(_data(2, 3, 4)[0]), xb, np.empty((2, 3), dtype=np.float32))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("nq", "n", "d"), [(3, 5, 1), (4, 9, 17), (200, 700, 50)])
def test_pairwise_matches_numpy(metric: str, nq: int, n: int, d: int) -> None:
    """pairwise gives smaller-is-better distances on both the numba and the BLAS path."""
    xq, xb = _data(nq, n, d)
    if metric == "cosine":
        xq, xb = normalize_rows(xq), normalize_rows(xb)
    got = pairwise(metric, xq, xb)
    assert got.dtype == np.float32
    assert got.shape == (nq, n)
    np.testing.assert_allclose(got, _ref(metric, xq, xb), rtol=1e-4, atol=1e-4)


def test_pairwise_blas_path_self_distance_is_zero_and_l2_never_negative() -> None:
    """On the BLAS path identical rows give ~0 and the l2 expansion is clamped at 0."""
    x = normalize_rows(_data(300, 0, 50)[0])  # 300 * 300 * 50 is above the BLAS threshold
    for metric in ("l2", "cosine"):
        assert np.abs(np.diag(pairwise(metric, x, x))).max() < 1e-5
    assert (pairwise("l2", x, x) >= 0).all()


@settings(max_examples=40, deadline=None)
@given(
    nq=st.integers(0, 6),
    n=st.integers(0, 40),
    d=st.integers(1, 70),
    metric=st.sampled_from(METRICS),
    seed=st.integers(0, 2**16),
)
def test_pairwise_shapes(nq: int, n: int, d: int, metric: str, seed: int) -> None:
    """Any shape, including empty ones, gives a correct (nq, n) float32 matrix."""
    xq, xb = _data(nq, n, d, seed)
    got = pairwise(metric, xq, xb)
    assert got.shape == (nq, n)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _ref(metric, xq, xb), rtol=1e-4, atol=1e-4)


def test_pairwise_rejects_unknown_metric() -> None:
    """An unknown metric is a ValueError that names it."""
    xq, xb = _data(1, 1, 2)
    with pytest.raises(ValueError, match="'hamming'"):
        pairwise("hamming", xq, xb)


def test_pairwise_rejects_dimension_mismatch() -> None:
    """Query and base dimensions must agree."""
    with pytest.raises(ValueError, match="expected"):
        pairwise("l2", _data(1, 0, 2)[0], _data(1, 0, 3)[0])


@pytest.mark.parametrize("d", DIMS)
def test_normalize_rows_gives_unit_rows_and_keeps_zero_rows(d: int) -> None:
    """Rows get unit norm, zero rows stay zero, and the input is not modified."""
    x = _data(6, 0, d)[0].astype(np.float64) * 1e3
    x[2] = 0.0
    before = x.copy()
    y = normalize_rows(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), [1, 1, 0, 1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(
        y, x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300), rtol=1e-5, atol=1e-7
    )


def test_normalize_rows_survives_extreme_magnitudes() -> None:
    """Rows whose squared norm overflows or underflows float32 still come out unit length."""
    x = np.array([[3e30, 4e30], [3e-30, 4e-30]], dtype=np.float32)
    np.testing.assert_allclose(normalize_rows(x), [[0.6, 0.8], [0.6, 0.8]], rtol=1e-6)


def test_normalize_rows_accepts_empty() -> None:
    """An empty matrix normalises to an empty float32 matrix."""
    assert normalize_rows(np.zeros((0, 5), dtype=np.float32)).shape == (0, 5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("workers", [False, True])
def test_pairwise_blas_path_matches_numpy(
    metric: str, workers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BLAS path, on the caller or split over worker threads, matches numpy."""
    monkeypatch.setattr(distance, "_BLAS_MIN_WORK", 0)
    if workers:
        monkeypatch.setattr(distance, "MIN_WORK_PER_THREAD", 1)
    xq, xb = _data(9, 31, 17)
    if metric == "cosine":
        xq, xb = normalize_rows(xq), normalize_rows(xb)
    np.testing.assert_allclose(pairwise(metric, xq, xb), _ref(metric, xq, xb), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("nrows", [0, 1, 2, 7])
def test_parallel_ranges_covers_rows_in_order(nrows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices are consecutive, non-empty when rows exist, and results come back in order."""
    monkeypatch.setattr(distance, "MIN_WORK_PER_THREAD", 1)
    got = parallel_ranges(nrows, 10**9, lambda lo, hi: (lo, hi))
    assert got[0][0] == 0 and got[-1][1] == nrows
    assert all(a[1] == b[0] for a, b in zip(got, got[1:], strict=False))
    assert len(got) <= max(1, min(nrows, numba.get_num_threads()))


def test_blas_thread_setting_is_restored_after_pairwise() -> None:
    """pairwise pins BLAS to one thread only while it runs."""
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    xq, xb = _data(300, 300, 50)
    pairwise("ip", xq, xb)
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert before == after
