"""exact_topk against a dense numpy oracle, compared tie-aware."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from vecdb.kernels import distance, scan
from vecdb.kernels.distance import METRICS, normalize_rows
from vecdb.kernels.scan import exact_topk


@pytest.fixture(autouse=True, params=["direct", "direct-workers", "blas", "blas-workers"])
def scan_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test through each of the scan's code paths, whatever the problem size."""
    mode: str = request.param
    if mode.startswith("direct"):
        monkeypatch.setattr(scan, "_MIN_BLAS_WORK", 1 << 62)
    else:
        monkeypatch.setattr(scan, "_MIN_BLAS_WORK", 0)
        monkeypatch.setattr(scan, "_MIN_BLAS_QUERIES", 0)
    if mode.endswith("workers"):
        if numba.get_num_threads() < 2:
            pytest.skip("needs two numba threads")
        # One multiply-add per thread is enough: even tiny problems get split and merged.
        monkeypatch.setattr(distance, "MIN_WORK_PER_THREAD", 1)
    return mode


def _data(nq: int, n: int, d: int, metric: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if metric == "cosine":
        q, x = normalize_rows(q), normalize_rows(x)
    return q, x


def _oracle(metric: str, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        out: np.ndarray = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    else:
        out = -(q64 @ x64.T) if metric == "ip" else 1.0 - q64 @ x64.T
    return out


def _assert_tie_aware(
    ids: np.ndarray,
    d: np.ndarray,
    ref: np.ndarray,
    k: int,
    valid: np.ndarray | None = None,
    tol: float = 1e-4,
) -> None:
    """Same k-th distances as the oracle; any ids whose true distances match them are fine."""
    nq, n = ref.shape
    assert ids.shape == (nq, k) and d.shape == (nq, k)
    assert ids.dtype == np.int64 and d.dtype == np.float32
    allowed = np.ones(n, dtype=bool) if valid is None else valid
    ref = np.where(allowed[None, :], ref, np.inf)
    live = min(k, int(allowed.sum()))
    expected = np.sort(ref, axis=1)[:, :live]
    np.testing.assert_allclose(d[:, :live], expected, rtol=tol, atol=tol)
    assert (ids[:, live:] == -1).all() and np.isinf(d[:, live:]).all()
    for r in range(nq):
        row = ids[r, :live]
        assert len(set(row.tolist())) == live
        assert allowed[row].all()
        np.testing.assert_allclose(ref[r, row], d[r, :live], rtol=tol, atol=tol)
    assert (np.diff(d[:, :live], axis=1) >= 0).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", [1, 3, 17, 50, 129])
def test_exact_topk_matches_oracle(metric: str, d: int) -> None:
    """The k results are the k nearest rows, for every metric and odd dimensions."""
    q, x = _data(9, 300, d, metric)
    ids, dist = exact_topk(q, x, metric, 10)
    _assert_tie_aware(ids, dist, _oracle(metric, q, x), 10)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_topk_crosses_block_boundaries(metric: str) -> None:
    """Tiny blocks give the same answer as one block."""
    q, x = _data(4, 101, 7, metric)
    ids, dist = exact_topk(q, x, metric, 6, block_rows=8)
    _assert_tie_aware(ids, dist, _oracle(metric, q, x), 6)
    ids1, dist1 = exact_topk(q, x, metric, 6, block_rows=1)
    _assert_tie_aware(ids1, dist1, _oracle(metric, q, x), 6)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_topk_pads_when_k_exceeds_n(metric: str) -> None:
    """With fewer base rows than k every row is returned, then -1/+inf padding."""
    q, x = _data(3, 4, 5, metric)
    ids, dist = exact_topk(q, x, metric, 7)
    _assert_tie_aware(ids, dist, _oracle(metric, q, x), 7)
    assert (np.sort(ids[:, :4], axis=1) == np.arange(4)).all()


@pytest.mark.parametrize(("nq", "n"), [(0, 10), (3, 0), (0, 0)])
def test_exact_topk_handles_zero_rows(nq: int, n: int) -> None:
    """No queries or an empty base give correctly shaped, padded results."""
    q, x = _data(nq, n, 5, "l2")
    ids, dist = exact_topk(q, x, "l2", 3)
    assert ids.shape == (nq, 3) and dist.shape == (nq, 3)
    assert ids.dtype == np.int64 and dist.dtype == np.float32
    assert (ids == -1).all() and np.isinf(dist).all()


@pytest.mark.parametrize("metric", METRICS)
def test_exact_topk_with_duplicate_rows_is_tie_aware_correct(metric: str) -> None:
    """Exact copies tie; the result is tie-aware correct and holds no id twice."""
    q, x = _data(6, 40, 17, metric)
    x = np.repeat(x, 3, axis=0)  # rows 3i, 3i+1, 3i+2 are identical
    ids, dist = exact_topk(q, x, metric, 7)
    _assert_tie_aware(ids, dist, _oracle(metric, q, x), 7)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_topk_breaks_exact_ties_by_smaller_index(metric: str) -> None:
    """With exactly representable distances the order is the stable sort by (distance, index)."""
    rng = np.random.default_rng(5)
    # Small integers: every dot product and norm is exact in float32, so ties are real ties.
    q = rng.integers(-3, 4, size=(8, 5)).astype(np.float32)
    x = np.repeat(rng.integers(-3, 4, size=(30, 5)).astype(np.float32), 2, axis=0)
    ids, dist = exact_topk(q, x, metric, 9, block_rows=7)
    ref = _oracle(metric, q, x)
    order = np.argsort(ref, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(ref, order, axis=1))


@pytest.mark.parametrize("metric", METRICS)
def test_exact_topk_skips_invalid_rows(metric: str) -> None:
    """Rows with valid False never appear; the rest rank as if those rows were absent."""
    q, x = _data(5, 200, 11, metric)
    valid = np.random.default_rng(3).random(200) < 0.3
    ids, dist = exact_topk(q, x, metric, 8, valid=valid)
    _assert_tie_aware(ids, dist, _oracle(metric, q, x), 8, valid=valid)


def test_exact_topk_all_invalid_gives_padding() -> None:
    """A mask with no valid rows returns only padding."""
    q, x = _data(2, 30, 4, "ip")
    ids, dist = exact_topk(q, x, "ip", 3, valid=np.zeros(30, dtype=bool))
    assert (ids == -1).all() and np.isinf(dist).all()


@pytest.mark.parametrize("metric", METRICS)
def test_exact_topk_parallel_workers_agree_with_single_thread(metric: str) -> None:
    """A scan split over worker threads returns the single-threaded answer."""
    q, x = _data(200, 1500, 50, metric)  # large enough for two workers by default
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = exact_topk(q, x, metric, 10)
    finally:
        numba.set_num_threads(before)
    many = exact_topk(q, x, metric, 10)
    _assert_tie_aware(*many, _oracle(metric, q, x), 10)
    np.testing.assert_allclose(one[1], many[1], rtol=1e-6, atol=1e-6)


def test_exact_topk_uses_no_worker_threads_when_numba_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba.set_num_threads(1) keeps the whole scan on the calling thread."""

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("worker pool started")

    monkeypatch.setattr(distance, "ThreadPoolExecutor", no_pool)
    q, x = _data(64, 3000, 50, "ip")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        ids, dist = exact_topk(q, x, "ip", 5)
    finally:
        numba.set_num_threads(before)
    _assert_tie_aware(ids, dist, _oracle("ip", q, x), 5)


def test_exact_topk_restores_blas_threads() -> None:
    """The scan pins BLAS to one thread only while it runs."""
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    q, x = _data(50, 500, 20, "ip")
    exact_topk(q, x, "ip", 5)
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert before == after


def test_exact_topk_l2_distances_are_exact_for_near_duplicates() -> None:
    """Returned l2 distances are computed directly, not by the cancelling norm expansion."""
    x = np.full((3, 50), 100.0, dtype=np.float32)
    x[1, 0] += 0.001
    x[2, 0] += 0.002
    ids, dist = exact_topk(x[:1], x, "l2", 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2]])
    np.testing.assert_allclose(dist, [[0.0, 1e-6, 4e-6]], rtol=1e-2, atol=1e-9)


def test_exact_topk_validates_arguments() -> None:
    """Bad metric, k, block_rows, shapes and mask are ValueErrors naming the problem."""
    q, x = _data(2, 5, 3, "l2")
    with pytest.raises(ValueError, match="'manhattan'"):
        exact_topk(q, x, "manhattan", 1)
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(q, x, "l2", 0)
    with pytest.raises(ValueError, match="block_rows"):
        exact_topk(q, x, "l2", 1, block_rows=0)
    with pytest.raises(ValueError, match="expected"):
        exact_topk(q, x[:, :2], "l2", 1)
    with pytest.raises(ValueError, match="valid"):
        exact_topk(q, x, "l2", 1, valid=np.ones(4, dtype=bool))


@settings(max_examples=40, deadline=None)
@given(
    nq=st.integers(0, 5),
    n=st.integers(0, 60),
    d=st.integers(1, 40),
    k=st.integers(1, 12),
    block_rows=st.integers(1, 70),
    metric=st.sampled_from(METRICS),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_topk_any_shape(
    nq: int, n: int, d: int, k: int, block_rows: int, metric: str, masked: bool, seed: int
) -> None:
    """For any shape, block size and mask the result is the oracle's top-k."""
    q, x = _data(nq, n, d, metric, seed)
    valid = np.random.default_rng(seed).random(n) < 0.5 if masked else None
    ids, dist = exact_topk(q, x, metric, k, valid=valid, block_rows=block_rows)
    _assert_tie_aware(ids, dist, _oracle(metric, q, x), k, valid=valid)
