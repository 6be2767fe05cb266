"""SDK search: every result is checked against an exact numpy oracle, tie-aware.

Each test runs on the flat index and on SPANN (the `index` fixture), both with points in the
exact write buffer and built by optimize(), SPANN with float32 postings and every posting
read, so results must be exact in every mode, index and state. SPANN's recall at its default
search params is checked elsewhere (tests/engine, tests/index).
"""

from __future__ import annotations

import numpy as np
import pytest
from index_cases import IndexCase
from oracles import (
    ALL_POSTINGS,
    FLOAT16,
    FLOAT32,
    METRICS,
    SPANN_EXACT,
    Model,
    assert_search_matches,
    distances,
)

import vecdb


@pytest.fixture
def client(clean_client: vecdb.Client) -> vecdb.Client:
    """The module shares one client per mode (many small cases); each case starts empty."""
    return clean_client


DIM = 12
N = 300


def make_data(rng, n: int = N, dim: int = DIM) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize("metric", METRICS)
def test_search_equals_exact_oracle(client: vecdb.Client, index: IndexCase, rng, metric) -> None:
    """Batch search returns the exact top-k ids and distances of each metric."""
    index.create(client, "s", DIM, metric)
    xb = make_data(rng)
    ids = list(range(1000, 1000 + N))
    client.upsert("s", ids=ids, vectors=xb)
    index.settle(client, "s")
    q = make_data(rng, 25)
    res = index.search(client, "s", q, k=10)
    assert res.ids.dtype == np.int64
    assert_search_matches(res, ids, distances(xb, q, metric), 10)


@pytest.mark.parametrize("metric", METRICS)
def test_search_equals_oracle_with_scaled_vectors(
    client: vecdb.Client, index: IndexCase, rng, metric: str
) -> None:
    """Non-unit, large-norm vectors: cosine ignores norms, l2 and ip do not."""
    index.create(client, "s", DIM, metric)
    xb = make_data(rng) * rng.uniform(0.01, 100.0, size=(N, 1)).astype(np.float32)
    client.upsert("s", ids=list(range(N)), vectors=xb)
    index.settle(client, "s")
    q = make_data(rng, 8) * 7.0
    res = index.search(client, "s", q, k=15)
    assert_search_matches(res, list(range(N)), distances(xb, q, metric), 15)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_match_is_first(client: vecdb.Client, index: IndexCase, rng, metric: str) -> None:
    """A stored vector used as query finds itself first (l2 0, cosine 0, ip -|x|^2)."""
    index.create(client, "s", DIM, metric)
    xb = make_data(rng, 50)
    client.upsert("s", ids=list(range(50)), vectors=xb)
    index.settle(client, "s")
    res = index.search(client, "s", xb[7], k=1)
    if metric != "ip":  # under ip another vector may have a larger inner product
        assert res.ids[0, 0] == 7
    expect = {"l2": 0.0, "cosine": 0.0, "ip": float(-(xb[7].astype(np.float64) ** 2).sum())}
    d = distances(xb, xb[7], metric)[0]
    assert res.distances[0, 0] == pytest.approx(min(d.min(), expect[metric]), abs=1e-4)


def test_single_query_gives_one_row(client: vecdb.Client, index: IndexCase, rng) -> None:
    """A (d,) numpy query returns ids and distances of shape (1, k)."""
    index.create(client, "s", DIM, "l2")
    xb = make_data(rng, 40)
    client.upsert("s", ids=list(range(40)), vectors=xb)
    index.settle(client, "s")
    res = index.search(client, "s", xb[3], k=4)
    assert res.ids.shape == (1, 4) and res.distances.shape == (1, 4)
    assert len(res) == 1
    assert_search_matches(res, list(range(40)), distances(xb, xb[3], "l2"), 4)


