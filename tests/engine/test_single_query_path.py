"""The lean single-query path gives exactly what the full path gives.

Each shortcut is checked against the way it stands in for: `validate.queries_as_stored`
against `prepare_queries` + `normalize` (bit for bit, errors included), the tenant copy's fast path against brute
force before and after the set changes, `tenant_search.parsed` against the parsers (a bad
request fails every time), `query_stats.Totals.add` against `SearchStats.add`, and the
embedded client's call without a stats collector against the call with one. Real RocksDB
directories, real numba kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecdb
from vecdb.engine import query_stats, reader, tenant_search
from vecdb.engine import validate as v
from vecdb.errors import InvalidArgument, NotFound
from vecdb.index.base import SearchStats
from vecdb.types import Metric

METRICS = [Metric.COSINE, Metric.L2, Metric.IP]


def _full(queries: Any, dim: int, metric: Metric) -> np.ndarray:
    q = v.prepare_queries(queries, dim, metric)
    return v.normalize(q) if metric is Metric.COSINE else q


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        out = fn(*args)
    except InvalidArgument as exc:
        return "error", (exc.message, exc.field, exc.reason)
    return "ok", out


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> None:
    assert a[0] == b[0], (a, b)
    if a[0] == "error":
        assert a[1] == b[1]
        return
    x, y = a[1], b[1]
    assert x.dtype == y.dtype == np.float32 and x.shape == y.shape
    assert x.flags.c_contiguous
    assert np.array_equal(x.view(np.uint32), y.view(np.uint32))  # bit for bit


@settings(max_examples=300, deadline=None)
@given(
    dim=st.integers(1, 96),
    rows=st.integers(1, 4),
    scale=st.integers(-40, 40),
    one_d=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    metric=st.sampled_from(METRICS),
    poison=st.sampled_from([None, np.nan, np.inf, -np.inf, 0.0, 3e18, 1e38]),
)
def test_fast_query_checks_match_the_full_ones(
    dim: int, rows: int, scale: int, one_d: bool, seed: int, metric: Metric, poison: Any
) -> None:
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # beyond float32: inf, refused as such
        x = (rng.standard_normal((rows, dim)) * 10.0**scale).astype(np.float32)
    if poison is not None:
        if poison == 0.0:
            x[rng.integers(rows)] = 0.0  # a zero row: refused for cosine only
        else:
            x[rng.integers(rows), rng.integers(dim)] = poison
    q = x[0] if one_d else x
    _same(_outcome(v.queries_as_stored, q, dim, metric), _outcome(_full, q, dim, metric))


@settings(max_examples=150, deadline=None)
@given(
    dim=st.integers(1, 400),
    rows=st.integers(2, 40),
    scale=st.integers(-40, 40),
    seed=st.integers(0, 2**31 - 1),
    metric=st.sampled_from(METRICS),
    poison=st.sampled_from([None, np.nan, np.inf, 0.0, 3e18, 1e38]),
    strided=st.booleans(),
)
def test_fast_batch_checks_match_the_full_ones(
    dim: int, rows: int, scale: int, seed: int, metric: Metric, poison: Any, strided: bool
) -> None:
    """A batch of float32 rows (wide rows past numpy's pairwise block of 128, and a view
    taking every other row) takes the kernel pass: the same bits and errors as the two
    numpy steps."""
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal((2 * rows, dim)) * 10.0**scale).astype(np.float32)
    q = x[::2] if strided else x[:rows]
    if poison == 0.0:
        q[rng.integers(rows)] = 0.0
    elif poison is not None:
        q[rng.integers(rows), rng.integers(dim)] = poison
    _same(_outcome(v.queries_as_stored, q, dim, metric), _outcome(_full, q, dim, metric))


@settings(max_examples=300, deadline=None)
@given(
    dim=st.integers(1, 400),
    scale=st.integers(-40, 40),
    one_d=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    metric=st.sampled_from(METRICS),
    poison=st.sampled_from([None, np.nan, np.inf, 0.0, 3e18, 1e38]),
)
def test_one_query_kernel_is_queries_as_stored(
    dim: int, scale: int, one_d: bool, seed: int, metric: Metric, poison: Any
) -> None:
    """`reader._one_query` (one kernel call) gives `queries_as_stored`'s bits for a row
    that passes the checks, and None (the full path judges it) for one that does not."""
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal((1, dim)) * 10.0**scale).astype(np.float32)
    if poison == 0.0:
        x[0] = 0.0
    elif poison is not None:
        x[0, rng.integers(dim)] = poison
    q = x[0] if one_d else x
    got = reader._one_query(q, dim, metric)
    full = _outcome(v.queries_as_stored, q, dim, metric)
    sq = float(np.add.reduce(x[0].astype(np.float64) ** 2))
    fits = (sq > 0.0 if metric is Metric.COSINE else sq >= 0.0) and sq <= v.FAST_SQ_NORM
    assert (got is not None) == fits
    if got is not None:
        _same(("ok", got), full)
    assert reader._one_query(x.astype(np.float64), dim, metric) is None  # not float32
    assert reader._one_query(np.ones((2, dim), np.float32), dim, metric) is None  # 2 rows


@pytest.mark.parametrize(
    "queries",
    [
        np.ones(5, np.float32),  # wrong width
        np.ones((2, 3), np.float32),  # wrong width, matrix
        np.ones((0, 4), np.float32),  # no rows
        np.ones((1, 4), np.float64) * 1e300,  # float64: the full path
        [[1.0, 2.0, 3.0, 4.0]],  # a list: the full path
        np.ones((2, 2, 4), np.float32),
        "text",
    ],
)
@pytest.mark.parametrize("metric", METRICS)
def test_other_inputs_take_the_full_path(queries: Any, metric: Metric) -> None:
    _same(_outcome(v.queries_as_stored, queries, 4, metric), _outcome(_full, queries, 4, metric))


def test_ascending_sorts_only_what_needs_it() -> None:
    s = np.array([1, 4, 9], np.int64)
    assert tenant_search.ascending(s) is s
    assert tenant_search.ascending(np.array([9, 1, 4, 4], np.int64)).tolist() == [1, 4, 9]


def test_parsed_params_are_remembered_but_bad_ones_fail_every_time() -> None:
    good = {"tenant_postings": 8, "max_postings": 16}
    tp, sp = tenant_search.parsed(good)
    assert (tp.tenant_postings, sp.max_postings) == (8, 16)
    assert tenant_search.parsed(dict(good)) is tenant_search.parsed(good)  # by contents
    for bad, field in [
        ({"tenant_postings": True, "max_postings": 16}, "params.tenant_postings"),  # 1 != True
        ({"tenant_postings": 8, "max_postings": 0}, "params.max_postings"),
        ({"tenant_nope": 1}, "params.tenant_nope"),
        ({"max_postings": [16]}, "params.max_postings"),  # unhashable
    ]:
        for _ in range(2):
            with pytest.raises(InvalidArgument) as info:
                tenant_search.parsed(bad)
            assert info.value.field == field
    assert tenant_search.parsed(None) == tenant_search.parsed({})


def test_totals_add_is_search_stats_add_and_feeds_the_collector() -> None:
    a = SearchStats(queries=1, postings_read=3, bytes_read=4096, extra={"tenant_copy": 1.0})
    b = SearchStats(queries=2, heads_searched=5, blocks_read=7, pages_read=9)
    totals, plain = query_stats.Totals(), SearchStats()
    with query_stats.collect() as sink:
        for s in (a, b, a):
            totals.add(s)
            plain.add(s)
        with query_stats.collect() as inner:  # nested: the inner one alone sees this
            totals.add(b)
        plain.add(b)
    assert vars(totals) == vars(plain)
    assert vars(inner) == vars(b)
    assert query_stats.as_dict(sink) == query_stats.as_dict(
        SearchStats(queries=4, heads_searched=5, postings_read=6, blocks_read=7,
                    pages_read=9, bytes_read=8192, extra={"tenant_copy": 2.0})
    )  # fmt: skip
    totals.add(a)  # outside any collector: only the totals
    assert totals.queries == 7 and query_stats.as_dict(sink)["queries"] == 4


@pytest.fixture()
def tenant_client(tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    c = vecdb.connect(str(tmp_path / "db"))
    c.create_collection("m", 16, "cosine", index="spann", multi_tenant=True)
    c.create_tenant("m", "a")
    c.create_tenant("m", "b")
    c.upsert("m", list(range(0, 2600)), x[:2600], tenant="b")
    c.upsert("m", list(range(2600, 2700)), x[2600:2700], tenant="a")
    c.optimize("m")
    yield c, x
    c.close()


def _brute(x: np.ndarray, ids: list[int], q: np.ndarray, k: int) -> list[int]:
    u = x[ids] / np.linalg.norm(x[ids], axis=1, keepdims=True)
    d = 1.0 - u @ (q / np.linalg.norm(q))
    return [ids[j] for j in np.argsort(d, kind="stable")[:k]]


def test_tenant_copy_fast_path_follows_the_set(tenant_client) -> None:  # type: ignore[no-untyped-def]
    c, x = tenant_client
    rng = np.random.default_rng(2)
    mine = list(range(2600, 2700))
    for step in range(3):
        for _ in range(5):  # the first call makes or patches the copy, the rest reuse it
            q = rng.standard_normal(16).astype(np.float32)
            res = c.search("m", q, k=10, tenant="a")
            assert res.ids[0].tolist() == _brute(x, mine, q, 10)
            n = len(mine)
            short = c.search("m", q, k=150, tenant="a")  # more than it has: padded
            assert short.ids[0, :n].tolist() == _brute(x, mine, q, n)
            assert (short.ids[0, n:] == -1).all()
            assert np.isinf(short.distances[0, n:]).all()
        if step == 0:
            c.grant("m", [5, 6, 7], tenant="a")  # the copy lacks these: patched in
            mine = sorted(mine + [5, 6, 7])
        elif step == 1:
            c.delete("m", [2600, 2601], tenant="a")
            mine = [i for i in mine if i not in (2600, 2601)]


def test_search_without_stats_is_the_search_with_them(tenant_client) -> None:  # type: ignore[no-untyped-def]
    c, x = tenant_client
    q = x[:3] + 0.01
    for kw in ({}, {"tenant": "a"}, {"tenants": ["a", "b"]}, {"filter": {"x": 1}}):
        lean = c.search("m", q, k=5, **kw)
        full = c.search("m", q, k=5, with_stats=True, **kw)
        assert lean.stats is None and full.stats is not None
        # the filter matches no point: once its matches are read (after the first search's
        # widened lists) it is answered without the index, which then counts no query
        assert full.stats["queries"] >= (0 if "filter" in kw else 3)
        assert np.array_equal(lean.ids, full.ids)
        assert np.array_equal(lean.distances, full.distances)
    with pytest.raises(InvalidArgument) as info:
        c.search("m", q, k=5, with_stats="yes")  # type: ignore[arg-type]
    assert info.value.field == "with_stats"
    for with_stats in (False, True):
        with pytest.raises(NotFound):
            c.search("nope", q, k=5, with_stats=with_stats)
        with pytest.raises(InvalidArgument) as info:
            c.search("m", np.full(16, np.nan, np.float32), k=5, with_stats=with_stats)
        assert info.value.reason == "NOT_FINITE"
