"""`vecdb.client.splits` on wire messages alone: parts cover the request exactly once and in
order, what cannot be split is left whole, and merged answers read as one call's."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb import config
from vecdb.client import splits
from vecdb.client.plain_requests import PackedSearch
from vecdb.errors import InvalidArgument, ResourceExhausted
from vecdb.rpc import documents as wire
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import SearchResult

MIB = 1 << 20


def test_halving_ids_keeps_their_kind_and_order() -> None:
    """A get of string ids halves into two gets of the same ids, in order; one id stays."""
    req = pb.GetRequest(collection="c", ids=pb.Ids(strs=pb.StrIds(values=[b"a", b"b", b"c"])),
                        with_vectors=False, tenant="t")  # fmt: skip
    a, b = splits.halve_ids(req) or []
    assert [list(p.ids.strs.values) for p in (a, b)] == [[b"a"], [b"b", b"c"]]
    assert (a.tenant, a.HasField("with_vectors"), a.with_vectors) == ("t", True, False)
    one = pb.GetDocumentsRequest(collection="c", ids=pb.Ids(ints=pb.IntIds(values=[4])))
    assert splits.halve_ids(one) is None


def test_halving_a_scroll_halves_its_limit_down_to_one() -> None:
    """An unset limit is the default 1000; a limit of 1 cannot be halved."""
    (half,) = splits.halve_scroll(pb.ScrollRequest(collection="c")) or []
    assert half.limit == 500
    assert splits.halve_scroll(pb.ScrollRequest(collection="c", limit=1)) is None


def test_search_parts_cover_the_queries_once_packed_or_not() -> None:
    """A 2 MiB batch at a 1 MiB client: parts within half a MiB, every row once, in order,
    every other field kept; the packed form serialises to the same bytes as the plain one."""
    rows = np.arange(2 * MIB // 4, dtype=np.float32).reshape(-1, 64)
    opts = pb.SearchOptions(k=3, filter='{"a":1}')
    plain = pb.SearchRequest(collection="c", options=opts, tenant="t", allow_partial=True,
                             queries=pb.Vectors(dim=64, count=len(rows), data=rows.tobytes()))  # fmt: skip
    packed = PackedSearch(pb.SearchRequest(collection="c", options=opts, tenant="t",
                                           allow_partial=True,
                                           queries=pb.Vectors(dim=64, count=len(rows))), rows)  # fmt: skip
    for req in (plain, packed):
        parts = splits.split_search(req, MIB)
        assert len(parts) == 4
        got = [pb.SearchRequest.FromString(p.SerializeToString()) for p in parts]
        assert all(g.ByteSize() <= MIB // 2 + 1024 for g in got)
        assert b"".join(g.queries.data for g in got) == rows.tobytes()
        assert sum(g.queries.count for g in got) == len(rows)
        assert all((g.options, g.tenant, g.allow_partial) == (opts, "t", True) for g in got)


def test_requests_the_engine_would_refuse_whole_are_not_split() -> None:
    """More queries than MAX_QUERIES, repeated ids, more tokens than a request may hold:
    left whole, so the server refuses them as embedded does."""
    many = pb.SearchRequest(collection="c", queries=pb.Vectors(
        dim=64, count=config.MAX_QUERIES + 1, data=bytes(4 * 64 * (config.MAX_QUERIES + 1))))  # fmt: skip
    assert len(splits.split_search(many, MIB)) == 1
    vec = pb.Vectors(dim=64, count=4096, data=bytes(4 * 64 * 4096))
    dup = pb.UpsertRequest(collection="c", vectors=vec,
                           ids=pb.Ids(ints=pb.IntIds(values=[*range(4095), 0])))  # fmt: skip
    assert len(splits.split_upsert(dup, MIB)) == 1
    unique = pb.UpsertRequest(collection="c", vectors=vec,
                              ids=pb.Ids(ints=pb.IntIds(values=range(4096))))  # fmt: skip
    assert len(splits.split_upsert(unique, MIB)) > 1
    docs = [np.zeros((4096, 8), np.float32)] * 17  # 69,632 tokens: over the request's cap
    over = pb.UpsertDocumentsRequest(collection="c", documents=wire.documents_to_proto(docs),
                                     ids=pb.Ids(ints=pb.IntIds(values=range(17))))  # fmt: skip
    assert len(splits.split_documents(over, MIB)) == 1


def test_merged_results_read_as_one_call() -> None:
    """Rows in order; counters summed; a document search's per-query means weighted by the
    queries of each part."""
    a = SearchResult(ids=np.array([[1, 2]]), distances=np.array([[0.1, 0.2]], np.float32),
                     payloads=[[{"x": 1}, None]], stats={"queries": 1, "exact": 1.0})  # fmt: skip
    b = SearchResult(ids=np.array([[3, -1], [4, 5]]),
                     distances=np.array([[0.3, np.inf], [0.4, 0.5]], np.float32),
                     payloads=[[None, None], [{"y": 2}, None]],
                     stats={"queries": 2, "exact": 0.0})  # fmt: skip
    m = splits.merge_results([a, b], splits.AVERAGED_DOC_STATS)
    assert m.ids.tolist() == [[1, 2], [3, -1], [4, 5]]
    assert m.payloads == [[{"x": 1}, None], [None, None], [{"y": 2}, None]]
    assert m.stats == {"queries": 3, "exact": pytest.approx(1 / 3)}


def test_only_an_answer_too_large_is_halved() -> None:
    """Another error of a part is raised as it is, and so is a too-large answer that cannot
    be halved."""

    def send(req: pb.GetRequest) -> int:
        if len(req.ids.ints.values) > 1:
            raise ResourceExhausted("too large", reason="ANSWER_TOO_LARGE")
        if req.ids.ints.values[0] == 3:
            raise InvalidArgument("bad")
        return int(req.ids.ints.values[0])

    req = pb.GetRequest(collection="c", ids=pb.Ids(ints=pb.IntIds(values=[0, 1, 2])))
    assert splits.fitted(send, [req], splits.halve_ids) == [0, 1, 2]
    with pytest.raises(InvalidArgument):
        bad = pb.GetRequest(collection="c", ids=pb.Ids(ints=pb.IntIds(values=[2, 3])))
        splits.fitted(send, [bad], splits.halve_ids)
    with pytest.raises(ResourceExhausted):
        splits.fitted(send, [req], lambda r: None)
