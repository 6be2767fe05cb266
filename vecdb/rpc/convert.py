"""The one place that maps between the wire (`vecdb_pb2` messages, gRPC status codes) and
vecdb's own values (`vecdb.types`, numpy arrays, `vecdb.errors`).

Both the server (`vecdb.server.servicer`) and the remote clients (`vecdb.client.remote`,
`vecdb.client.aio`) call these functions, so the two ends cannot disagree on byte order,
padding or error classes. Encoders raise `InvalidArgument` for input the wire cannot carry
(mixed id types, ragged vectors, values that are not JSON); decoders raise it for malformed
messages (a vector blob whose length is not count * dim * 4, invalid UTF-8). It must not
import the engine, the server or the clients; it does no validation the engine does anyway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from vecdb import config as caps
from vecdb.errors import ERROR_BY_CODE, Internal, InvalidArgument, VecdbError
from vecdb.rpc import vecdb_pb2 as pb
from vecdb.types import (
    CollectionInfo,
    CollectionKind,
    Id,
    IdType,
    IndexKind,
    Metric,
    Payload,
    Record,
    SearchResult,
)

F32 = np.dtype("<f4")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# ---------------------------------------------------------------------------- vectors


class Ragged(InvalidArgument):
    """A list of rows of different lengths; the client asks the collection's dimension and
    reports the first row that does not match it (`ragged_error`)."""

    def __init__(self, lengths: list[int], field: str) -> None:
        super().__init__(f"{field} has rows of different lengths")
        self.lengths = lengths
        self.field = field


def vectors_to_proto(vectors: object, field: str = "vectors") -> pb.Vectors:
    """A (n, d) or (d,) array-like as little-endian float32 rows."""
    lengths = ragged_lengths(vectors)
    if lengths is not None:
        raise Ragged(lengths, field)
    try:
        arr = np.asarray(vectors)
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"dtype {arr.dtype}")
        arr = arr.astype(F32, copy=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{field} must be a numeric matrix: {exc}") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgument(f"{field} must be 1- or 2-dimensional, got shape {arr.shape}")
    count, dim = arr.shape
    return pb.Vectors(dim=dim, count=count, data=np.ascontiguousarray(arr).tobytes())


def vectors_from_proto(msg: pb.Vectors, field: str = "vectors") -> npt.NDArray[np.float32]:
    """The (count, dim) float32 matrix of a `Vectors` message, checking the blob length."""
    return _matrix(msg.data, msg.count, msg.dim, field)


def vector_from_bytes(data: bytes, field: str = "query") -> npt.NDArray[np.float32]:
    """A single (d,) float32 vector from a bare little-endian blob."""
    if len(data) % 4:
        raise InvalidArgument(f"{field} has {len(data)} bytes, not a multiple of 4 (float32)")
    return np.frombuffer(data, dtype=F32).astype(np.float32)


def _matrix(data: bytes, count: int, dim: int, field: str) -> npt.NDArray[np.float32]:
    if len(data) % 4:
        raise InvalidArgument(f"{field}.data has {len(data)} bytes, not a multiple of 4 (float32)")
    if len(data) != count * dim * 4:
        raise InvalidArgument(
            f"{field}.data has {len(data)} bytes but count={count} x dim={dim} needs "
            f"{count * dim * 4}"
        )
    flat = np.frombuffer(data, dtype=F32)
    return flat.astype(np.float32).reshape(count, dim)


# ---------------------------------------------------------------------------- ids


class UntypedIds(InvalidArgument):
    """The ids are neither all integers nor all strings, so the wire cannot carry them; the
    client asks the collection's id type and reports the first misfit (`misfit_id_error`)."""

    def __init__(self, items: list[Any], field: str) -> None:
        super().__init__(f"{field}: ids must be all integers or all strings")
        self.items = items
        self.field = field


def ids_to_proto(ids: object, field: str = "ids") -> pb.Ids:
    """A list of ints or a list of strs as an `Ids` message (an empty list travels as ints)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise InvalidArgument(f"{field} must be a list of ids")
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        flat = ids.ravel()
        over = np.flatnonzero(flat > INT64_MAX) if flat.dtype.kind == "u" else np.zeros(0, int)
        if over.size:
            raise _range_error(field, int(over[0]), int(flat[over[0]]))
        return pb.Ids(ints=pb.IntIds(values=flat.astype(np.int64).tolist()))
    items = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
    if items and all(isinstance(v, str) for v in items):
        out: list[bytes] = []
        for i, v in enumerate(items):
            try:
                out.append(v.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidArgument(f"{field}[{i}] is not valid Unicode text") from None
        return pb.Ids(strs=pb.StrIds(values=out))
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise UntypedIds(items, field)
    for i, v in enumerate(items):
        if not INT64_MIN <= int(v) <= INT64_MAX:
            raise _range_error(field, i, int(v))
    return pb.Ids(ints=pb.IntIds(values=[int(v) for v in items]))


def _range_error(field: str, pos: int, value: int) -> InvalidArgument:
    return InvalidArgument(
        f"{field}[{pos}] = {value} is out of range [{caps.MIN_INT_ID}, {caps.MAX_INT_ID}]"
    )


def misfit_id_error(exc: UntypedIds, id_type: IdType) -> InvalidArgument:
    """The engine's error for the first id that does not fit a collection of `id_type`."""
    want_str = id_type is IdType.STR
    for i, v in enumerate(exc.items):
        fits = isinstance(v, str) if want_str else isinstance(v, (int, np.integer))
        if not fits or isinstance(v, bool):
            kind = "string" if want_str else "integer"
            return InvalidArgument(f"{exc.field}[{i}] = {v!r}: this collection has {kind} ids")
    return exc


