"""Validation of everything a request carries, before anything is written: the one rule book.

Owns the bad-input rules of research/reliability.md §8: names, dimensions, NaN/inf,
magnitudes, zero vectors under cosine, ids, duplicates, k and batch caps; the JSON half
(payloads: JSON objects only, no JSON null, no NaN, no lone surrogates; JSON arguments) is in
`vecdb.engine.json_rules` and re-exported here. Each failure raises `InvalidArgument` whose
message names the field and position with the public names (`vectors[3]`, `ids[0]`,
`payloads[2]`, `queries`, `k`), whose `field` is that path and whose `reason` is a stable code.
The engine calls these on every request; the remote SDKs call the few that judge Python values
the wire cannot carry at all (a set in a payload, a string where a number goes, a float beyond
float32) so those errors read the same in both modes: everything else travels as given and is
judged here, on the server. Pure functions: no storage, no state.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb import config
from vecdb.engine.json_rules import JSON_NULL as JSON_NULL
from vecdb.engine.json_rules import JsonNull as JsonNull
from vecdb.engine.json_rules import check_json as check_json
from vecdb.engine.json_rules import json_kind as json_kind
from vecdb.engine.json_rules import json_text as json_text
from vecdb.engine.json_rules import lone_surrogate as lone_surrogate
from vecdb.engine.json_rules import payload_bytes as payload_bytes
from vecdb.engine.json_rules import prepare_payloads as prepare_payloads
from vecdb.errors import InvalidArgument, echo
from vecdb.kernels import rowcheck
from vecdb.types import CollectionKind, Id, IdType, Metric


def check_name(what: str, name: object) -> str:
    """A collection or tenant name: `[A-Za-z0-9_-]{1,64}`, safe as a path component."""
    if not isinstance(name, str) or not config.NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"{what} name {echo(name)} is invalid: use 1-{config.MAX_NAME_LEN} characters "
            "from A-Z a-z 0-9 _ -",
            field=what,
            reason="BAD_NAME",
        )
    return name


def _check_enum(
    cls: Any, value: object, field: str, reason: str, expected: str, lower: bool = False
) -> Any:
    """`value` as a member of the str enum `cls` (lower-cased first if `lower`), or
    InvalidArgument naming `field` and echoing `value` as given."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return cls(value.lower() if lower else value)
    except ValueError:
        raise InvalidArgument(
            f"{field} {echo(value)} is unknown (expected {expected})", field=field, reason=reason
        ) from None


def check_metric(metric: object) -> Metric:
    allowed = ", ".join(m.value for m in Metric)
    out: Metric = _check_enum(Metric, metric, "metric", "BAD_METRIC", f"one of {allowed}", True)
    return out


def check_id_type(id_type: object) -> IdType:
    out: IdType = _check_enum(IdType, id_type, "id_type", "BAD_ID_TYPE", "int or str")
    return out


def check_kind(kind: object) -> CollectionKind:
    """A collection kind; whether the kind is built yet is the engine's business."""
    out: CollectionKind = _check_enum(
        CollectionKind, kind, "kind", "BAD_KIND", "dense or multivector"
    )
    return out


def check_index_params(params: object) -> dict[str, Any]:
    """create_collection's index_params: absent, or a JSON object (its entries are judged by
    the index kind's parameter registry)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidArgument(
            f"index_params must be a JSON object, got {json_kind(params)}",
            field="index_params",
            reason="BAD_JSON",
        )
    return dict(params)


def check_flag(name: str, value: object) -> bool:
    """A true/false argument (exist_ok, with_vectors, with_payload, wait): the one check,
    for the engine and the remote clients alike."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false, got {echo(value)}", field=name)
    return value


# Bounds of scroll's `limit`.
MIN_SCROLL_LIMIT, DEFAULT_SCROLL_LIMIT, MAX_SCROLL_LIMIT = 1, 1000, 10_000


def check_scroll_limit(limit: object) -> int:
    """scroll's page size, an integer in [MIN_SCROLL_LIMIT, MAX_SCROLL_LIMIT]."""
    n = _as_int(limit)
    if n is None:
        raise InvalidArgument(f"limit must be an integer, got {echo(limit)}", field="limit")
    if not MIN_SCROLL_LIMIT <= n <= MAX_SCROLL_LIMIT:
        raise InvalidArgument(
            f"limit={n} is out of range [{MIN_SCROLL_LIMIT}, {MAX_SCROLL_LIMIT}]", field="limit"
        )
    return n