def test_single_query_as_plain_list(client: vecdb.Client, index: IndexCase) -> None:
    """A (d,) query given as a Python list of floats works like the numpy one."""
    index.create(client, "s", 3, "l2")
    client.upsert("s", ids=[1, 2], vectors=[[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    index.settle(client, "s")
    res = index.search(client, "s", [4.0, 4.0, 4.0], k=2)
    assert res.ids.tolist() == [[2, 1]]


def test_batch_of_queries_as_plain_lists(client: vecdb.Client, index: IndexCase) -> None:
    """An (nq, d) query given as nested lists answers row i for query i."""
    index.create(client, "s", 2, "l2")
    client.upsert("s", ids=[1, 2, 3], vectors=[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    index.settle(client, "s")
    res = index.search(client, "s", [[9.0, 1.0], [1.0, 9.0], [0.5, 0.5]], k=1)
    assert res.ids.tolist() == [[2], [3], [1]]
    assert res.distances[:, 0].tolist() == pytest.approx([2.0, 2.0, 0.5])


@pytest.mark.parametrize("metric", METRICS)
def test_k_above_count_pads_with_minus_one_and_inf(
    client: vecdb.Client, index: IndexCase, rng, metric
) -> None:
    """k larger than the collection returns every point, then -1 ids and +inf distances."""
    index.create(client, "s", DIM, metric)
    xb = make_data(rng, 3)
    client.upsert("s", ids=[5, 6, 7], vectors=xb)
    index.settle(client, "s")
    q = make_data(rng, 2)
    res = index.search(client, "s", q, k=8)
    assert res.ids.shape == (2, 8)
    assert np.all(res.ids[:, 3:] == -1)
    assert np.all(np.isposinf(res.distances[:, 3:]))
    assert_search_matches(res, [5, 6, 7], distances(xb, q, metric), 8)


def test_search_of_empty_collection_is_all_padding(client: vecdb.Client, index: IndexCase) -> None:
    """Searching a collection with no points returns only padding."""
    index.create(client, "s", 3, "l2")
    index.settle(client, "s")
    res = index.search(client, "s", np.ones((2, 3), np.float32), k=4)
    assert res.ids.tolist() == [[-1] * 4] * 2
    assert np.all(np.isposinf(res.distances))


def test_search_of_emptied_collection_is_all_padding(
    client: vecdb.Client, index: IndexCase
) -> None:
    """After every point is deleted, search returns only padding (before and after the index
    is settled again)."""
    index.create(client, "s", 3, "l2")
    client.upsert("s", ids=[1, 2], vectors=np.ones((2, 3), np.float32))
    index.settle(client, "s")
    client.delete("s", ids=[1, 2])
    for _ in range(2):
        res = index.search(client, "s", np.ones(3, np.float32), k=3)
        assert res.ids.tolist() == [[-1, -1, -1]]
        assert np.all(np.isposinf(res.distances))
        index.settle(client, "s")


def test_with_payload_aligns_payloads_with_ids(client: vecdb.Client, index: IndexCase, rng) -> None:
    """with_payload=True returns, for each result id, that point's payload (None if none)."""
    index.create(client, "s", DIM, "l2")
    xb = make_data(rng, 30)
    payloads = [{"i": i, "name": f"点{i}"} if i % 3 else None for i in range(30)]
    client.upsert("s", ids=list(range(30)), vectors=xb, payloads=payloads)
    index.settle(client, "s")
    q = make_data(rng, 4)
    res = index.search(client, "s", q, k=6, with_payload=True)
    assert res.payloads is not None and len(res.payloads) == 4
    for row_ids, row_pay in zip(res.ids.tolist(), res.payloads, strict=True):
        assert len(row_pay) >= 6
        for pid, pay in zip(row_ids, row_pay, strict=False):
            assert pay == payloads[pid]


def test_with_payload_when_padded_keeps_alignment(client: vecdb.Client, index: IndexCase) -> None:
    """With fewer results than k, each real result keeps its own payload; padding has none."""
    index.create(client, "s", 2, "l2")
    client.upsert("s", ids=[1, 2], vectors=[[0.0, 0.0], [1.0, 1.0]], payloads=[{"a": 1}, None])
    index.settle(client, "s")
    res = index.search(client, "s", np.zeros((1, 2), np.float32), k=4, with_payload=True)
    assert res.ids.tolist() == [[1, 2, -1, -1]]
    (row,) = res.payloads
    assert row[:2] == [{"a": 1}, None]
    assert len(row) in (2, 4) and all(p is None for p in row[2:])


def test_without_payload_returns_no_payloads(client: vecdb.Client, index: IndexCase, rng) -> None:
    """By default search does not return payloads."""
    index.create(client, "s", DIM, "l2")
    client.upsert("s", ids=[1], vectors=make_data(rng, 1), payloads=[{"a": 1}])
    index.settle(client, "s")
    assert index.search(client, "s", make_data(rng, 1), k=1).payloads is None


@pytest.mark.parametrize("metric", METRICS)
def test_filter_returns_exact_best_matches_among_matching(
    client: vecdb.Client, index: IndexCase, rng, metric: str
) -> None:
    """filter={"field": value} returns only matching points: the exact top-k among them."""
    index.create(client, "s", DIM, metric)
    xb = make_data(rng)
    colors = ["red" if i % 10 == 0 else "blue" for i in range(N)]  # 30 red, 270 blue
    payloads = [{"color": c, "i": i} for i, c in enumerate(colors)]
    payloads[5] = None  # a point without payload never matches
    client.upsert("s", ids=list(range(N)), vectors=xb, payloads=payloads)
    index.settle(client, "s")
    q = make_data(rng, 6)
    red = [i for i in range(N) if colors[i] == "red"]
    res = index.search(client, "s", q, k=10, filter={"color": "red"}, with_payload=True)
    assert_search_matches(res, red, distances(xb[red], q, metric), 10)
    for row in res.payloads:
        assert all(p["color"] == "red" for p in row[:10])


def test_filter_with_few_matches_pads(client: vecdb.Client, index: IndexCase, rng) -> None:
    """A filter matching fewer than k points returns those, then padding; none matching: all pad."""
    index.create(client, "s", DIM, "l2")
    xb = make_data(rng, 100)
    payloads = [{"tag": "rare" if i in (17, 83) else "common", "n": i % 2} for i in range(100)]
    client.upsert("s", ids=list(range(100)), vectors=xb, payloads=payloads)
    index.settle(client, "s")
    res = index.search(client, "s", xb[0], k=5, filter={"tag": "rare"})
    assert sorted(res.ids[0, :2].tolist()) == [17, 83]
    assert res.ids[0, 2:].tolist() == [-1, -1, -1]
    assert np.all(np.isposinf(res.distances[0, 2:]))
    res = index.search(client, "s", xb[0], k=5, filter={"tag": "none-such"})
    assert res.ids.tolist() == [[-1] * 5]
    both = index.search(client, "s", xb[0], k=100, filter={"tag": "common", "n": 1})
    got = [p for p in both.ids[0].tolist() if p != -1]
    assert sorted(got) == [i for i in range(100) if i % 2 == 1 and i not in (17, 83)]


def test_filter_distinguishes_bool_from_number(client: vecdb.Client, index: IndexCase) -> None:
    """JSON true and the number 1 are different values: each filter matches only its own."""
    index.create(client, "s", 2, "l2")
    client.upsert(
        "s", ids=[1, 2], vectors=[[0.0, 1.0], [1.0, 0.0]], payloads=[{"n": 1}, {"n": True}]
    )
    index.settle(client, "s")
    q = np.zeros(2, np.float32)
    assert index.search(client, "s", q, k=2, filter={"n": True}).ids.tolist() == [[2, -1]]
    assert index.search(client, "s", q, k=2, filter={"n": 1}).ids.tolist() == [[1, -1]]


def test_filter_finds_matches_beyond_the_nearest_16384(
    client: vecdb.Client, index: IndexCase, rng
) -> None:
    """In a collection of 20 000 points, a filter matching 3 far-away points returns all 3."""
    index.create(client, "s", 4, "l2")
    n = 20_000
    xb = rng.standard_normal((n, 4)).astype(np.float32)
    xb[-3:] += 100.0  # the only matches, farther than every other point from the query
    payloads = [{"tag": "match" if i >= n - 3 else "other"} for i in range(n)]
    client.upsert("s", ids=list(range(n)), vectors=xb, payloads=payloads)
    index.settle(client, "s")
    q = np.zeros(4, np.float32)
    res = index.search(client, "s", q, k=5, filter={"tag": "match"})
    last = list(range(n - 3, n))
    assert_search_matches(res, last, distances(xb[last], q, "l2"), 5)


@pytest.mark.parametrize("metric", METRICS)
def test_search_after_delete_never_returns_deleted(
    client: vecdb.Client, index: IndexCase, rng, metric
) -> None:
    """Deleted ids never come back, and the rest are still the exact top-k (deletes reach a
    built index; settling again after them changes nothing)."""
    index.create(client, "s", DIM, metric)
    xb = make_data(rng)
    client.upsert("s", ids=list(range(N)), vectors=xb)
    index.settle(client, "s")
    gone = list(range(0, N, 2))
    assert client.delete("s", ids=gone) == len(gone)
    left = list(range(1, N, 2))
    q = np.vstack([xb[:4], make_data(rng, 4)])  # deleted vectors themselves as queries too
    for _ in range(2):
        res = index.search(client, "s", q, k=N)  # every live point, then padding
        assert not set(res.ids.ravel().tolist()) & set(gone)
        assert_search_matches(res, left, distances(xb[left], q, metric), N)
        index.settle(client, "s")


def test_str_id_collection_returns_str_ids_padded_with_none(
    client: vecdb.Client, index: IndexCase, rng
) -> None:
    """Search of a str-id collection returns str ids, and None where it pads."""
    index.create(client, "s", DIM, "cosine", id_type="str")
    xb = make_data(rng, 4)
    ids = ["日本語", "🎉", "a", "e\u0301"]
    client.upsert("s", ids=ids, vectors=xb)
    index.settle(client, "s")
    q = make_data(rng, 3)
    res = index.search(client, "s", q, k=6)
    assert res.ids.shape == (3, 6)
    for row in res.ids.tolist():
        assert all(isinstance(p, str) for p in row[:4])
        assert sorted(row[:4]) == sorted(ids)
        assert row[4:] == [None, None]
    assert_search_matches(res, ids, distances(xb, q, "cosine"), 6)


def test_results_reflect_latest_upserts(client: vecdb.Client, index: IndexCase, rng) -> None:
    """Interleaved upserts, replacements and deletes: search equals the oracle of the final
    state (on SPANN built, rounds after the first write into a built index)."""
    index.create(client, "s", DIM, "l2")
    model = Model("l2")
    for _ in range(5):
        ids = rng.choice(200, size=40, replace=False).tolist()
        vecs = make_data(rng, 40)
        client.upsert("s", ids=ids, vectors=vecs)
        model.upsert(ids, vecs)
        dels = rng.choice(200, size=15, replace=False).tolist()
        assert client.delete("s", ids=dels) == model.delete(dels)
        index.settle(client, "s")
    assert client.count("s") == len(model)
    q = make_data(rng, 10)
    model.assert_search(index.search(client, "s", q, k=10), q, 10)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_spann_reading_every_posting_is_exact_for_a_query_on_a_head(
    client: vecdb.Client, rng, metric: str
) -> None:
    """A query equal to a stored vector (here every one is a head's vector: 40 points, each
    stored 10 times under different ids) still gets the exact top-k when every posting is
    read."""
    client.create_collection(
        "s", dim=8, metric=metric, index="spann",
        index_params={**SPANN_EXACT, "head_fraction": 0.5},
    )  # fmt: skip
    points = make_data(rng, 40, 8)
    xb = np.repeat(points, 10, axis=0)
    client.upsert("s", ids=list(range(len(xb))), vectors=xb)
    client.optimize("s")
    res = client.search("s", points, k=len(xb), params=ALL_POSTINGS)
    assert_search_matches(res, list(range(len(xb))), distances(xb, points, metric), len(xb))


@pytest.mark.parametrize("metric", METRICS)
def test_default_spann_index_is_exact_within_float16_rounding(
    client: vecdb.Client, rng, metric: str
) -> None:
    """The default index (SPANN, float16 postings) with every posting read: exact while the
    points are buffered, and within float16 rounding of the exact answer once built."""
    info = client.create_collection("s", dim=DIM, metric=metric)
    assert info.index == "spann"
    xb = make_data(rng)
    client.upsert("s", ids=list(range(N)), vectors=xb)
    q = make_data(rng, 25)
    oracle = distances(xb, q, metric)
    res = client.search("s", q, k=10, params=ALL_POSTINGS)
    assert_search_matches(res, list(range(N)), oracle, 10, FLOAT32)
    client.optimize("s")
    res = client.search("s", q, k=10, params=ALL_POSTINGS)
    assert_search_matches(res, list(range(N)), oracle, 10, FLOAT16)
