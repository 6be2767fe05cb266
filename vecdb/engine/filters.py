"""The payload filter language: parsing, validation and evaluation (docs/FILTERS.md).

Owns the grammar of a filter (a JSON object: `{"field": value}` equality, `{"field": {"$op":
operand}}` comparisons, `$and` / `$or` / `$not`, dotted paths into nested objects), its checks
(`InvalidArgument` naming the path of the bad part, e.g. `filter.year.$gte`), the compiled
form (`Filter`: a tree of `Cond` / `And` / `Or` / `Not` nodes, parsed once per request) and the
semantics of evaluating it on a payload. Knows nothing of storage or indexes: the payload
index planner (`payload_index`) walks the same tree.

Semantics in one place: a point without a payload is an empty object; a missing field matches
only `$exists: false`, `$ne`, `$nin` and negations; equality is JSON equality of scalars (true
is not 1, 1 equals 1.0, null equals only null; objects and lists never equal a scalar);
ordering operators compare numbers with numbers and strings with strings (by code point, as
UTF-8 bytes order), and a value of any other type does not match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vecdb.errors import InvalidArgument

MAX_FILTER_DEPTH = 32  # nesting of $and / $or / $not and operator objects
MAX_FILTER_CONDITIONS = 4096  # conditions (leaves) in one filter
MAX_IN_VALUES = 10_000  # operands of one $in / $nin

COMPARE_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")
SET_OPS = ("$in", "$nin")
FIELD_OPS = (*COMPARE_OPS, *SET_OPS, "$exists")
LOGIC_OPS = ("$and", "$or", "$not")

Scalar = None | bool | int | float | str


class _Missing:
    """The value of a path that a payload does not have."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


