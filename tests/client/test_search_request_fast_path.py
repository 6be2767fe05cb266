"""The search request builder's fast path (`vecdb.client.plain_requests`, issue 12) builds the
very message the general path builds, takes only the calls it can build, and leaves every
other call (including every faulty one) to the general path and its errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdb.client import plain_requests
from vecdb.client import requests as rq
from vecdb.client.remote import search_request
from vecdb.errors import InvalidArgument
from vecdb.rpc.v1 import vecdb_pb2 as pb

Q = np.arange(8, dtype=np.float32).reshape(2, 4)


def general(monkeypatch: pytest.MonkeyPatch, *args: Any) -> bytes:
    """The message of the general path (fast path switched off), serialized."""
    with monkeypatch.context() as m:
        m.setattr(rq, "plain_search", lambda *a: None)
        return bytes(search_request(*args).SerializeToString(deterministic=True))


def fast(*args: Any) -> bytes:
    return bytes(search_request(*args).SerializeToString(deterministic=True))


PLAIN = [  # (name, queries, k, filter, params, with_payload, with_vectors, tenant, tenants)
    ("c", Q, 10, None, None, False, False, None, None),
    ("c", Q[0], 3, None, {"max_postings": 48}, True, False, None, None),
    ("c", Q[:1], 1, None, {"a": 1, "b": 2.5, "c": True, "d": "x", "e": None}, False, True,
     None, None),
    ("naïve", Q, 0, None, {}, False, False, "t1", ["t1", "t2"]),
    ("c", Q, -5, None, {"k": float("nan")}, False, False, None, None),
    ("c", np.zeros((0, 4), np.float32), 10, None, None, False, False, None, None),
]  # fmt: skip


@pytest.mark.parametrize("args", PLAIN)
def test_fast_path_message_equals_the_general_one(
    monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...]
) -> None:
    assert plain_requests.plain_search(*args[:7]) is not None  # it is the fast path's call
    assert fast(*args) == general(monkeypatch, *args)


@settings(max_examples=60, deadline=None)
@given(
    params=st.dictionaries(
        st.text(max_size=6),
        st.one_of(
            st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.text(max_size=6), st.none()
        ),  # fmt: skip
        max_size=4,
    ),
    k=st.integers(-(2**63), 2**63 - 1),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_fast_path_matches_on_any_flat_params(
    params: dict[str, Any], k: int, flags: tuple[bool, bool, bool]
) -> None:
    args = ("coll", Q, k, None, params, flags[0], flags[1], None, None, flags[2])
    with pytest.MonkeyPatch.context() as m:
        m.setattr(rq, "plain_search", lambda *a: None)
        want = search_request(*args).SerializeToString(deterministic=True)
    assert search_request(*args).SerializeToString(deterministic=True) == want


NOT_PLAIN = [  # each differs from a plain call in one argument
    ("c", Q.astype(np.float64), 10, None, None, False, False),  # not float32
    ("c", [[1.0, 2.0]], 10, None, None, False, False),  # a list, not an array
    ("c", Q.reshape(1, 2, 4), 10, None, None, False, False),  # 3-D
    ("c", Q, 10, {"a": {"$eq": 1}}, None, False, False),  # a filter
    ("c", Q, 10, None, {"a": [1, 2]}, False, False),  # nested params
    ("c", Q, 10, None, {1: 2}, False, False),  # a key that is not text
    ("c", Q, 10, None, {"a": np.float64(1.0)}, False, False),  # a numpy scalar
    ("c", Q, 10, None, {"a": "\ud800"}, False, False),  # a lone surrogate
    ("c", Q, np.int64(10), None, None, False, False),  # a numpy integer k
    ("c", Q, True, None, None, False, False),  # a bool k
    ("c", Q, 2**63, None, None, False, False),  # k beyond int64
    ("c", Q, 10, None, None, 1, False),  # a flag that is not a bool
    ("c\ud800", Q, 10, None, None, False, False),  # a name with a lone surrogate
    (None, Q, 10, None, None, False, False),  # no name
]  # fmt: skip


@pytest.mark.parametrize("args", NOT_PLAIN)
def test_other_calls_take_the_general_path(args: tuple[Any, ...]) -> None:
    assert plain_requests.plain_search(*args) is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("c", Q, 2**63, None, None, False, False, None, None), None),
        (("c", Q, 10, None, {"a": {1, 2}}, False, False, None, None), "params"),
        (("c", Q, 10, None, None, 1, False, None, None), "with_payload"),
        ((None, Q, 10, None, None, False, False, None, None), "collection"),
    ],
)
def test_faulty_calls_still_get_the_rule_books_error(
    monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...], field: str | None
) -> None:
    """The same error, word for word, as the general path alone gives."""
    with pytest.raises(InvalidArgument) as info:
        search_request(*args)
    with monkeypatch.context() as m, pytest.raises(InvalidArgument) as alone:
        m.setattr(rq, "plain_search", lambda *a: None)
        search_request(*args)
    got, want = info.value, alone.value
    assert (got.message, got.field, got.reason) == (want.message, want.field, want.reason)
    if field is not None:
        assert got.field == field


@pytest.mark.parametrize(
    "params",
    [{"a": 1}, {"a": True}, {"a": "1"}, {"a": None}, {"a": 1, "b": 2}, {"b": 2, "a": 1},
     {"a": 2**64}, {"a": 0.0}, {"a": -0.0}, {}],
)  # fmt: skip
def test_cached_params_text_is_the_general_one_on_every_call(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> None:
    """The params text cache (keyed by key, type and value) gives each call the general
    path's text, also when equal values of other types (1, True, 1.0) were cached before."""
    for earlier in ({"a": 1}, {"a": True}, {"a": 1.0}, {"a": 0.0}, params):  # fill the cache
        fast("c", Q, 3, None, earlier, False, False, None, None)
    args = ("c", Q, 3, None, params, False, False, None, None)
    want = general(monkeypatch, *args)
    assert fast(*args) == want
    assert fast(*args) == want  # a cache hit the second time


