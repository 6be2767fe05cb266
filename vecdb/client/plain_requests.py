"""The request builders' fast path (issue 12: a single query over gRPC pays the builder on
every call): the common search call, whose arguments can hold nothing the wire cannot carry,
built straight into its message. `vecdb.client.requests` tries it first and takes its general
path (the rule book's checks, in the engine's order) for every other call, so the message
is the same either way. A big batch's request is a `PackedSearch`: its queries go from the
caller's rows into the wire bytes in one copy. Likewise `plain_answer` decodes the common
answer (integer ids and nothing else) into the `SearchResult` that
`convert.result_from_proto` gives, and returns None for every other answer. Imports the
wire, `vecdb.types` and the rule book's text check only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vecdb.engine import validate as rules
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import SearchResult

_PLAIN_VALUES = frozenset({int, float, bool, str, type(None)})  # exact types of flat params


_CACHED_VALUES = frozenset({int, bool, str, type(None)})  # of params whose text is cached
_TEXTS: dict[tuple[Any, ...], str] = {}  # (key, type, value) items of flat params -> text
MAX_TEXTS = 256  # cached params texts; the cache starts over past this


def _flat_json(value: Any) -> str | None:
    """`json_arg(value)` for None or a flat dict of string keys and plain values (the usual
    search `params`), which can hold nothing the wire cannot carry; None for anything else.

    The text of params without floats is cached by their (key, type, value) items: the same
    params on every call (an app's usual `{"max_postings": 48}`) cost a tuple and a lookup
    instead of `json.dumps` (issue 12: ~3 us of a single query's ~10 us request build). The
    type is part of the key (1, True and "1" have other texts); floats are not cached (0.0
    and -0.0 are equal but print differently)."""
    if value is None:
        return ""
    if type(value) is not dict:
        return None
    cacheable = True
    for key, item in value.items():
        kind = type(item)
        if type(key) is not str or kind not in _PLAIN_VALUES:
            return None
        cacheable = cacheable and kind in _CACHED_VALUES
    if cacheable:
        items = tuple((k, type(v), v) for k, v in value.items())
        text = _TEXTS.get(items)
        if text is not None:
            return text
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if rules.lone_surrogate(text):
        return None
    if cacheable:
        if len(_TEXTS) >= MAX_TEXTS:
            _TEXTS.clear()
        _TEXTS[items] = text
    return text


PACK_MIN_BYTES = 1 << 16  # queries of at least this many bytes travel packed


def _tag(message: Any, field: str) -> bytes:
    """The wire tag of a length-delimited field (field number, wire type 2)."""
    return bytes([message.DESCRIPTOR.fields_by_name[field].number << 3 | 2])


QUERIES_TAG = _tag(pb.SearchRequest, "queries")
DATA_TAG = _tag(pb.Vectors, "data")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class PackedSearch:
    """A search request whose queries' bytes stay the caller's float32 rows until it is sent:
    `SerializeToString` writes them once, into the wire bytes, after the rest of the message
    (`msg`, whose `queries` holds the dimension and count), as a second occurrence of the
    `queries` field holding only `data` (protobuf merges the two: the server parses the
    message the general path builds). Building the message and serialising it copied a
    1,000 x 384 batch's 1.5 MB four times; in a process whose allocator returns big buffers
    to the system (`vecdb.allocator`, as any process with an open database does) each copy
    faults in fresh pages (~0.7 ms each; issue 12). Attributes are the message's; the rows
    are the caller's array, read when the request is sent (each attempt)."""

    __slots__ = ("msg", "rows")

    def __init__(self, msg: pb.SearchRequest, rows: Any) -> None:
        object.__setattr__(self, "msg", msg)
        object.__setattr__(self, "rows", rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.msg, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.msg, name, value)

    def SerializeToString(self, deterministic: bool = False) -> bytes:  # noqa: N802 (protobuf's)
        data = memoryview(self.rows).cast("B")
        size = _varint(len(data))
        return b"".join((
            self.msg.SerializeToString(deterministic=deterministic),
            QUERIES_TAG, _varint(len(DATA_TAG) + len(size) + len(data)), DATA_TAG, size, data,
        ))  # fmt: skip


AnySearch = pb.SearchRequest | PackedSearch  # what Search and SearchStream send


def serialize_search(req: AnySearch) -> bytes:
    """The request serializer of Search and SearchStream (either kind of request)."""
    return req.SerializeToString()


def plain_search(
    name: Any, queries: Any, k: Any, filter: Any, params: Any, with_payload: Any,
    with_vectors: Any,
) -> AnySearch | None:  # fmt: skip
    """The request of the common call (a str name, an int k, a float32 matrix or vector, no
    filter, flat params, bool flags) built without the general path's checks, none of which
    can fail for it; None for any other call. Issue 12: the single-query path."""
    if (type(name) is not str or type(k) is not int or filter is not None
            or type(with_payload) is not bool or type(with_vectors) is not bool
            or type(queries) is not np.ndarray or queries.dtype != convert.F32
            or queries.ndim not in (1, 2) or rules.lone_surrogate(name)
            or not convert.INT64_MIN <= k <= convert.INT64_MAX):  # fmt: skip
        return None
    text = _flat_json(params)
    if text is None:
        return None
    rows = queries.reshape(1, -1) if queries.ndim == 1 else queries
    options = pb.SearchOptions(k=k, params=text, with_payload=with_payload,
                               with_vectors=with_vectors)  # fmt: skip
    if rows.nbytes >= PACK_MIN_BYTES:
        count, dim = rows.shape
        return PackedSearch(pb.SearchRequest(
            collection=name, queries=pb.Vectors(dim=dim, count=count), options=options,
        ), np.ascontiguousarray(rows))  # fmt: skip
    return pb.SearchRequest(collection=name, queries=convert.matrix_to_proto(rows),
                            options=options)  # fmt: skip


def plain_answer(msg: pb.SearchResponse) -> SearchResult | None:
    """`convert.result_from_proto(msg)` of the common answer (integer ids, no payloads,
    vectors or missing shards, sizes that agree), with fewer Python calls; None for any
    other answer (then take the general path, which also reports a malformed one)."""
    nq, k = msg.nq, msg.k
    values = msg.ids.ints.values
    if (msg.with_payload or msg.with_vectors or len(msg.missing_shards)
            or msg.ids.WhichOneof("kind") != "ints" or len(values) != nq * k
            or len(msg.distances) != 4 * nq * k):  # fmt: skip
        return None
    return SearchResult(
        ids=convert.int64_array(values).reshape(nq, k),
        distances=np.frombuffer(msg.distances, convert.F32).astype(np.float32).reshape(nq, k),
        degraded=msg.degraded,
    )
