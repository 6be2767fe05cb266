"""The request builders' fast path (issue 12: a single query over gRPC pays the builder on
every call): the common search call, whose arguments can hold nothing the wire cannot carry,
built straight into its message. `vecdb.client.requests` tries it first and takes its general
path (the rule book's checks, in the engine's order) for every other call, so the message
is the same either way. Likewise `plain_answer` decodes the common answer (integer ids and
nothing else) into the `SearchResult` that `convert.result_from_proto` gives, and returns None
for every other answer. Imports the wire, `vecdb.types` and the rule book's text check only.
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


def plain_search(
    name: Any, queries: Any, k: Any, filter: Any, params: Any, with_payload: Any,
    with_vectors: Any,
) -> pb.SearchRequest | None:  # fmt: skip
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
