"""The request builders' fast path (issue 12: a single query over gRPC pays the builder on
every call): the common search call, whose arguments can hold nothing the wire cannot carry,
built straight into its message. `vecdb.client.requests` tries it first and takes its general
path (the rule book's checks, in the engine's order) for every other call, so the message
is the same either way. Imports the wire and the rule book's text check only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vecdb.engine import validate as rules
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb

_PLAIN_VALUES = frozenset({int, float, bool, str, type(None)})  # exact types of flat params


def _flat_json(value: Any) -> str | None:
    """`json_arg(value)` for None or a flat dict of string keys and plain values (the usual
    search `params`), which can hold nothing the wire cannot carry; None for anything else."""
    if value is None:
        return ""
    if type(value) is not dict:
        return None
    for key, item in value.items():
        if type(key) is not str or type(item) not in _PLAIN_VALUES:
            return None
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return None if rules.lone_surrogate(text) else text


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
