"""The answer decoders' fast path (`plain_answer` in the SDK, `plain_result` in the server;
issue 12) give exactly what the general conversions give, and leave every other answer to
them."""

from __future__ import annotations

import numpy as np
import pytest

from vecdb.client.plain_requests import plain_answer
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.servicer import plain_result
from vecdb.types import SearchResult


def _result(nq: int, k: int, pad: int = 0, degraded: str = "") -> SearchResult:
    rng = np.random.default_rng(nq * 100 + k)
    ids = rng.integers(0, 2**62, (nq, k), dtype=np.int64)
    dist = rng.random((nq, k), dtype=np.float32)
    if pad and k:
        ids[:, k - pad :] = -1
        dist[:, k - pad :] = np.inf
    return SearchResult(ids=ids, distances=dist, degraded=degraded)


CASES = [(1, 10, 0), (1, 10, 3), (4, 5, 5), (0, 10, 0), (3, 0, 0), (2, 1, 0), (100, 10, 2)]


@pytest.mark.parametrize(("nq", "k", "pad"), CASES)
def test_plain_result_is_the_general_message(nq: int, k: int, pad: int) -> None:
    res = _result(nq, k, pad, degraded="rebuilding" if pad else "")
    want = convert.result_to_proto(res).SerializeToString(deterministic=True)
    assert plain_result(res).SerializeToString(deterministic=True) == want
    for ids in (res.ids.astype(np.int32), res.ids.astype(np.uint32)):  # other integer kinds
        other = SearchResult(ids=ids, distances=res.distances)
        want = convert.result_to_proto(other).SerializeToString(deterministic=True)
        assert plain_result(other).SerializeToString(deterministic=True) == want
    wide = np.empty((nq, 2 * k), np.float64)  # float64 distances, a strided view of them
    wide[:, ::2] = res.distances
    for dist in (res.distances.astype(np.float64), wide[:, ::2]):
        other = SearchResult(ids=res.ids, distances=dist)
        want = convert.result_to_proto(other).SerializeToString(deterministic=True)
        assert plain_result(other).SerializeToString(deterministic=True) == want


def test_plain_result_hands_string_ids_to_the_general_path() -> None:
    ids = np.array([["a", None]], dtype=object)
    res = SearchResult(ids=ids, distances=np.array([[0.5, np.inf]], np.float32))
    assert plain_result(res) == convert.result_to_proto(res)


@pytest.mark.parametrize(("nq", "k", "pad"), CASES)
def test_plain_answer_is_the_general_result(nq: int, k: int, pad: int) -> None:
    msg = convert.result_to_proto(_result(nq, k, pad, degraded="x" if pad else ""))
    got, want = plain_answer(msg), convert.result_from_proto(msg)
    assert got is not None
    assert got.ids.dtype == want.ids.dtype and got.ids.shape == want.ids.shape
    assert np.array_equal(got.ids, want.ids)
    assert got.distances.dtype == want.distances.dtype
    assert np.array_equal(got.distances, want.distances)
    assert (got.payloads, got.vectors, got.stats, got.degraded, got.missing_shards) == (
        want.payloads, want.vectors, want.stats, want.degraded, want.missing_shards)  # fmt: skip
    got.distances[...] = 0  # writable, like the general path's
    got.ids[...] = 0


def _plain_msg() -> pb.SearchResponse:
    return convert.result_to_proto(_result(2, 3))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: setattr(m, "with_payload", True),
        lambda m: setattr(m, "with_vectors", True),
        lambda m: m.missing_shards.append("shard-1"),
        lambda m: m.ids.CopyFrom(pb.Ids(strs=pb.StrIds(values=[b"a"] * 6))),
        lambda m: m.ids.ints.values.append(7),  # more ids than nq x k
        lambda m: setattr(m, "distances", m.distances[:-4]),  # fewer distances
        lambda m: m.ClearField("ids"),
    ],
)
def test_other_answers_take_the_general_path(change: object) -> None:
    msg = _plain_msg()
    assert plain_answer(msg) is not None
    change(msg)  # type: ignore[operator]
    assert plain_answer(msg) is None


@pytest.mark.parametrize("n", [0, 1, convert.FROMITER_MAX, convert.FROMITER_MAX + 1, 10_000])
def test_int64_array_is_the_repeated_field_on_both_sides_of_its_switch(n: int) -> None:
    """Element by element below FROMITER_MAX, in one copy above: the same writable int64
    values, the extremes of int64 included."""
    values = np.random.default_rng(n).integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    values[: min(n, 2)] = [-(2**63), 2**63 - 1][: min(n, 2)]
    field = pb.IntIds(values=values.tolist()).values
    got = convert.int64_array(field)
    assert got.dtype == np.int64 and got.shape == (n,)
    assert got.tolist() == values.tolist()
    got[...] = 0  # its own memory
    assert list(field) == values.tolist()