# -- the compiled tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """One condition on one field: `op` is a FIELD_OPS name; `value` its checked operand
    (a scalar; a tuple of scalars for $in / $nin; a bool for $exists)."""

    field: str  # the dotted path as written
    path: tuple[str, ...]  # the path split at dots
    op: str
    value: Any


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]  # empty: matches everything


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]  # never empty


@dataclass(frozen=True)
class Not:
    child: Node


Node = Cond | And | Or | Not


@dataclass(frozen=True)
class Filter:
    """A checked filter, ready to evaluate on payloads."""

    root: Node

    def matches(self, payload: dict[str, Any] | None) -> bool:
        return evaluate(self.root, {} if payload is None else payload)

    def fields(self) -> set[str]:
        """The dotted paths the filter reads."""
        out: set[str] = set()
        _fields(self.root, out)
        return out


def _fields(node: Node, out: set[str]) -> None:
    if isinstance(node, Cond):
        out.add(node.field)
    elif isinstance(node, Not):
        _fields(node.child, out)
    else:
        for child in node.children:
            _fields(child, out)


# -- parsing --------------------------------------------------------------------------------


def _kind(value: object) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return f"a value that is not JSON ({type(value).__name__})"


def _fail(where: str, message: str) -> InvalidArgument:
    """A filter error at path `where` (e.g. `filter.year.$gte`), which is also its field."""
    return InvalidArgument(f"{where}: {message}", field=where, reason="BAD_FILTER")


class _Parser:
    def __init__(self) -> None:
        self.conditions = 0

    def node(self, obj: object, where: str, depth: int) -> Node:
        if depth > MAX_FILTER_DEPTH:
            raise _fail(where, f"nested deeper than {MAX_FILTER_DEPTH} levels")
        if not isinstance(obj, dict):
            raise _fail(where, f"expected an object of field -> condition, got {_kind(obj)}")
        parts: list[Node] = []
        for key, val in obj.items():
            if not isinstance(key, str):
                raise _fail(where, f"keys must be strings, got {_kind(key)}")
            if key.startswith("$"):
                parts.append(self.logic(key, val, f"{where}.{key}", depth))
            else:
                parts.append(self.field(key, val, f"{where}.{key}", depth))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def logic(self, op: str, val: object, where: str, depth: int) -> Node:
        if op == "$not":
            return Not(self.node(val, where, depth + 1))
        if op in ("$and", "$or"):
            if not isinstance(val, (list, tuple)):
                raise _fail(where, f"expected an array of filters, got {_kind(val)}")
            if not val:
                raise _fail(where, "expected at least one filter, got an empty array")
            kids = tuple(self.node(f, f"{where}[{i}]", depth + 1) for i, f in enumerate(val))
            return And(kids) if op == "$and" else Or(kids)
        known = ", ".join(LOGIC_OPS)
        raise _fail(where, f"unknown operator {op!r} (at the top of a filter: {known} or a field)")

    def field(self, name: str, val: object, where: str, depth: int) -> Node:
        path = tuple(name.split("."))
        if not name or any(not p for p in path):
            raise _fail(where, "a field path needs non-empty names between dots")
        if isinstance(val, dict):
            if not val:
                raise _fail(where, "expected a value or an object of operators, got {}")
            conds: list[Node] = []
            for op, operand in val.items():
                if not isinstance(op, str) or not op.startswith("$"):
                    raise _fail(
                        where,
                        f"{op!r} is not an operator; compare nested fields with a dotted "
                        'path ("a.b": value)',
                    )
                conds.append(self.cond(name, path, op, operand, f"{where}.{op}", depth + 1))
            return conds[0] if len(conds) == 1 else And(tuple(conds))
        return self.cond(name, path, "$eq", val, where, depth)

    def cond(
        self, name: str, path: tuple[str, ...], op: str, operand: object, where: str, depth: int
    ) -> Cond:
        self.conditions += 1
        if self.conditions > MAX_FILTER_CONDITIONS:
            raise _fail("filter", f"has more than {MAX_FILTER_CONDITIONS} conditions")
        if op in ("$eq", "$ne"):
            value: Any = _scalar(operand, where)
        elif op in ORDER_OPS:
            if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
                raise _fail(where, f"expected a number or string, got {_kind(operand)}")
            value = _scalar(operand, where)
        elif op in SET_OPS:
            if not isinstance(operand, (list, tuple)):
                raise _fail(where, f"expected an array of values, got {_kind(operand)}")
            if len(operand) > MAX_IN_VALUES:
                raise _fail(where, f"has {len(operand)} values (max {MAX_IN_VALUES})")
            value = tuple(_scalar(x, f"{where}[{i}]") for i, x in enumerate(operand))
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise _fail(where, f"expected true or false, got {_kind(operand)}")
            value = operand
        else:
            raise _fail(where, f"unknown operator {op!r} (expected one of {', '.join(FIELD_OPS)})")
        return Cond(name, path, op, value)


def _scalar(value: object, where: str) -> Scalar:
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(where, "is not valid Unicode text") from None
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(where, f"expected a finite number, got {value}")
        return value
    if isinstance(value, (list, tuple)):
        raise _fail(where, "expected a single value, got an array (use $in for any of several)")
    raise _fail(where, f"expected a string, number, boolean or null, got {_kind(value)}")


def parse(flt: object) -> Filter | None:
    """Check a filter once and compile it; None means no filter. Raises `InvalidArgument`
    naming the path of the first bad part (`filter.year.$gte: ...`)."""
    if flt is None:
        return None
    return Filter(_Parser().node(flt, "filter", 0))


# -- evaluation -----------------------------------------------------------------------------


def resolve(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path, or MISSING."""
    cur: Any = payload
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def scalar_equal(stored: Any, operand: Scalar) -> bool:
    """JSON equality of a stored value and a scalar operand."""
    if operand is None:
        return stored is None
    if isinstance(operand, bool):
        return isinstance(stored, bool) and stored == operand
    if _is_number(operand):
        return _is_number(stored) and stored == operand
    return isinstance(stored, str) and stored == operand


def _ordered(stored: Any, op: str, operand: Scalar) -> bool:
    if _is_number(operand):
        if not _is_number(stored):
            return False
    elif not isinstance(stored, str):
        return False
    if op == "$gt":
        return bool(stored > operand)
    if op == "$gte":
        return bool(stored >= operand)
    if op == "$lt":
        return bool(stored < operand)
    return bool(stored <= operand)


def test(cond: Cond, stored: Any) -> bool:
    """Whether a stored value (or MISSING) satisfies one condition."""
    op = cond.op
    if op == "$exists":
        return (stored is not MISSING) is cond.value
    if op == "$eq":
        return stored is not MISSING and scalar_equal(stored, cond.value)
    if op == "$ne":
        return stored is MISSING or not scalar_equal(stored, cond.value)
    if op == "$in":
        return stored is not MISSING and any(scalar_equal(stored, x) for x in cond.value)
    if op == "$nin":
        return stored is MISSING or not any(scalar_equal(stored, x) for x in cond.value)
    return stored is not MISSING and _ordered(stored, op, cond.value)


def evaluate(node: Node, payload: dict[str, Any]) -> bool:
    """Whether `payload` (an object; use {} for none) satisfies `node`."""
    if isinstance(node, Cond):
        return test(node, resolve(payload, node.path))
    if isinstance(node, And):
        return all(evaluate(c, payload) for c in node.children)
    if isinstance(node, Or):
        return any(evaluate(c, payload) for c in node.children)
    return not evaluate(node.child, payload)
