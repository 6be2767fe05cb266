"""The router's pure parts: jump hash placement, id keys, request splitting on raw bytes,
the merges of search / scroll / get answers, and the `[cluster]` settings."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.cluster import merge, routing
from vecdb.cluster.shard_node import shard_index
from vecdb.errors import InvalidArgument
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.config import load_config


@given(st.integers(0, 2**64 - 1), st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_jump_hash_moves_keys_only_to_the_new_bucket(key: int, n: int) -> None:
    """Growing from n to n+1 buckets, a key stays put or moves to bucket n (consistency)."""
    before, after = routing.jump_hash(key, n), routing.jump_hash(key, n + 1)
    assert 0 <= before < n
    assert after in (before, n)


def test_jump_hash_spreads_keys_evenly_and_moves_one_in_n() -> None:
    """10k sequential ids over 3 shards: each within 5% of a third; going to 4 shards moves
    about a quarter of them (the minimum), all to the new shard."""
    three = np.array([routing.shard_of(i, 3) for i in range(10_000)])
    four = np.array([routing.shard_of(i, 4) for i in range(10_000)])
    assert all(abs(int((three == s).sum()) - 3333) < 170 for s in range(3))
    moved = three != four
    assert 0.22 < moved.mean() < 0.28 and set(four[moved]) == {3}
    assert routing.jump_hash(0, 1) == 0
    with pytest.raises(ValueError):
        routing.jump_hash(1, 0)


def test_string_ids_hash_by_blake2b_of_their_utf8() -> None:
    """A string id's key is blake2b-64 of its UTF-8 bytes, little-endian: stable everywhere."""
    raw = "café-42".encode()
    want = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")
    assert routing.id_key("café-42") == routing.str_key(raw) == want
    assert routing.id_key(7) == 7


def test_split_upsert_cuts_rows_from_the_raw_bytes() -> None:
    """Each shard's part has its ids, their vector rows (bytes equal) and payloads, in order;
    a batch that cannot be placed (mixed ids, wrong byte length) is not split."""
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    req = pb.UpsertRequest(collection="c", ids=convert.ids_to_proto(list(range(100, 110))),
                           vectors=convert.matrix_to_proto(x),
                           payloads=[f'{{"i": {i}}}' for i in range(10)])  # fmt: skip
    parts = routing.split_upsert(req, 3)
    assert parts is not None
    seen = []
    for shard, part in parts.items():
        ids = list(part.ids.ints.values)
        assert all(routing.shard_of(i, 3) == shard for i in ids)
        rows = convert.vectors_from_proto(part.vectors)
        np.testing.assert_array_equal(rows, x[[i - 100 for i in ids]])
        assert list(part.payloads) == [f'{{"i": {i - 100}}}' for i in ids]
        seen += ids
    assert sorted(seen) == list(range(100, 110))
    mixed = pb.UpsertRequest()
    mixed.CopyFrom(req)
    mixed.ids.CopyFrom(convert.ids_to_proto([1, "a"] + list(range(8))))
    assert routing.split_upsert(mixed, 3) is None
    short = pb.UpsertRequest()
    short.CopyFrom(req)
    short.vectors.data = short.vectors.data[:-4]
    assert routing.split_upsert(short, 3) is None


def _answer(
    ids: list[int], dists: list[float], k: int, pays: list[str] | None = None
) -> pb.SearchResponse:
    found = len(ids)
    flat_ids = ids + [-1] * (k - found)
    d = np.array(dists + [np.inf] * (k - found), np.float32)
    msg = pb.SearchResponse(nq=1, k=k, ids=pb.Ids(ints=pb.IntIds(values=flat_ids)),
                            distances=d.tobytes(), found=[found])  # fmt: skip
    if pays is not None:
        msg.with_payload = True
        msg.payloads.extend(pays + [""] * (k - found))
    msg.stats.queries = 1
    return msg


def test_merge_search_takes_the_k_smallest_ties_in_shard_order() -> None:
    """The merged top-k: smallest distances first, equal distances in shard order, payloads
    with their hits, padding when the shards found fewer than k; stats add up."""
    a = _answer([1, 2], [0.5, 2.0], 4, ['{"s": 0}', '{"s": 0.2}'])
    b = _answer([7, 8, 9], [0.5, 1.0, 3.0], 4, ['{"s": 1}', '{"s": 1.8}', '{"s": 1.9}'])
    out = merge.merge_search([a, b], 4)
    assert list(out.ids.ints.values) == [1, 7, 8, 2]
    assert np.frombuffer(out.distances, np.float32).tolist() == [0.5, 0.5, 1.0, 2.0]
    assert list(out.payloads) == ['{"s": 0}', '{"s": 1}', '{"s": 1.8}', '{"s": 0.2}']
    assert out.stats.queries == 1 and out.stats.extra["shards"] == 2
    few = merge.merge_search([_answer([3], [1.0], 3), _answer([], [], 3)], 3)
    assert list(few.ids.ints.values) == [3, -1, -1] and list(few.found) == [1]