def ragged_lengths(vectors: object) -> list[int] | None:
    """Row lengths of a list of rows whose lengths differ (None if not such a list); the client
    then reports the first row that does not match the collection's dimension."""
    if isinstance(vectors, np.ndarray) or not isinstance(vectors, (list, tuple)) or not vectors:
        return None
    if not any(isinstance(r, (list, tuple, np.ndarray)) for r in vectors):
        return None  # one flat vector
    lengths = [len(r) if hasattr(r, "__len__") else -1 for r in vectors]
    return lengths if len(set(lengths)) > 1 else None


def ragged_error(exc: Ragged, dim: int) -> InvalidArgument:
    """The engine's error for the first row whose length is not `dim`."""
    for i, n in enumerate(exc.lengths):
        if n != dim:
            return InvalidArgument(f"{exc.field}[{i}]: expected {dim} floats, got {n}")
    return exc


def check_filter(flt: object) -> None:
    """A filter must be a dict keyed by field names: JSON would silently turn int keys into
    strings, so this is checked before encoding (the engine says the same)."""
    if flt is not None and (not isinstance(flt, dict) or not all(isinstance(k, str) for k in flt)):
        raise InvalidArgument("filter must be a dict of payload field -> value")


def ids_from_proto(msg: pb.Ids, field: str = "ids") -> list[Id]:
    """The ids of an `Ids` message as Python ints or strs (strict UTF-8)."""
    if msg.HasField("strs"):
        out: list[Id] = []
        for i, raw in enumerate(msg.strs.values):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidArgument(f"{field}[{i}] is not valid UTF-8") from None
        return out
    return list(msg.ints.values)


# ---------------------------------------------------------------------------- payloads / JSON


def payloads_to_proto(payloads: object, field: str = "payloads") -> list[bytes]:
    """Payloads (or None) as UTF-8 JSON texts; None entries become empty bytes."""
    if payloads is None:
        return []
    if isinstance(payloads, (str, bytes)) or not isinstance(payloads, Sequence):
        raise InvalidArgument(f"{field} must be a list of dicts (or None)")
    return [b"" if p is None else dumps_json(p, f"{field}[{i}]") for i, p in enumerate(payloads)]


def payloads_from_proto(raw: Sequence[bytes], field: str = "payloads") -> list[Any] | None:
    """Decode UTF-8 JSON payloads; an empty list means no payloads, empty bytes mean None."""
    if not raw:
        return None
    return [None if not r else loads_json(r, f"{field}[{i}]") for i, r in enumerate(raw)]


def dumps_json(value: object, field: str) -> bytes:
    """Compact UTF-8 JSON of `value`, or InvalidArgument naming `field`."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{field} is not JSON-serialisable: {exc}") from None
    return text.encode("utf-8")


def loads_json(raw: bytes | str, field: str) -> Any:
    """Parse JSON received on the wire, or InvalidArgument naming `field`."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidArgument(f"{field} is not valid UTF-8 JSON: {exc}") from None


def optional_json(value: object, field: str) -> str:
    """A JSON text for an optional dict argument; None travels as the empty string."""
    return "" if value is None else dumps_json(value, field).decode("utf-8")


def optional_from_json(text: str, field: str) -> Any:
    """Inverse of `optional_json`."""
    return None if not text else loads_json(text, field)


# ---------------------------------------------------------------------------- collections


def info_to_proto(info: CollectionInfo) -> pb.CollectionInfo:
    """A `CollectionInfo` as its message."""
    return pb.CollectionInfo(
        name=info.name,
        dim=info.dim,
        metric=Metric(info.metric).value,
        kind=CollectionKind(info.kind).value,
        id_type=IdType(info.id_type).value,
        index=IndexKind(info.index).value,
        count=info.count,
        multi_tenant=info.multi_tenant,
        index_params_json=json.dumps(info.index_params, sort_keys=True),
        indexed=info.indexed,
        buffered=info.buffered,
        index_state=info.index_state,
        index_progress=info.index_progress,
        last_build_seconds=info.last_build_seconds,
    )


