"""Validation of everything a request carries, before anything is written.

Owns the bad-input rules of research/reliability.md §8 for the engine: names, dimensions,
NaN/inf, magnitudes, zero vectors under cosine, ids, duplicates, payloads, k and batch caps.
Each failure raises `InvalidArgument` naming the field and the position. Pure functions: no
storage, no state.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb import config
from vecdb.errors import InvalidArgument
from vecdb.types import Id, IdType, Metric


def check_name(what: str, name: object) -> str:
    """A collection or tenant name: `[A-Za-z0-9_-]{1,64}`, safe as a path component."""
    if not isinstance(name, str) or not config.NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"{what} name {name!r} is invalid: use 1-{config.MAX_NAME_LEN} characters "
            "from A-Z a-z 0-9 _ -"
        )
    return name


def check_metric(metric: object) -> Metric:
    try:
        if not isinstance(metric, str):
            raise ValueError(metric)
        return Metric(metric.lower())
    except ValueError:
        allowed = ", ".join(m.value for m in Metric)
        raise InvalidArgument(f"metric {metric!r} is unknown (expected one of {allowed})") from None


def check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise InvalidArgument(f"dim must be an integer, got {dim!r}")
    if not config.MIN_DIM <= int(dim) <= config.MAX_DIM:
        raise InvalidArgument(f"dim {dim} is out of range [{config.MIN_DIM}, {config.MAX_DIM}]")
    return int(dim)


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidArgument(f"k must be an integer, got {k!r}")
    if not 1 <= int(k) <= config.MAX_K:
        raise InvalidArgument(f"k={k} is out of range [1, {config.MAX_K}]")
    return int(k)


def _as_matrix(vectors: object, dim: int, field: str) -> npt.NDArray[np.float32]:
    if isinstance(vectors, np.ndarray):
        arr = vectors
    else:
        rows = list(vectors) if isinstance(vectors, (list, tuple)) else None
        if rows is None:
            raise InvalidArgument(f"{field} must be a numpy array or a list of vectors")
        if not rows:
            raise InvalidArgument(f"{field} is empty: send at least one vector")
        if all(isinstance(x, (int, float, np.number)) for x in rows):
            rows = [rows]  # one vector given as a flat list of numbers
        for i, row in enumerate(rows):
            n = len(row) if hasattr(row, "__len__") else -1
            if n != dim:
                raise InvalidArgument(f"{field}[{i}]: expected {dim} floats, got {n}")
        try:
            arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), dim)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{field} must hold numbers: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidArgument(f"{field} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgument(f"{field} must be 1- or 2-dimensional, got shape {arr.shape}")
    if arr.shape[1] != dim:
        # Same wording as the per-row check of a list, so both modes report alike.
        raise InvalidArgument(f"{field}[0]: expected {dim} floats, got {arr.shape[1]}")
    return arr


def prepare_vectors(
    vectors: object, dim: int, metric: Metric, field: str = "vectors"
) -> npt.NDArray[np.float32]:
    """Check and convert to a C-contiguous float32 (n, dim) matrix (not normalised)."""
    arr = _as_matrix(vectors, dim, field)
    wide = arr.astype(np.float64, copy=False)
    finite = np.isfinite(wide)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InvalidArgument(
            f"{field}[{row}][{col}] is {wide[row, col]}: NaN and inf are not allowed"
        )
    big = np.abs(wide) > config.MAX_ABS_COMPONENT
    if big.any():
        row, col = np.argwhere(big)[0]
        raise InvalidArgument(
            f"{field}[{row}][{col}] = {wide[row, col]:.3g} is too large "
            f"(|x| must be <= {config.MAX_ABS_COMPONENT:.0e})"
        )
    # Distances reach up to 4 x the largest squared norm; keep them finite in float32.
    sq = (wide * wide).sum(axis=1)
    huge = np.flatnonzero(sq > config.MAX_SQ_NORM)
    if huge.size:
        raise InvalidArgument(
            f"{field}[{huge[0]}] has squared norm {sq[huge[0]]:.3g}, too large for float32 "
            f"distances (max {config.MAX_SQ_NORM:.3g})"
        )
    out = np.ascontiguousarray(wide, dtype=np.float32)
    if metric is Metric.COSINE:
        zero = np.flatnonzero(sq == 0)
        if zero.size:
            raise InvalidArgument(f"{field}[{zero[0]}] is a zero vector, which has no cosine")
    return out


def _check_int_id(value: object, pos: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{field}[{pos}] = {value!r}: this collection has integer ids")
    v = int(value)
    if not config.MIN_INT_ID <= v <= config.MAX_INT_ID:
        raise InvalidArgument(
            f"{field}[{pos}] = {v} is out of range [{config.MIN_INT_ID}, {config.MAX_INT_ID}]"
        )
    return v


def _check_str_id(value: object, pos: int, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}[{pos}] = {value!r}: this collection has string ids")
    if not value:
        raise InvalidArgument(f"{field}[{pos}] is empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field}[{pos}] is not valid Unicode text") from None
    if size > config.MAX_STR_ID_BYTES:
        raise InvalidArgument(
            f"{field}[{pos}] is {size} UTF-8 bytes long (max {config.MAX_STR_ID_BYTES})"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidArgument(f"{field}[{pos}] contains a control character")
    return value


def prepare_ids(ids: object, id_type: IdType, field: str = "ids") -> list[Id]:
    """Check ids (type, range, length, duplicates) and return them as Python ints/strs."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise InvalidArgument(f"{field} must be a list of ids")
    items = list(ids)
    if not items:
        raise InvalidArgument(f"{field} is empty: send at least one id")
    if len(items) > config.MAX_BATCH:
        raise InvalidArgument(
            f"{field} has {len(items)} entries (max {config.MAX_BATCH} a request)"
        )
    check = _check_int_id if id_type is IdType.INT else _check_str_id
    out: list[Id] = [check(v, i, field) for i, v in enumerate(items)]
    seen: dict[Id, int] = {}
    for i, v in enumerate(out):
        if v in seen:
            raise InvalidArgument(f"{field}[{i}] = {v!r} duplicates {field}[{seen[v]}]")
        seen[v] = i
    return out