def _as_int(value: object) -> int | None:
    """`value` as a Python int if it is an integer (numpy included, bool excluded)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


def check_dim(dim: object) -> int:
    n = _as_int(dim)
    if n is None:
        raise InvalidArgument(
            f"dim must be an integer, got {echo(dim)}", field="dim", reason="BAD_DIM"
        )
    if not config.MIN_DIM <= n <= config.MAX_DIM:
        raise InvalidArgument(
            f"dim {dim} is out of range [{config.MIN_DIM}, {config.MAX_DIM}]",
            field="dim",
            reason="BAD_DIM",
        )
    return n


def check_k(k: object) -> int:
    n = _as_int(k)
    if n is None:
        raise InvalidArgument(f"k must be an integer, got {echo(k)}", field="k", reason="BAD_K")
    if not 1 <= n <= config.MAX_K:
        raise InvalidArgument(
            f"k={k} is out of range [1, {config.MAX_K}]", field="k", reason="BAD_K"
        )
    return n


# -- vectors ---------------------------------------------------------------------------------

Rows = npt.NDArray[Any] | list[npt.NDArray[np.float64]]


def _bad_vectors(message: str, field: str) -> InvalidArgument:
    return InvalidArgument(message, field=field, reason="BAD_VECTORS")


def shape_rows(vectors: object, field: str = "vectors") -> Rows:
    """The rows of `vectors` without knowing the dimension: a 2-D numeric array, or a list of
    1-D float64 rows when a list's rows differ in length. Refuses what is not a matrix of
    numbers at all. The remote SDKs call this before encoding (the wire carries matrices and
    ragged rows, not arbitrary Python objects)."""
    if isinstance(vectors, np.ndarray):
        arr = vectors
        if arr.dtype.kind not in "fiu":
            raise _bad_vectors(f"{field} must hold numbers, got {arr.dtype} values", field)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise _bad_vectors(f"{field} must be 1- or 2-dimensional, got shape {arr.shape}", field)
        return arr
    if not isinstance(vectors, (list, tuple)):
        raise _bad_vectors(f"{field} must be a matrix or an array of vectors", field)
    rows: list[Any] = list(vectors)
    if not rows:
        raise InvalidArgument(
            f"{field} is empty: send at least one vector", field=field, reason="EMPTY"
        )
    if all(isinstance(x, (int, float, np.number)) for x in rows):
        rows = [rows]  # one vector given as a flat list of numbers
    out: list[npt.NDArray[np.float64]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise _bad_vectors(f"{field}[{i}] must be an array of numbers", f"{field}[{i}]")
        try:
            arr = np.asarray(row)
        except (TypeError, ValueError):
            arr = np.asarray([None])
        if arr.dtype.kind not in "fiu" or arr.ndim != 1:
            raise _bad_vectors(f"{field}[{i}] must be an array of numbers", f"{field}[{i}]")
        out.append(arr.astype(np.float64, copy=False))
    if len({len(r) for r in out}) == 1:
        return np.stack(out)
    return out


def _as_matrix(vectors: object, dim: int, field: str) -> npt.NDArray[Any]:
    rows = shape_rows(vectors, field)
    widths = [len(r) for r in rows] if isinstance(rows, list) else [rows.shape[1]]
    for i, n in enumerate(widths):
        if n != dim:
            # A matrix reports row 0, like the first row of a list, so both modes read alike.
            raise InvalidArgument(
                f"{field}[{i}]: expected {dim} floats, got {n}",
                field=f"{field}[{i}]",
                reason="WRONG_DIMENSION",
            )
    assert not isinstance(rows, list)  # rows of one length were stacked
    return rows


def _wide_or_native(rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """rows as a C-contiguous float32 or float64 matrix (the kernels' two types): float32
    and float64 as they are, other numbers widened to float64 (exact for the integers and
    halves a caller may send)."""
    if rows.dtype in (np.float32, np.float64):
        return np.ascontiguousarray(rows)
    return np.ascontiguousarray(rows, dtype=np.float64)


def _component_error(x: npt.NDArray[Any], field: str, need_nonzero: bool) -> InvalidArgument | None:
    """The first failing check of `rowcheck.scan_rows` on x as the error to raise, or None."""
    code, row, col = rowcheck.scan_rows(
        x, config.MAX_ABS_COMPONENT, config.MAX_SQ_NORM, need_nonzero
    )
    if code == rowcheck.NOT_FINITE:
        return InvalidArgument(
            f"{field}[{row}][{col}] is {float(x[row, col])}: NaN and inf are not allowed",
            field=f"{field}[{row}][{col}]",
            reason="NOT_FINITE",
        )
    if code == rowcheck.TOO_LARGE:
        return InvalidArgument(
            f"{field}[{row}][{col}] = {float(x[row, col]):.3g} is too large "
            f"(|x| must be <= {config.MAX_ABS_COMPONENT:.0e})",
            field=f"{field}[{row}][{col}]",
            reason="TOO_LARGE",
        )
    if code == rowcheck.HUGE_NORM:
        # Distances reach up to 4 x the largest squared norm; keep them finite in float32.
        sq = float((x[row].astype(np.float64) ** 2).sum())
        return InvalidArgument(
            f"{field}[{row}] has squared norm {sq:.3g}, too large for float32 "
            f"distances (max {config.MAX_SQ_NORM:.3g})",
            field=f"{field}[{row}]",
            reason="TOO_LARGE",
        )
    if code == rowcheck.ZERO_ROW:
        return InvalidArgument(
            f"{field}[{row}] is a zero vector, which has no cosine",
            field=f"{field}[{row}]",
            reason="ZERO_VECTOR",
        )
    return None


def check_components(wide: npt.NDArray[np.float64], field: str = "vectors") -> None:
    """NaN/inf, components above MAX_ABS_COMPONENT and squared norms that overflow float32
    distances, first offender named (`rowcheck.scan_rows`, one pass). The remote SDKs call
    it when a value would overflow float32 on the wire (so it reads the same as embedded)."""
    err = _component_error(_wide_or_native(wide), field, False)
    if err is not None:
        raise err


def prepare_vectors(
    vectors: object, dim: int, metric: Metric, field: str = "vectors"
) -> npt.NDArray[np.float32]:
    """Check and convert to a C-contiguous float32 (n, dim) matrix of its own (not
    normalised): the components checked as given (float64 values beyond float32 are
    refused, not rounded to inf), zero rows refused for cosine."""
    rows = _wide_or_native(_as_matrix(vectors, dim, field))
    err = _component_error(rows, field, metric is Metric.COSINE)
    if err is not None:
        raise err
    return np.array(rows, dtype=np.float32, order="C")  # a copy: never the caller's array


# -- ids -------------------------------------------------------------------------------------


def _bad_id(message: str, field: str) -> InvalidArgument:
    return InvalidArgument(message, field=field, reason="BAD_ID")


def _check_int_id(value: object, pos: int, field: str) -> int:
    v = _as_int(value)
    if v is None:
        raise _bad_id(f"{field}[{pos}] = {echo(value)}: this collection has integer ids",
                      f"{field}[{pos}]")  # fmt: skip
    if not config.MIN_INT_ID <= v <= config.MAX_INT_ID:
        raise _bad_id(
            f"{field}[{pos}] = {v} is out of range [{config.MIN_INT_ID}, {config.MAX_INT_ID}]",
            f"{field}[{pos}]",
        )
    return v


def _check_str_id(value: object, pos: int, field: str) -> str:
    where = f"{field}[{pos}]"
    if not isinstance(value, str):
        raise _bad_id(f"{where} = {echo(value)}: this collection has string ids", where)
    if not value:
        raise _bad_id(f"{where} is empty", where)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad_id(f"{where} is not valid Unicode text (lone surrogate)", where) from None
    if size > config.MAX_STR_ID_BYTES:
        raise _bad_id(f"{where} is {size} UTF-8 bytes long (max {config.MAX_STR_ID_BYTES})", where)
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise _bad_id(f"{where} contains a control character", where)
    return value


def check_id_list(ids: object, field: str = "ids") -> list[Any]:
    """`ids` as a list, or InvalidArgument if it is not a list of ids at all."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise _bad_id(f"{field} must be an array of ids", field)
    return list(ids)


def check_row_count(rows: int, ids: int) -> None:
    """An upsert's vectors: one row per id."""
    if rows != ids:
        raise InvalidArgument(f"vectors has {rows} rows but ids has {ids} entries",
                              field="vectors", reason="BAD_VECTORS")  # fmt: skip


def prepare_ids(ids: object, id_type: IdType, field: str = "ids") -> list[Id]:
    """Check ids (type, range, length, duplicates) and return them as Python ints/strs."""
    items = check_id_list(ids, field)
    if not items:
        raise InvalidArgument(f"{field} is empty: send at least one id", field=field,
                              reason="EMPTY")  # fmt: skip
    if len(items) > config.MAX_BATCH:
        raise InvalidArgument(
            f"{field} has {len(items)} entries (max {config.MAX_BATCH} a request)",
            field=field,
            reason="TOO_MANY",
        )
    check = _check_int_id if id_type is IdType.INT else _check_str_id
    out: list[Id] = [check(v, i, field) for i, v in enumerate(items)]
    seen: dict[Id, int] = {}
    for i, v in enumerate(out):
        if v in seen:
            raise InvalidArgument(
                f"{field}[{i}] = {echo(v)} duplicates {field}[{seen[v]}]",
                field=f"{field}[{i}]",
                reason="DUPLICATE_ID",
            )
        seen[v] = i
    return out


def encode_id(value: Id) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return int(value).to_bytes(8, "big")


def decode_id(raw: bytes, id_type: IdType) -> Id:
    return raw.decode("utf-8") if id_type is IdType.STR else int.from_bytes(raw, "big")


def prepare_queries(queries: object, dim: int, metric: Metric) -> npt.NDArray[np.float32]:
    q = prepare_vectors(queries, dim, metric, field="queries")
    if q.shape[0] > config.MAX_QUERIES:
        raise InvalidArgument(f"queries has {q.shape[0]} rows (max {config.MAX_QUERIES})",
                              field="queries", reason="TOO_MANY")  # fmt: skip
    return q


# Squared norms below this pass every component check at once: no |x| can exceed
# MAX_ABS_COMPONENT and no distance can overflow float32 (see `queries_as_stored`).
FAST_SQ_NORM = min(config.MAX_SQ_NORM, config.MAX_ABS_COMPONENT**2)


def queries_as_stored(queries: object, dim: int, metric: Metric) -> npt.NDArray[np.float32]:
    """`prepare_queries`, then unit rows for cosine (`normalize`): the queries as the index
    compares them. A float32 array of the right width (the usual request) is checked from
    its squared norms alone (finite, non-zero for cosine, below `FAST_SQ_NORM`) and
    normalised from the same norms, the very float64 arithmetic of the two steps, in one
    kernel pass (`rowcheck.plain_query_rows`); anything else, and any array failing a
    check, takes the two steps, so errors are theirs."""
    if isinstance(queries, np.ndarray) and queries.dtype == np.float32:
        arr = queries.reshape(1, -1) if queries.ndim == 1 else queries
        if arr.ndim == 2 and arr.shape[1] == dim and 1 <= arr.shape[0] <= config.MAX_QUERIES:
            out = np.empty(arr.shape, np.float32)
            if rowcheck.plain_query_rows(arr, FAST_SQ_NORM, metric is Metric.COSINE, out):
                return out
    q = prepare_queries(queries, dim, metric)
    return normalize(q) if metric is Metric.COSINE else q


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: true is not 1, but 1 equals 1.0 (one JSON number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return bool(a == b)


def normalize(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """L2-normalise rows in float64 for accuracy (`rowcheck.normalize_rows`, one pass);
    callers have rejected zero rows (one would stay zero)."""
    rows = _wide_or_native(x.reshape(1, -1) if x.ndim == 1 else x)
    out = np.empty(rows.shape, np.float32)
    rowcheck.normalize_rows(rows, out)
    return out.reshape(x.shape)
