"""Request builders shared by the sync and the async remote client.

The wire carries every input as the user gave it (raw dims and counts, ragged rows, ids of any
kind, integers beyond the valid range, JSON null, NaN and lone surrogates inside JSON), so the
server's engine judges it with the one rule book, `vecdb.engine.validate`, and the error reads
the same as an embedded call's. Only Python values the wire has no way to carry (a set in a
payload, strings where numbers go, a float beyond float32, a k that is not an integer) are
judged here, and by that same rule book: first the checks the engine would make before them
that need no stored state (the collection name, then k, ...), then the value itself. The
clients then ask the server for the collection (and the tenants the call names) and run the
engine's earlier checks that need them (it exists, its kind, its tenant mode, id type and
dimension, the tenants exist: `vecdb.client.prejudge`) before raising, so both modes name
the same fault first. Imports the wire (`vecdb.rpc`)
and the rule book, never the rest of the engine or the server; text arguments that cannot
travel (a payload index key or type, a snapshot name that is not a string) are judged by the
engine's own check of that argument, imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from vecdb.client.plain_requests import AnySearch, plain_search
from vecdb.engine import filters
from vecdb.engine import validate as rules
from vecdb.errors import InvalidArgument, VecdbError, echo
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.types import CollectionKind, IdType, IndexKind, Metric

T = TypeVar("T")
_F32_MAX = float(np.finfo(np.float32).max)


class Uncarriable(Exception):
    """A value the wire cannot carry; the builder then asks the rule book for the error."""


def build(make: Callable[[], T]) -> T:
    """Construct a message; protobuf type/range errors become `InvalidArgument`."""
    try:
        return make()
    except VecdbError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(f"invalid argument: {exc}") from None


def name_arg(name: Any, what: str = "collection") -> str:
    """A name as the wire carries it (any text); what is not text is judged by the rules."""
    if isinstance(name, str) and not rules.lone_surrogate(name):
        return name
    rules.check_name(what, name)  # raises: a name that is not text is never valid
    raise InvalidArgument(f"{what} name {echo(name)} is invalid", field=what)


def _int64(value: Any) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if convert.INT64_MIN <= int(value) <= convert.INT64_MAX:
            return int(value)
    raise Uncarriable()


def _bool(value: Any) -> bool:
    """A true/false argument: only a bool travels (anything else is the rule book's error)."""
    if isinstance(value, bool):
        return value
    raise Uncarriable()


def flags(*pairs: tuple[str, Any]) -> None:
    """Judge true/false arguments the wire cannot carry otherwise, in the engine's order."""
    for name, value in pairs:
        rules.check_flag(name, value)


def _enum(table: dict[Any, Any], cls: Any, value: Any, lower: bool = False) -> Any:
    try:
        return table[cls(value.lower() if lower else value)]
    except (ValueError, AttributeError, TypeError, KeyError):
        raise Uncarriable() from None


# ---------------------------------------------------------------------------- values


def vectors_msg(vectors: Any, field: str) -> pb.Vectors:
    """Vectors as given: a matrix, or ragged rows (the server names the row at fault)."""
    rows = rules.shape_rows(vectors, field)
    if isinstance(rows, list):
        wide = [r.astype(np.float64, copy=False) for r in rows]
        if any(np.abs(r[np.isfinite(r)]).max(initial=0) > _F32_MAX for r in wide):
            _overflow(np.concatenate(wide).reshape(1, -1), field)
        return convert.rows_to_proto(rows)
    if rows.dtype != np.float32:
        finite = rows[np.isfinite(rows)] if rows.dtype.kind == "f" else rows
        if finite.size and np.abs(finite).max() > _F32_MAX:  # would arrive as inf
            _overflow(rows.astype(np.float64), field)
    return convert.matrix_to_proto(rows)


def _overflow(wide: Any, field: str) -> None:
    rules.check_components(wide, field)  # raises: |x| > float32 max is above MAX_ABS_COMPONENT
    raise InvalidArgument(f"{field} holds values beyond float32", field=field)


def ids_msg(ids: Any, field: str = "ids") -> pb.Ids:
    """Ids as given (mixed kinds and out-of-range integers included)."""
    if isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.dtype.kind == "i":
        return pb.Ids(ints=pb.IntIds(values=ids.astype(np.int64, copy=False)))
    return convert.ids_to_proto(rules.check_id_list(ids, field))


def json_arg(value: Any, field: str) -> str:
    """An optional JSON argument (filter, params, index_params, payload): None is "". A filter
    JSON cannot carry (a set, a key that is not a string) is judged by the engine's own
    filter check first, so the error is the embedded one."""
    if value is None:
        return ""
    try:
        return rules.json_text(value, field)
    except InvalidArgument:
        if field == "filter":
            filters.parse(value)
        raise


def payloads_msg(payloads: Any, field: str = "payloads") -> list[str]:
    if payloads is None:
        return []
    if not isinstance(payloads, Sequence) or isinstance(payloads, (str, bytes)):
        rules.prepare_payloads(payloads, 0, field)  # raises the rule book's type error
    return ["" if p is None else _payload_text(p, f"{field}[{i}]") for i, p in enumerate(payloads)]


def _payload_text(payload: Any, field: str) -> str:
    try:
        return rules.json_text(payload, field)
    except InvalidArgument:
        rules.payload_bytes(payload, field)  # raises the rule book's own payload error
        raise


# ---------------------------------------------------------------------------- requests


def create_request(
    name: Any, dim: Any, metric: Any, id_type: Any, index: Any, index_params: Any, kind: Any,
    multi_tenant: Any, exist_ok: Any,
) -> pb.CreateCollectionRequest:  # fmt: skip
    try:
        return build(lambda: pb.CreateCollectionRequest(
            name=name_arg(name), dim=_int64(dim),
            metric=_enum(convert.METRICS, Metric, metric, lower=True),
            id_type=_enum(convert.ID_TYPES, IdType, id_type),
            index=pb.INDEX_KIND_UNSPECIFIED if index is None else _enum(convert.INDEX_KINDS, IndexKind, index),
            index_params=json_arg(index_params, "index_params"),
            kind=_enum(convert.COLLECTION_KINDS, CollectionKind, kind),
            multi_tenant=_bool(multi_tenant), exist_ok=_bool(exist_ok),
        ))  # fmt: skip
    except (Uncarriable, InvalidArgument) as exc:
        # Database.create_collection's checks, in its order, give the embedded error.
        rules.check_name("collection", name)
        rules.check_flag("exist_ok", exist_ok)
        rules.check_dim(dim)
        rules.check_metric(metric)
        rules.check_id_type(id_type)
        if index is not None:
            from vecdb.index import registry  # the index kinds' own error

            registry.spec(index)
        rules.check_index_params(index_params)
        rules.check_kind(kind)
        rules.check_flag("multi_tenant", multi_tenant)
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument("create_collection arguments cannot be sent") from None


def judged(name: Any, make: Callable[[], T], *before: Callable[[], object]) -> T:
    """`make()`; if it finds a value the wire cannot carry, first the checks the engine makes
    before that value (the name, then `before`), so the error is the one an embedded call
    raises."""
    try:
        return make()
    except InvalidArgument:
        rules.check_name("collection", name)
        for check in before:
            check()
        raise


def upsert_request(name: Any, ids: Any, vectors: Any, payloads: Any) -> pb.UpsertRequest:
    collection = name_arg(name)
    return judged(name, lambda: build(lambda: pb.UpsertRequest(
        collection=collection, ids=ids_msg(ids), vectors=vectors_msg(vectors, "vectors"),
        payloads=payloads_msg(payloads),
    )))  # fmt: skip


def search_request(
    name: Any, queries: Any, k: Any, filter: Any, params: Any, with_payload: Any,
    with_vectors: Any,
) -> AnySearch:  # fmt: skip
    fast = plain_search(name, queries, k, filter, params, with_payload, with_vectors)
    if fast is not None:
        return fast
    collection = name_arg(name)
    # The engine's order: k, the filter, the flags, the queries (their dimension needs the
    # collection), then params.
    k_ = judged(name, lambda: _int_arg(k, rules.check_k))
    flt = judged(name, lambda: json_arg(filter, "filter"), lambda: rules.check_k(k_))
    earlier: tuple[Callable[[], object], ...] = (
        lambda: rules.check_k(k_),
        lambda: filters.parse(filter),
    )
    judged(name, lambda: flags(("with_payload", with_payload), ("with_vectors", with_vectors)),
           *earlier)  # fmt: skip
    queries_ = judged(name, lambda: vectors_msg(queries, "queries"), *earlier)
    options = judged(name, lambda: pb.SearchOptions(
        k=k_, filter=flt, params=json_arg(params, "params"),
        with_payload=with_payload, with_vectors=with_vectors,
    ), *earlier)  # fmt: skip
    return pb.SearchRequest(collection=collection, queries=queries_, options=options)


def _int_arg(value: Any, check: Callable[[Any], object]) -> int:
    """An integer argument carried as int64; anything else is judged by `check` (raises)."""
    try:
        return _int64(value)
    except Uncarriable:
        check(value)
        raise InvalidArgument(f"{echo(value)} is not an integer") from None


def scroll_request(
    name: Any, filter: Any, limit: Any, offset: Any, with_vectors: Any, with_payload: Any
) -> pb.ScrollRequest:
    collection = name_arg(name)
    # The engine's order: the filter, limit, the flags, then the offset (its type needs the
    # collection: it travels as given).
    flt = judged(name, lambda: json_arg(filter, "filter"))
    parse = (lambda: filters.parse(filter),)
    limit_ = judged(name, lambda: _int_arg(limit, rules.check_scroll_limit), *parse)
    judged(name, lambda: flags(("with_vectors", with_vectors), ("with_payload", with_payload)),
           *parse, lambda: rules.check_scroll_limit(limit_))  # fmt: skip
    req = pb.ScrollRequest(collection=collection, filter=flt, limit=limit_,
                           with_vectors=with_vectors, with_payload=with_payload)  # fmt: skip
    if offset is not None:
        req.offset.CopyFrom(convert.id_to_proto(offset))
    return req


def delete_request(name: Any, ids: Any, filter: Any) -> pb.DeleteRequest:
    collection = name_arg(name)
    req = judged(name, lambda: pb.DeleteRequest(collection=collection,
                                                 filter=json_arg(filter, "filter")))  # fmt: skip
    if ids is not None:
        req.ids.CopyFrom(judged(name, lambda: ids_msg(ids)))
    return req


def payload_request(name: Any, ids: Any, payload: Any) -> pb.SetPayloadRequest:
    collection = name_arg(name)
    ids_ = judged(name, lambda: ids_msg(ids))
    text = "null" if payload is None else judged(name, lambda: _payload_text(payload, "payload"))
    return pb.SetPayloadRequest(collection=collection, ids=ids_, payload=text)


def get_request(name: Any, ids: Any, with_vectors: Any) -> pb.GetRequest:
    collection = name_arg(name)
    ids_ = judged(name, lambda: ids_msg(ids))
    judged(name, lambda: flags(("with_vectors", with_vectors)))
    return pb.GetRequest(collection=collection, ids=ids_, with_vectors=with_vectors)


def text_arg(value: Any, field: str, check: Callable[[Any], object]) -> str:
    """A plain string argument (payload key and type, snapshot name); text the wire cannot
    carry (not a string, a lone surrogate) is judged by the engine's own `check`."""
    if isinstance(value, str) and not rules.lone_surrogate(value):
        return value
    check(value)  # raises: such a value is never valid
    raise InvalidArgument(f"{field} {echo(value)} is invalid", field=field)


def index_key_arg(key: Any) -> str:
    """A payload index key (`vecdb.engine.payload_index.check_key` judges what cannot travel;
    imported only then, as it loads the storage layer)."""

    def check(value: Any) -> None:
        from vecdb.engine.payload_index import check_key

        check_key(value)

    return text_arg(key, "key", check)


def index_type_arg(index_type: Any) -> str:
    def check(value: Any) -> None:
        from vecdb.engine.payload_index import check_type

        check_type(value)

    return text_arg(index_type, "type", check)


def snapshot_arg(snapshot: Any) -> str:
    def check(value: Any) -> None:
        from vecdb.engine.snapshot_files import check_snapshot_name

        check_snapshot_name(value)

    return text_arg(snapshot, "snapshot", check)


def count_request(name: Any, filter: Any) -> pb.CountRequest:
    return pb.CountRequest(collection=name_arg(name), filter=json_arg(filter, "filter"))


def payload_index_request(name: Any, key: Any, index_type: Any) -> pb.CreatePayloadIndexRequest:
    return pb.CreatePayloadIndexRequest(
        collection=name_arg(name), key=index_key_arg(key), type=index_type_arg(index_type)
    )


def drop_payload_index_request(name: Any, key: Any) -> pb.DropPayloadIndexRequest:
    return pb.DropPayloadIndexRequest(collection=name_arg(name), key=index_key_arg(key))


def optimize_request(name: Any, wait: Any) -> pb.OptimizeRequest:
    """`wait` is judged first, as the engine does, by the same check (same message and field)."""
    rules.check_flag("wait", wait)
    return pb.OptimizeRequest(collection=name_arg(name), no_wait=not wait)


S = TypeVar("S", pb.RestoreSnapshotRequest, pb.DeleteSnapshotRequest)


def snapshot_request(message: type[S], name: Any, snapshot: Any) -> S:
    """A restore or delete request: the collection, then the snapshot name."""
    return message(collection=name_arg(name), snapshot=snapshot_arg(snapshot))


def stats_request(name: Any) -> pb.StatsRequest:
    return pb.StatsRequest(collection="" if name is None else name_arg(name))