def encode_id(value: Id) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return int(value).to_bytes(8, "big")


def decode_id(raw: bytes, id_type: IdType) -> Id:
    return raw.decode("utf-8") if id_type is IdType.STR else int.from_bytes(raw, "big")


def _depth(value: Any, level: int = 0) -> int:
    if level > config.MAX_PAYLOAD_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def prepare_payloads(payloads: object, n: int, field: str = "payloads") -> list[bytes | None]:
    """Serialise payloads to JSON bytes (None stays None), checking type, size and depth."""
    if payloads is None:
        return [None] * n
    if not isinstance(payloads, Sequence) or isinstance(payloads, (str, bytes)):
        raise InvalidArgument(f"{field} must be a list of dicts (or None)")
    if len(payloads) != n:
        raise InvalidArgument(f"{field} has {len(payloads)} entries but there are {n} ids")
    out: list[bytes | None] = []
    for i, p in enumerate(payloads):
        if p is None:
            out.append(None)
            continue
        if not isinstance(p, dict):
            raise InvalidArgument(f"{field}[{i}] must be a dict, got {type(p).__name__}")
        if _depth(p) > config.MAX_PAYLOAD_DEPTH:
            raise InvalidArgument(f"{field}[{i}] is nested deeper than {config.MAX_PAYLOAD_DEPTH}")
        try:
            raw = json.dumps(p, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{field}[{i}] is not JSON-serialisable: {exc}") from None
        data = raw.encode("utf-8")
        if len(data) > config.MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                f"{field}[{i}] is {len(data)} bytes as JSON (max {config.MAX_PAYLOAD_BYTES})"
            )
        out.append(data)
    return out


def prepare_queries(queries: object, dim: int, metric: Metric) -> npt.NDArray[np.float32]:
    q = prepare_vectors(queries, dim, metric, field="queries")
    if q.shape[0] > config.MAX_QUERIES:
        raise InvalidArgument(f"queries has {q.shape[0]} rows (max {config.MAX_QUERIES})")
    return q


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
    """L2-normalise rows in float64 for accuracy; callers have rejected zero rows."""
    wide = x.astype(np.float64)
    norms = np.sqrt((wide * wide).sum(axis=1, keepdims=True))
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(wide / norms, dtype=np.float32)
