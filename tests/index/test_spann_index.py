"""SPANN index behaviour against the exact oracle: recall after build, inserts with splits,
removes with clean-up and compaction and reopen; metrics; no orphan vectors and a consistent
clustering tree under any update sequence (property test); params."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_spann_support import (
    SMALL,
    assert_no_orphans,
    assert_tree_consistent,
    clustered,
    prepare,
    recall,
)

from vecdb.errors import InvalidArgument
from vecdb.index.spann import open_spann

N, D, K = 20_000, 32, 10


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A bulk-built index of 20,000 x 32 clustered vectors (shared, read-only tests only)."""
    directory = tmp_path_factory.mktemp("spann")
    x = clustered(N, D, seed=1)
    idx, seq = open_spann(D, "l2", {"threads": 2}, directory)
    assert seq == 0
    idx.build(np.arange(N), x)
    idx.checkpoint(1)
    yield idx, x, directory
    idx.close()


def test_recall_after_bulk_build(built) -> None:  # type: ignore[no-untyped-def]
    """Default search params reach high recall; more postings never lose recall."""
    idx, x, _ = built
    q = clustered(200, D, seed=2)
    base = dict(enumerate(x))
    res = [idx.search(q, K, {"max_postings": m}) for m in (2, 8, 48)]
    r = [recall(x.slots, base, q, K, "l2") for x in res]
    assert r[0] < r[1] < r[2] and r[1] >= 0.9 and r[2] >= 0.99, r
    stats = res[2].stats.as_dict()
    assert stats["postings_read_per_query"] <= 48 and stats["bytes_read"] > 0
    assert res[0].stats.postings_read < res[2].stats.postings_read  # per call, not shared


def test_index_stats_describe_the_build(built) -> None:  # type: ignore[no-untyped-def]
    """Stats report heads, postings, replicas and memory; every vector has a copy."""
    idx, _, _ = built
    s = idx.stats()
    assert s["vectors"] == N and 0.02 * N < s["heads"] < 0.1 * N
    assert s["posting_size_max"] <= s["posting_limit"] + 8
    assert 1.0 <= s["replicas_per_vector"] <= 8.0
    assert 0 < s["resident_bytes_estimate"] < 2 * N * D * 4  # hnswlib has 2.6 MB fixed
    # int8 heads by default: a byte a component and a 4-byte scale, plus links and labels
    assert s["head_vectors"] == "int8" and s["heads"] * (D + 4) < s["head_graph_bytes"]
    assert s["head_graph_bytes"] < s["resident_bytes_estimate"]
    assert_no_orphans(idx, set(range(N)))
    assert_tree_consistent(idx, set(range(N)))