def test_params_text_cache_stays_bounded() -> None:
    for i in range(plain_requests.MAX_TEXTS + 10):
        fast("c", Q, 3, None, {"n": i}, False, False, None, None)
    assert len(plain_requests._TEXTS) <= plain_requests.MAX_TEXTS


BIG = np.random.default_rng(3).standard_normal((600, 64)).astype(np.float32)  # 153,600 bytes


@pytest.mark.parametrize("queries", [BIG, BIG[::2], BIG[:, :32]], ids=["rows", "strided", "cols"])
def test_a_big_batch_is_packed_and_parses_to_the_general_message(
    monkeypatch: pytest.MonkeyPatch, queries: np.ndarray
) -> None:
    """A batch of >= PACK_MIN_BYTES travels as a `PackedSearch`: its bytes (the queries as a
    second `queries` field) parse to the general path's message, fields set after the build
    (the lane's deadline, allow_partial, a tenant block, with_stats) included."""
    assert queries.nbytes >= plain_requests.PACK_MIN_BYTES
    args = ("c", queries, 7, None, {"max_postings": 8}, False, False, "t1", ["t1", "t2"], True)
    packed = search_request(*args)
    assert isinstance(packed, plain_requests.PackedSearch)
    with monkeypatch.context() as m:
        m.setattr(rq, "plain_search", lambda *a: None)
        want = search_request(*args)
    for req in (packed, want):
        req.timeout_ms = 1234
        req.allow_partial = True
    wire = plain_requests.serialize_search(packed)
    got = pb.SearchRequest.FromString(wire)
    assert got == want and got.queries.data == queries.tobytes()
    assert len(wire) < want.ByteSize() + 8  # the rows are in it once


def test_a_small_batch_is_a_plain_message() -> None:
    req = search_request("c", BIG[:10], 7, None, None, False, False, None, None)
    assert isinstance(req, pb.SearchRequest)
