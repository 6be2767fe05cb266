"""The bounded rerank of a "bits" SPANN index (`rerank_eps`, issue 12): candidates keyed by
lower bounds of their distances, the exact rerank stopping at the first bound past the k-th
exact distance, warm and cold (O_DIRECT, two reads), single queries and batches alike, and
`bound_short` counting queries whose R candidates were too few for the bound (real files in
tmp_path, real numba kernels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_spann_support import clustered, prepare, recall

from vecdb.errors import InvalidArgument
from vecdb.index.spann import SpannIndex, open_spann
from vecdb.kernels.posting import METRIC_L2
from vecdb.kernels.rerank import exact_topk

BITS = {"vector_dtype": "bits", "threads": 1}
D = 256


def _index(path: Path, metric: str, io: str = "mmap") -> tuple[SpannIndex, np.ndarray]:
    x = prepare(clustered(6000, D, seed=3, centres=40, spread=0.5), metric)
    idx, _ = open_spann(D, metric, dict(BITS, io=io), path)
    if idx.state.n_live == 0:
        idx.build(np.arange(len(x)), x)
        idx.checkpoint(1)
    return idx, x


def test_rerank_kernel_stops_only_past_the_kth() -> None:
    """`exact_topk` with keys that are true lower bounds (the exact distance less a random
    slack), ascending: the same top k as scoring every candidate, from fewer rows; keys of
    0 (no information) score them all."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((500, 32)).astype(np.float32)
    q = rng.standard_normal((4, 32)).astype(np.float32)
    cand = np.stack([rng.permutation(500)[:200] for _ in range(4)]).astype(np.int64)
    exact = ((q[:, None, :] - rows[cand]) ** 2).sum(2)
    keys = (exact - rng.uniform(0, 2.0, exact.shape)).astype(np.float32)
    order = np.argsort(keys, 1)
    cand, keys = np.take_along_axis(cand, order, 1), np.take_along_axis(keys, order, 1)
    full_ids, full_d, n_full = exact_topk(q, cand, cand, rows, METRIC_L2, 10)
    ids, d, n = exact_topk(q, cand, cand, rows, METRIC_L2, 10, keys)
    np.testing.assert_array_equal(ids, full_ids)
    np.testing.assert_array_equal(d, full_d)
    assert n_full == 800 and n < n_full / 2
    zero = np.zeros_like(keys)
    assert exact_topk(q, cand, cand, rows, METRIC_L2, 10, zero)[2] == 800


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_bounded_rerank_reads_fewer_rows_at_the_same_recall(metric: str, tmp_path: Path) -> None:
    """rerank_eps 3 against every candidate re-ranked (rerank_eps 0, the default), R = 200:
    recall within 0.01, fewer rows re-ranked; single queries and the batch give the same
    answer; `bound_short` is counted only with a bound."""
    idx, x = _index(tmp_path, metric)
    q = prepare(clustered(60, D, seed=9, centres=40, spread=0.5), metric)
    base = dict(enumerate(x))
    plain = idx.search(q, 10, {"max_postings": 8, "rerank_k": 200})
    bound = idx.search(q, 10, {"max_postings": 8, "rerank_k": 200, "rerank_eps": 3.0})
    assert "bound_short" not in plain.stats.extra
    assert "bound_short" in bound.stats.extra
    assert plain.stats.extra["rerank_rows"] == 60 * 200
    assert bound.stats.extra["rerank_rows"] < 0.8 * plain.stats.extra["rerank_rows"]
    r0, r1 = recall(plain.slots, base, q, 10, metric), recall(bound.slots, base, q, 10, metric)
    assert r1 >= r0 - 0.01, (r0, r1)
    rows = 0.0
    for i in range(len(q)):
        one = idx.search(q[i : i + 1], 10, {"max_postings": 8, "rerank_k": 200, "rerank_eps": 3.0})
        np.testing.assert_array_equal(one.slots[0], bound.slots[i])
        np.testing.assert_array_equal(one.distances[0], bound.distances[i])
        rows += one.stats.extra["rerank_rows"]
    assert rows == bound.stats.extra["rerank_rows"]
    idx.close()


