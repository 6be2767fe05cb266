"""Tie-aware recall and the latency / QPS helpers of vecdb.bench.metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vecdb.bench.metrics import recall_at_k, time_batch, time_latency, true_distances

# Points on a line; the query sits at 0, so ids 0 and 1 tie at distance 1.
BASE = np.array([[1.0], [-1.0], [2.0], [3.0], [-4.0]], dtype=np.float32)
QUERY = np.array([[0.0]], dtype=np.float32)
GT = np.array([[0, 1, 2, 3, 4]], dtype=np.int64)


def recall(found: list[list[int]], k: int, gt: np.ndarray = GT) -> float:
    return recall_at_k(BASE, QUERY, "l2", gt, np.array(found, dtype=np.int64), k)


def test_exact_answer_scores_one() -> None:
    """Returning the ground truth itself gives recall 1 at every k."""
    assert recall([[0, 1, 2]], 1) == 1.0
    assert recall([[0, 1, 2]], 3) == 1.0


def test_tied_neighbour_counts_as_correct() -> None:
    """An id at the same distance as the k-th true neighbour counts, whichever the GT listed."""
    assert recall([[1]], 1) == 1.0
    assert recall([[1, 0]], 1) == 1.0


def test_farther_neighbour_does_not_count() -> None:
    """An id beyond the k-th true distance scores zero."""
    assert recall([[2]], 1) == 0.0
    assert recall([[0, 3]], 2) == 0.5


def test_duplicates_and_padding_are_not_counted() -> None:
    """The same id twice counts once; -1 padding and out-of-range ids never count."""
    assert recall([[0, 0]], 2) == 0.5
    assert recall([[0, -1]], 2) == 0.5
    assert recall([[0, 99]], 2) == 0.5


def test_recall_is_mean_over_queries() -> None:
    """Recall averages the per-query fractions."""
    queries = np.array([[0.0], [2.9]], dtype=np.float32)
    gt = np.array([[0, 1], [3, 2]], dtype=np.int64)
    found = np.array([[0, 2], [3, 2]], dtype=np.int64)
    assert recall_at_k(BASE, queries, "l2", gt, found, 2) == pytest.approx(0.75)


def test_tie_within_float_tolerance_counts_for_inner_product() -> None:
    """Cosine distances equal up to float32 rounding are treated as a tie."""
    a = np.array([0.6, 0.8], dtype=np.float32)
    b = np.array([0.8, 0.6], dtype=np.float32)
    base = np.stack([a, b, -a]).astype(np.float32)
    q = (np.array([[1.0, 1.0]]) / np.sqrt(2.0)).astype(np.float32)
    gt = np.array([[0, 1, 2]], dtype=np.int64)
    assert recall_at_k(base, q, "cosine", gt, np.array([[1]]), 1) == 1.0
    assert recall_at_k(base, q, "cosine", gt, np.array([[2]]), 1) == 0.0


def test_true_distances_follow_vecdb_conventions() -> None:
    """Squared L2, negative inner product and 1 - cosine; invalid ids give +inf."""
    base = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 1.0]], dtype=np.float32)
    ids = np.array([[0, 1, -1]], dtype=np.int64)
    np.testing.assert_allclose(true_distances(base, q, ids, "l2")[0, :2], [1.0, 2.0])
    np.testing.assert_allclose(true_distances(base, q, ids, "ip")[0, :2], [-1.0, -2.0])
    np.testing.assert_allclose(true_distances(base, q, ids, "cosine")[0, :2], [0.0, -1.0])
    assert np.isinf(true_distances(base, q, ids, "l2")[0, 2])


def test_timers_report_positive_rates_and_percentiles() -> None:
    """time_batch gives positive QPS; time_latency orders p50 <= p99 <= p99.9."""
    queries = np.zeros((20, 4), dtype=np.float32)

    def search(q: np.ndarray, k: int) -> np.ndarray:
        return np.zeros((len(q), k), dtype=np.int64)

    timing = time_batch(search, queries, 5, repeats=3, budget_s=5.0)
    assert timing.repeats == 3 and timing.qps_wall > 0 and timing.qps_cpu > 0
    lat = time_latency(search, queries, 5, budget_s=5.0)
    assert lat["latency_n"] == 20
    assert lat["latency_p50_ms"] <= lat["latency_p99_ms"] <= lat["latency_p999_ms"]


def test_latency_leaves_out_a_slow_first_call() -> None:
    """A search whose first call is slow (a kernel compiling) does not count that call, nor
    does it eat the budget: every query is timed and the percentiles are the fast calls'."""
    queries = np.zeros((10, 4), dtype=np.float32)
    calls = []

    def search(q: np.ndarray, k: int) -> np.ndarray:
        if not calls:
            time.sleep(0.5)
        calls.append(1)
        return np.zeros((len(q), k), dtype=np.int64)

    lat = time_latency(search, queries, 5, budget_s=0.3)
    assert lat["latency_n"] == 10 and lat["latency_p999_ms"] < 100
