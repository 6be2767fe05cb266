"""The JSON half of the rule book (`vecdb.engine.validate` re-exports it): payloads and the
JSON arguments of a request (filters, parameters).

A payload is a JSON object within MAX_PAYLOAD_DEPTH and MAX_PAYLOAD_BYTES, with no NaN or
infinity and no string holding a lone surrogate; the JSON literal null is refused (Python None
means "no payload", so the wire decoder hands `JSON_NULL` for it). `json_text` is what the
remote SDKs use to put a value on the wire: it refuses only what JSON cannot carry at all and
leaves the rest for the server to judge. Errors name the field and the path inside the value
(`payloads[3].tags[2]`). Pure functions: no storage, no state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from vecdb import config
from vecdb.errors import InvalidArgument, cut, echo


class JsonNull:
    """The JSON literal `null` received where a payload goes (Python None means "no payload",
    so the wire decoder hands this marker instead, and the validator refuses it)."""

    def __repr__(self) -> str:
        return "null"


JSON_NULL = JsonNull()


# Integers longer than this are refused (Python's JSON writer and reader stop at 4,300 digits)
MAX_INT_DIGITS = 4_000
MAX_INT_BITS = int(MAX_INT_DIGITS / 0.30103)  # (2 ** MAX_INT_BITS has MAX_INT_DIGITS digits)


def _depth(value: Any, level: int = 0) -> int:
    if level > config.MAX_PAYLOAD_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def json_kind(value: object) -> str:
    """The JSON name of a value's type ("object", "array", "string", "number", "boolean",
    "null"), or the Python type name of a value JSON cannot hold."""
    if value is None or isinstance(value, JsonNull):
        return "null"
    for kind, types in (("boolean", bool), ("number", (int, float)), ("string", str),
                        ("array", list), ("object", dict)):  # fmt: skip
        if isinstance(value, types):
            return kind
    return type(value).__name__


def lone_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"U+{ord(text[exc.start]):04X}"
    return None


def check_json(value: Any, field: str, *, strict: bool = True) -> None:
    """Refuse what JSON cannot hold: types other than object/array/string/number/boolean/
    null, keys that are not strings, nesting deeper than MAX_PAYLOAD_DEPTH; and with `strict`
    also NaN/inf and strings with lone surrogates (which the Python SDK can still carry as
    JSON escapes, so the server judges those). Errors name the path inside the value."""
    if _depth(value) > config.MAX_PAYLOAD_DEPTH:
        raise InvalidArgument(f"{field} is nested deeper than {config.MAX_PAYLOAD_DEPTH}",
                              field=field, reason="BAD_JSON")  # fmt: skip
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise InvalidArgument(f"{path} has key {echo(key)}: JSON keys are strings",
                                          field=field, reason="BAD_JSON")  # fmt: skip
                if strict and (bad := lone_surrogate(key)):
                    raise InvalidArgument(
                        f"{path} has a key holding a lone surrogate ({bad}), not valid Unicode",
                        field=field, reason="BAD_JSON")  # fmt: skip
                stack.append((f"{path}.{cut(key, 64)}", sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))
        elif isinstance(item, float):
            if strict and not math.isfinite(item):
                raise InvalidArgument(f"{path} is {item}: JSON has no NaN or infinity",
                                      field=field, reason="BAD_JSON")  # fmt: skip
        elif isinstance(item, str):
            if strict and (bad := lone_surrogate(item)):
                raise InvalidArgument(
                    f"{path} holds a lone surrogate ({bad}), not valid Unicode text",
                    field=field, reason="BAD_JSON")  # fmt: skip
        elif isinstance(item, int) and item.bit_length() > MAX_INT_BITS:
            raise InvalidArgument(
                f"{path} is an integer of about {int(item.bit_length() * 0.30103):,} digits: "
                f"JSON numbers here hold at most {MAX_INT_DIGITS:,}",
                field=field, reason="BAD_JSON")  # fmt: skip
        elif item is not None and not isinstance(item, (bool, int)):
            raise InvalidArgument(
                f"{path} is of type {json_kind(item)}, which JSON cannot hold",
                field=field, reason="BAD_JSON")  # fmt: skip


def json_text(value: Any, field: str) -> str:
    """`value` as JSON text for the wire, refusing only what JSON cannot carry (see
    `check_json` with strict=False); NaN travels as the Python-JSON token and lone surrogates
    as \\u escapes, so the server's validator judges them and names them."""
    check_json(value, field, strict=False)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if lone_surrogate(text):
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def prepare_payloads(payloads: object, n: int, field: str = "payloads") -> list[bytes | None]:
    """Serialise payloads to JSON bytes (None stays None), checking type, size and depth."""
    if payloads is None:
        return [None] * n
    if not isinstance(payloads, Sequence) or isinstance(payloads, (str, bytes)):
        raise InvalidArgument(f"{field} must be an array of JSON objects (or null)",
                              field=field, reason="BAD_PAYLOAD")  # fmt: skip
    if len(payloads) != n:
        raise InvalidArgument(f"{field} has {len(payloads)} entries but there are {n} ids",
                              field=field, reason="COUNT_MISMATCH")  # fmt: skip
    out: list[bytes | None] = []
    for i, p in enumerate(payloads):
        if p is None:
            out.append(None)
            continue
        out.append(payload_bytes(p, f"{field}[{i}]"))
    return out


def payload_bytes(payload: object, field: str = "payload") -> bytes:
    """One payload checked (a JSON object within the depth and size caps, no NaN, no lone
    surrogate) and serialised to compact UTF-8 JSON."""
    if not isinstance(payload, dict):
        raise InvalidArgument(f"{field} must be a JSON object, got {json_kind(payload)}",
                              field=field, reason="BAD_PAYLOAD")  # fmt: skip
    try:
        check_json(payload, field)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message, field=field, reason="BAD_PAYLOAD") from None
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > config.MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"{field} is {len(data)} bytes as JSON (max {config.MAX_PAYLOAD_BYTES})",
            field=field,
            reason="BAD_PAYLOAD",
        )
    return data