def test_reopen_gives_identical_results(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A checkpointed index reopens with its applied sequence and the same answers."""
    idx, _, directory = built
    q = clustered(50, D, seed=3)
    before = idx.search(q, K)
    again, seq = open_spann(D, "l2", {}, directory)
    assert seq == 1
    after = again.search(q, K)
    np.testing.assert_array_equal(before.slots, after.slots)
    np.testing.assert_allclose(before.distances, after.distances)
    assert_tree_consistent(again, set(range(N)))
    again.close()


def test_inserts_that_force_splits_keep_recall(tmp_path: Path) -> None:
    """Online inserts into new regions split postings and keep recall and full coverage."""
    idx, _ = open_spann(D, "l2", {"threads": 2}, tmp_path)
    x = clustered(6000, D, seed=4)
    idx.build(np.arange(6000), x)
    heads = idx.state.live_heads
    extra = clustered(6000, D, seed=5, centres=16, spread=0.3) + 0.5
    for lo in range(0, 6000, 1000):
        idx.add(np.arange(6000 + lo, 7000 + lo), extra[lo : lo + 1000])
        while idx.maintain(budget_s=0.05):  # the engine's worker calls it in slices
            pass
    assert idx.state.counters["splits"] > 0 and idx.state.live_heads > heads
    base = {**dict(enumerate(x)), **{6000 + i: v for i, v in enumerate(extra)}}
    q = np.vstack([clustered(100, D, seed=6), extra[:100] + 0.01])
    assert_no_orphans(idx, set(base))
    assert_tree_consistent(idx, set(base))
    fresh, _ = open_spann(D, "l2", {"threads": 2}, tmp_path / "fresh")
    fresh.build(np.fromiter(base, np.int64), np.stack(list(base.values())))
    for m in (8, 48):
        online = recall(idx.search(q, K, {"max_postings": m}).slots, base, q, K, "l2")
        bulk = recall(fresh.search(q, K, {"max_postings": m}).slots, base, q, K, "l2")
        assert online >= bulk - 0.03 and online >= 0.85
    before = idx.search(q, K, {"max_postings": 8}).slots
    idx.compact()  # also rebuilds the head graph without the heads that splits deleted
    assert idx.state.heads().get_current_count() == idx.state.live_heads
    after = idx.search(q, K, {"max_postings": 8}).slots
    assert recall(after, base, q, K, "l2") >= recall(before, base, q, K, "l2") - 0.01
    assert_no_orphans(idx, set(base))
    assert_tree_consistent(idx, set(base))


def test_removes_and_compaction_keep_recall(tmp_path: Path) -> None:
    """Removed slots never come back; maintain merges and compacts; recall holds; reopen.
    Postings of ~200 entries (float16's default size; int8's is 400): with a third of the
    slots removed, some postings are over half dead, which is what makes `maintain` work."""
    idx, _ = open_spann(
        D, "l2", {"threads": 2, "head_fraction": 0.045, "posting_vectors": 200}, tmp_path
    )
    x = clustered(8000, D, seed=7)
    idx.build(np.arange(8000), x)
    gone = np.arange(0, 8000, 3)
    idx.remove(gone)
    idx.remove(np.array([10**6]))  # unknown slots are ignored
    q = clustered(100, D, seed=8)
    ids = idx.search(q, K).slots
    assert not np.isin(ids, gone).any()
    idx.maintain()
    c = idx.state.counters
    assert c["merges"] + c["gc"] + c["compactions"] >= 1, c
    live = {i: x[i] for i in range(8000) if i % 3}
    ids = idx.search(q, K).slots
    assert not np.isin(ids, gone).any()
    assert recall(ids, live, q, K, "l2") >= 0.97
    fresh, _ = open_spann(D, "l2", {"threads": 2}, tmp_path / "fresh")
    fresh.build(np.fromiter(live, np.int64), np.stack(list(live.values())))
    online = recall(idx.search(q, K, {"max_postings": 8}).slots, live, q, K, "l2")
    bulk = recall(fresh.search(q, K, {"max_postings": 8}).slots, live, q, K, "l2")
    assert online >= bulk - 0.03
    fresh.close()
    shutil.rmtree(tmp_path / "fresh")
    assert_no_orphans(idx, set(live))
    assert_tree_consistent(idx, set(live))
    idx.checkpoint(2)
    idx.close()
    again, seq = open_spann(D, "l2", {}, tmp_path)
    assert seq == 2 and len(again) == len(live)
    np.testing.assert_array_equal(again.search(q, K).slots, ids)
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "MANIFEST"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 5, names  # manifest, heads, state, postings, rerank rows


@pytest.mark.parametrize(
    ("metric", "dtype"),
    [
        ("ip", "float32"),
        ("cosine", "float32"),
        ("l2", "float16"),
        ("cosine", "int8"),
        ("l2", "int8"),
        ("ip", "int8"),
    ],
)
def test_other_metrics_reach_recall(metric: str, dtype: str, tmp_path: Path) -> None:
    """Inner product and cosine route and score correctly; float16 and int8 postings keep
    recall, and survive a reopen (the int8 quantizer is persisted)."""
    x = prepare(clustered(5000, 16, seed=9), metric)
    if metric == "ip":
        x = x * np.random.default_rng(0).uniform(0.5, 1.5, (len(x), 1)).astype(np.float32)
    q = prepare(clustered(100, 16, seed=10), metric)
    idx, _ = open_spann(16, metric, {"threads": 2, "vector_dtype": dtype}, tmp_path)
    idx.build(np.arange(5000), x)
    idx.add(np.arange(5000, 5100), x[:100] + 0.01)
    res = idx.search(q, K, {"max_postings": 64})
    ids, dists = res.slots, res.distances
    base = {**dict(enumerate(x)), **{5000 + i: v + 0.01 for i, v in enumerate(x[:100])}}
    assert recall(ids, base, q, K, metric) >= 0.9
    assert np.all(np.diff(dists, axis=1) >= 0)
    if dtype == "float16":
        with pytest.raises(InvalidArgument, match="float16"):
            idx.add(np.array([9999]), np.full((1, 16), 1e6, np.float32))
    idx.checkpoint(7)
    idx.close()
    again, seq = open_spann(16, metric, {}, tmp_path)
    assert seq == 7
    np.testing.assert_array_equal(again.search(q, K, {"max_postings": 64}).slots, ids)
    again.close()


def test_empty_index_and_padding(tmp_path: Path) -> None:
    """An empty index answers -1/inf; k beyond the live count pads."""
    idx, _ = open_spann(4, "l2", {}, tmp_path)
    res = idx.search(np.zeros((2, 4), np.float32), 3)
    assert (res.slots == -1).all() and np.isinf(res.distances).all()
    assert res.stats.queries == 2 and res.stats.postings_read == 0
    idx.add(np.arange(5), np.eye(5, 4, dtype=np.float32))
    res = idx.search(np.zeros((1, 4), np.float32), 8, {"max_postings": 8})
    ids, dists = res.slots, res.distances
    assert sorted(ids[0, :5]) == [0, 1, 2, 3, 4] and (ids[0, 5:] == -1).all()
    assert np.isinf(dists[0, 5:]).all()


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"max_postings": 0}, "max_postings"),
        ({"prune_ratio": 0.5}, "prune_ratio"),
        ({"prune_ratio": float("nan")}, "prune_ratio"),
        ({"head_ef": "many"}, "head_ef"),
        ({"max_postings": 2.5}, "max_postings"),
        ({"nprobe": 3}, "nprobe"),
    ],
)
def test_bad_search_params_are_rejected_by_name(built, params, name) -> None:  # type: ignore[no-untyped-def]
    """Each invalid search parameter raises InvalidArgument naming it."""
    idx, _, _ = built
    with pytest.raises(InvalidArgument, match=name):
        idx.search(np.zeros((1, D), np.float32), K, params)


def test_bad_build_params_are_rejected_by_name(tmp_path: Path) -> None:
    """Build parameters are validated when the index is created."""
    for params, name in [({"replicas": 0}, "replicas"), ({"io": "tape"}, "io")]:
        with pytest.raises(InvalidArgument, match=name):
            open_spann(4, "l2", params, tmp_path)


ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "maintain"]), st.integers(1, 600)),
    min_size=1,
    max_size=10,
)
TINY_POSTINGS = {**SMALL, "vector_dtype": "float32"}  # 98-entry postings at d=8: splits early


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=ops, seed=st.integers(0, 1000))
def test_no_orphan_vectors_under_any_update_sequence(tmp_path_factory, ops, seed) -> None:  # type: ignore[no-untyped-def]
    """Whatever the mix of inserts, removes and maintenance (splits, merges, clean-ups), every
    live slot keeps at least one current copy, no removed slot keeps one, and the clustering
    tree stays consistent (reachable leaves, counts adding up, one primary leaf per slot)."""
    directory = tmp_path_factory.mktemp("orphans")
    idx, _ = open_spann(8, "l2", TINY_POSTINGS, directory)
    rng = np.random.default_rng(seed)
    live: set[int] = set()
    nxt = 0
    for kind, n in ops:
        if kind == "add":
            idx.add(np.arange(nxt, nxt + n), clustered(n, 8, seed + nxt, spread=0.2))
            live |= set(range(nxt, nxt + n))
            nxt += n
        elif kind == "remove" and live:
            gone = rng.choice(sorted(live), size=min(n, len(live)), replace=False)
            idx.remove(gone)
            live -= set(gone.tolist())
        else:
            idx.maintain()
        assert_no_orphans(idx, live)
        assert_tree_consistent(idx, live)
    idx.close()


def test_one_huge_insert_into_one_region_ends_within_budget(tmp_path: Path) -> None:
    """A batch that lands many times a posting's budget in one place is split repeatedly
    until maintain() leaves every posting within budget."""
    idx, _ = open_spann(8, "l2", {"threads": 1, "posting_pages": 1}, tmp_path)
    x = clustered(2000, 8, seed=12)
    idx.build(np.arange(2000), x)
    blob = x[0] + 0.05 * np.random.default_rng(1).normal(size=(3000, 8)).astype(np.float32)
    idx.add(np.arange(2000, 5000), blob)
    idx.maintain()
    assert idx.stats()["posting_size_max"] <= idx.state.limit
    assert_no_orphans(idx, set(range(5000)))


def test_param_cache_does_not_bypass_type_checks() -> None:
    """A cached valid value does not make an equal value of a rejected type (True == 1) pass."""
    from vecdb.index.params import SearchParams

    assert SearchParams.parse({"max_postings": 1}).max_postings == 1
    with pytest.raises(InvalidArgument, match="max_postings"):
        SearchParams.parse({"max_postings": True})