def info_from_proto(msg: pb.CollectionInfo) -> CollectionInfo:
    """Inverse of `info_to_proto`."""
    return CollectionInfo(
        name=msg.name,
        dim=msg.dim,
        metric=Metric(msg.metric),
        kind=CollectionKind(msg.kind),
        id_type=IdType(msg.id_type),
        index=IndexKind(msg.index),
        count=msg.count,
        multi_tenant=msg.multi_tenant,
        index_params=json.loads(msg.index_params_json or "{}"),
        indexed=msg.indexed,
        buffered=msg.buffered,
        index_state=msg.index_state or "ready",
        index_progress=msg.index_progress,
        last_build_seconds=(msg.last_build_seconds if msg.HasField("last_build_seconds") else None),
    )


# ---------------------------------------------------------------------------- records, results


def records_to_proto(records: Sequence[Record]) -> pb.GetResponse:
    """The answer of `get` as a `GetResponse`."""
    ids = ids_to_proto([r.id for r in records])
    dim = int(records[0].vector.shape[-1]) if records else 0
    mat = np.stack([r.vector for r in records]) if records else np.zeros((0, 0), np.float32)
    vectors = pb.Vectors(dim=dim, count=len(records), data=mat.astype(F32).tobytes())
    payloads = [b"" if r.payload is None else dumps_json(r.payload, "payload") for r in records]
    return pb.GetResponse(ids=ids, vectors=vectors, payloads=payloads)


def records_from_proto(msg: pb.GetResponse) -> list[Record]:
    """Inverse of `records_to_proto`."""
    ids = ids_from_proto(msg.ids)
    mat = vectors_from_proto(msg.vectors) if ids else np.zeros((0, 0), np.float32)
    payloads = payloads_from_proto(msg.payloads) or [None] * len(ids)
    # `mat` is already this response's own copy: its rows need no second copy.
    return [Record(id=i, vector=mat[n], payload=payloads[n]) for n, i in enumerate(ids)]


def result_to_proto(res: SearchResult) -> pb.SearchResponse:
    """A `SearchResult` as flat row-major arrays plus the number of hits per row."""
    nq, k = (int(s) for s in res.ids.shape)
    if res.ids.dtype.kind in "iu":
        found = (res.ids >= 0).sum(axis=1)
        ids = pb.Ids(ints=pb.IntIds(values=res.ids.astype(np.int64).ravel().tolist()))
    else:
        present = (
            np.vectorize(lambda v: v is not None, otypes=[bool])(res.ids)
            if res.ids.size
            else np.zeros((nq, k), bool)
        )
        found = present.sum(axis=1)
        flat = [b"" if v is None else str(v).encode("utf-8") for v in res.ids.ravel()]
        ids = pb.Ids(strs=pb.StrIds(values=flat))
    msg = pb.SearchResponse(
        nq=nq,
        k=k,
        ids=ids,
        distances=np.ascontiguousarray(res.distances, dtype=F32).tobytes(),
        found=[int(f) for f in found],
        with_payload=res.payloads is not None,
    )
    if res.payloads is not None:
        for row in res.payloads:
            cells = [b"" if p is None else dumps_json(p, "payload") for p in row]
            msg.payloads.extend(cells + [b""] * (k - len(cells)))
    return msg


def result_from_proto(msg: pb.SearchResponse) -> SearchResult:
    """Inverse of `result_to_proto`: ids int64 padded -1 (object padded None for str ids)."""
    nq, k = msg.nq, msg.k
    distances = _matrix(msg.distances, nq, k, "distances")
    if msg.ids.HasField("strs"):
        ids: npt.NDArray[Any] = np.empty((nq, k), dtype=object)
        flat = ids_from_proto(msg.ids)
        for row in range(nq):
            for col in range(msg.found[row]):
                ids[row, col] = flat[row * k + col]
    else:
        ids = np.asarray(msg.ids.ints.values, dtype=np.int64).reshape(nq, k)
    payloads: list[list[Payload | None]] | None = None
    if msg.with_payload:
        cells = payloads_from_proto(msg.payloads) or [None] * (nq * k)
        payloads = [cells[row * k : (row + 1) * k] for row in range(nq)]  # padded with None
    return SearchResult(ids=ids, distances=distances, payloads=payloads)


# ---------------------------------------------------------------------------- errors


def status_of(err: VecdbError) -> grpc.StatusCode:
    """The gRPC status code a vecdb error travels as."""
    return grpc.StatusCode[err.code]


def error_from_status(code: grpc.StatusCode, details: str | None) -> VecdbError:
    """The vecdb error class for a status received by a client (unknown codes: Internal)."""
    name = code.name if code is not None else "UNKNOWN"
    cls = ERROR_BY_CODE.get(name, Internal)
    message = details or name.lower().replace("_", " ")
    return cls(message)