def test_cold_bounded_rerank_equals_warm(tmp_path: Path) -> None:
    """io=direct reads the first k candidates' rows, then only those of the rest whose
    bound is below the k-th exact distance among them: the warm answer exactly, from
    fewer row bytes than reading all R; re-searched (widened) queries alike."""
    idx, _ = _index(tmp_path, "l2")
    q = clustered(30, D, seed=5, centres=40, spread=0.5)
    p = {"max_postings": 8, "rerank_k": 300, "rerank_eps": 2.0}
    warm = idx.search(q, 10, p)
    narrow_p = {"max_postings": 8, "rerank_k": 10, "rerank_eps": 2.0}  # R = k, widened
    warm_narrow = idx.search(q, 10, narrow_p)
    idx.close()
    cold_idx, _ = _index(tmp_path, "l2", io="direct")
    cold = cold_idx.search(q, 10, p)
    np.testing.assert_array_equal(cold.slots, warm.slots)
    np.testing.assert_array_equal(cold.distances, warm.distances)
    # every row the warm rule scored was read (a phase-2 threshold below the k-th misses some)
    assert cold.stats.extra["rerank_rows"] == warm.stats.extra["rerank_rows"]
    every = cold_idx.search(q, 10, {"max_postings": 8, "rerank_k": 300})
    assert cold.stats.extra["rerank_bytes"] < 0.8 * every.stats.extra["rerank_bytes"]
    for i in range(3):
        one = cold_idx.search(q[i : i + 1], 10, p)
        np.testing.assert_array_equal(one.slots[0], warm.slots[i])
        # both reads counted: every row one query scored was read (its candidates are
        # distinct slots; a batch reads a row that several queries share once), each at
        # least a float16 row's bytes
        assert one.stats.extra["rerank_bytes"] >= one.stats.extra["rerank_rows"] * 2 * D
    narrow = cold_idx.search(q, 10, narrow_p)
    np.testing.assert_array_equal(narrow.slots, warm_narrow.slots)
    assert narrow.stats.extra["bound_widened"] == warm_narrow.stats.extra["bound_widened"] > 0
    cold_idx.close()


def test_short_queries_are_searched_again_with_more_candidates(tmp_path: Path) -> None:
    """R = k leaves every query's R-th bound below its k-th exact distance: each is
    searched again with 4x then 16x the candidates (`bound_widened` counts the re-searches,
    `bound_short` those still short), for a recall far above R = k without the bound; a
    single query gets the batch's answer; R = 400 on clustered data re-searches few."""
    idx, x = _index(tmp_path, "l2")
    q = clustered(40, D, seed=7, centres=40, spread=0.5)
    base = dict(enumerate(x))
    p = {"max_postings": 8, "rerank_k": 10, "rerank_eps": 2.0}
    tight = idx.search(q, 10, p)
    plain = idx.search(q, 10, {"max_postings": 8, "rerank_k": 10})
    extra = tight.stats.extra
    assert (
        40 <= extra["bound_widened"] <= 80 and extra["bound_short"] <= extra["bound_widened"] - 40
    )
    assert tight.stats.queries == 40 and tight.stats.postings_read > plain.stats.postings_read
    assert recall(tight.slots, base, q, 10, "l2") >= recall(plain.slots, base, q, 10, "l2") + 0.1
    for i in (0, 17, 39):
        one = idx.search(q[i : i + 1], 10, p)
        np.testing.assert_array_equal(one.slots[0], tight.slots[i])
        assert one.stats.extra["bound_widened"] >= 1
    wide = idx.search(q, 10, {"max_postings": 8, "rerank_k": 400, "rerank_eps": 2.0})
    assert wide.stats.extra.get("bound_widened", 0.0) <= 4
    idx.close()


@pytest.mark.parametrize("value", [-0.5, 101.0, "2", float("nan")])
def test_bad_rerank_eps_is_refused(value: object, tmp_path: Path) -> None:
    """A value outside [0, 100] or not a number is refused naming the field (and a valid one
    is taken, so the refusal is the check's, not an unknown parameter's)."""
    idx, _ = _index(tmp_path, "l2")
    with pytest.raises(InvalidArgument, match="rerank_eps must be") as info:
        idx.search(np.zeros((1, D), np.float32), 10, {"rerank_eps": value})
    assert info.value.field == "params.rerank_eps"
    assert idx.search(np.zeros((1, D), np.float32), 10, {"rerank_eps": 100.0}).slots.shape == (
        1,
        10,
    )
    idx.close()