def test_merge_scroll_pages_in_id_order_with_the_next_offset() -> None:
    """The union's first `limit` points in id order; next offset = the first id not on the
    page that any shard has (a shard's own next offset included)."""

    def page(ids: list[int], nxt: int | None) -> pb.ScrollResponse:
        out = pb.ScrollResponse(points=pb.Points(ids=convert.ids_to_proto(ids),
                                                 payloads=[""] * len(ids)))  # fmt: skip
        if nxt is not None:
            out.next_offset.CopyFrom(pb.Id(int_id=nxt))
        return out

    out = merge.merge_scroll([page([1, 4, 6], 9), page([2, 3], None), page([5, 7, 8], 10)], 4)
    assert list(out.points.ids.ints.values) == [1, 2, 3, 4]
    assert out.next_offset.int_id == 5
    last = merge.merge_scroll([page([1, 4], None), page([2], None)], 5)
    assert list(last.points.ids.ints.values) == [1, 2, 4] and not last.HasField("next_offset")
    cut = merge.merge_scroll([page([1, 2], 3), page([10, 11], None)], 2)
    assert list(cut.points.ids.ints.values) == [1, 2] and cut.next_offset.int_id == 3


def test_merge_get_answers_in_request_order() -> None:
    """Points found on any shard come back in the order the request named them."""
    x = np.eye(3, dtype=np.float32)

    def got(ids: list[int], rows: list[int]) -> pb.GetResponse:
        return pb.GetResponse(points=pb.Points(ids=convert.ids_to_proto(ids),
                                               vectors=convert.matrix_to_proto(x[rows]),
                                               payloads=[""] * len(ids)))  # fmt: skip

    out = merge.merge_get(
        convert.ids_to_proto([30, 99, 10, 20]), [got([10, 30], [0, 2]), got([20], [1])]
    )
    assert list(out.points.ids.ints.values) == [30, 10, 20]
    np.testing.assert_array_equal(convert.vectors_from_proto(out.points.vectors), x[[2, 0, 1]])


def test_cluster_settings_are_checked_and_read_from_the_environment() -> None:
    """[cluster] from VECDB__CLUSTER__*; bad values name their key; the shard index comes from
    the flag or the trailing -<n> of HOSTNAME."""
    cfg = load_config(env={"VECDB__CLUSTER__ROLE": "router",
                           "VECDB__CLUSTER__SHARDS": "a:1, b:2",
                           "VECDB__CLUSTER__DEADLINE_MARGIN_MS": "20"})  # fmt: skip
    assert (cfg.cluster.role, cfg.cluster.shards, cfg.cluster.deadline_margin_ms) == (
        "router", ["a:1", "b:2"], 20)  # fmt: skip
    for env, field in (({"VECDB__CLUSTER__ROLE": "boss"}, "cluster.role"),
                       ({"VECDB__CLUSTER__ROLE": "router"}, "cluster.shards"),
                       ({"VECDB__CLUSTER__ROLE": "shard"}, "cluster.etcd"),
                       ({"VECDB__CLUSTER__DEADLINE_MARGIN_MS": "-1"}, "cluster.deadline_margin_ms"),
                       ({"VECDB__CLUSTER__SHARDS": "nohost"}, "cluster.shards[0]")):  # fmt: skip
        with pytest.raises(InvalidArgument) as info:
            load_config(env=env)
        assert info.value.field == field
    shard = load_config(env={"VECDB__CLUSTER__ROLE": "shard", "VECDB__CLUSTER__ETCD": "e:1"})
    assert shard_index(shard, {"HOSTNAME": "vecdb-shard-2"}) == 2
    with pytest.raises(InvalidArgument, match="HOSTNAME"):
        shard_index(shard, {"HOSTNAME": "laptop"})
    shard.cluster.shard_index = 5
    assert shard_index(shard, {"HOSTNAME": "vecdb-shard-2"}) == 5
