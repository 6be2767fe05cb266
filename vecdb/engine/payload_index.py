"""Payload indexes of one collection: (field, value) -> slot entries in RocksDB, and the
planner that turns a filter into the set of matching slots with them.

Owns the key layout (in the meta column family, behind the collection's 4-byte id):
- `pidxdef:` + cid + field -> JSON {"type": "int"|"float"|"str"|"bool", "ready": bool}
- `pidx:` + cid + u16 len + field + encoded value + slot (8 bytes) -> b""
and the order-preserving value encodings (numbers: float64 bits made sortable plus the exact
integer remainder, 16 bytes; strings: UTF-8 with 0x00 escaped and a 0x00 0x00 end; bools: one
byte), so a range of values is one RocksDB range scan. Entries are written into the caller's
batch (the same batch as the point: a crash never leaves them out of step); an index still
being built (`ready` false, e.g. after a crash mid-build) is maintained by writes but not used
by searches until its build completes. Knows nothing of vectors or the write path's locks.

Which values an index holds: "int" and "float" both hold every JSON number of the field (1 and
1.0 are one number; the type states intent), "str" every string, "bool" every boolean. Lists,
objects, null and values of another type are not in the index, so a condition can be answered
by it only when its operand has the index's type (see `plan`).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.engine.filters import ORDER_OPS, And, Cond, Filter, Node, Not, Or, resolve
from vecdb.errors import InvalidArgument
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV, Batch, Reader

INDEX_TYPES = ("int", "float", "str", "bool")
MAX_KEY_BYTES = 256  # UTF-8 bytes of an indexed field path
DEF_PREFIX = kvmod.META_PIDX_DEF
ENTRY_PREFIX = kvmod.META_PIDX_ENTRY
BUILD_CHUNK = 8192  # points indexed per write-locked step of a build

Mask = npt.NDArray[np.bool_]
_F64 = struct.Struct(">d")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _kind_of_type(index_type: str) -> str:
    return {"int": "number", "float": "number", "str": "string", "bool": "bool"}[index_type]


def value_kind(value: object) -> str | None:
    """The kind an index would file a value under (None: no index holds it)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


# -- value encodings ------------------------------------------------------------------------


def encode_number(value: int | float) -> bytes:
    """Sortable bytes: the float64 of the value (sign flipped; negatives inverted) then the
    exact remainder of an integer beyond float64 precision (signed, offset), 16 bytes. -0.0 is
    0.0; integers beyond about 2**1023 saturate."""
    try:
        f = float(value)
    except OverflowError:
        f = math.copysign(math.inf, value)
    if f == 0.0:
        f = 0.0
    u = int.from_bytes(_F64.pack(f), "big")
    u = (~u & (2**64 - 1)) if u >> 63 else (u | 1 << 63)
    rem = 0
    if isinstance(value, int) and math.isfinite(f):
        rem = max(_I64_MIN, min(_I64_MAX, value - int(f)))
    return u.to_bytes(8, "big") + (rem - _I64_MIN).to_bytes(8, "big")


def encode_string(value: str) -> bytes:
    """UTF-8 (whose byte order is code point order) with 0x00 escaped as 0x00 0xFF and a
    0x00 0x00 terminator: prefix-free and order-preserving."""
    return value.encode("utf-8").replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def encode_value(value: Any, kind: str) -> bytes | None:
    """The encoding of a stored value under an index of `kind`, None if it holds no such."""
    if value_kind(value) != kind:
        return None
    if kind == "number":
        return encode_number(value)
    if kind == "string":
        return encode_string(value)
    return b"\x01" if value else b"\x00"


# -- definitions ----------------------------------------------------------------------------


@dataclass
class IndexDef:
    """One payload index: the field it covers and its type."""

    key: str  # dotted field path
    type: str  # one of INDEX_TYPES
    ready: bool  # built over every point (else maintained but not used)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    @property
    def kind(self) -> str:
        return _kind_of_type(self.type)


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(
            f"key must be a non-empty string (a dotted field path), got {key!r}", field="key"
        )
    if any(not part for part in key.split(".")) or key.startswith("$"):
        raise InvalidArgument(
            f"key {key!r} is not a field path: use names between dots", field="key"
        )
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("key is not valid Unicode text", field="key") from None
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"key is {size} UTF-8 bytes long (max {MAX_KEY_BYTES})", field="key")
    return key


def check_type(index_type: object) -> str:
    if not isinstance(index_type, str) or index_type not in INDEX_TYPES:
        raise InvalidArgument(
            f"type {index_type!r} is unknown (expected one of {', '.join(INDEX_TYPES)})",
            field="type",
        )
    return index_type


class PayloadIndexes:
    """The payload indexes of one collection (definitions in memory, entries in RocksDB)."""

    def __init__(self, kv: KV, prefix: bytes) -> None:
        self.kv = kv  # the database's store
        self.prefix = prefix  # the collection's key prefix
        self.defs: dict[str, IndexDef] = {}  # by field path; replaced whole, never mutated

    # -- keys -----------------------------------------------------------------------------

    def def_key(self, key: str) -> bytes:
        return DEF_PREFIX + self.prefix + key.encode("utf-8")

    def field_prefix(self, key: str) -> bytes:
        raw = key.encode("utf-8")
        return ENTRY_PREFIX + self.prefix + len(raw).to_bytes(2, "big") + raw

    # -- definitions ----------------------------------------------------------------------

    def load(self) -> None:
        """Read the definitions (the engine rebuilds those not `ready`)."""
        defs = {}
        start = DEF_PREFIX + self.prefix
        for k, raw in self.kv.scan_prefix(kvmod.CF_META, start):
            body = json.loads(raw)
            key = k[len(start) :].decode("utf-8")
            defs[key] = IndexDef(key, body["type"], bool(body["ready"]))
        self.defs = defs

    def put_def(self, batch: Batch, d: IndexDef) -> None:
        body = json.dumps({"type": d.type, "ready": d.ready}).encode()
        batch.put(kvmod.CF_META, self.def_key(d.key), body)

    def drop(self, batch: Batch, key: str) -> None:
        """Remove an index's definition and entries (caller commits, then `forget`s)."""
        batch.delete(kvmod.CF_META, self.def_key(key))
        fp = self.field_prefix(key)
        batch.delete_range(kvmod.CF_META, fp, kvmod.prefix_end(fp))

    def publish(self, d: IndexDef) -> None:
        self.defs = {**self.defs, d.key: d}

    def forget(self, key: str) -> None:
        self.defs = {k: d for k, d in self.defs.items() if k != key}

    def delete_all(self, batch: Batch) -> None:
        """Every definition and entry of the collection (drop collection)."""
        for p in (DEF_PREFIX + self.prefix, ENTRY_PREFIX + self.prefix):
            batch.delete_range(kvmod.CF_META, p, kvmod.prefix_end(p))

    def types(self) -> dict[str, str]:
        return {k: d.type for k, d in sorted(self.defs.items())}

    # -- entries (into the caller's batch) -------------------------------------------------

    def _entries(
        self, slot: int, payload: dict[str, Any] | None, only: IndexDef | None
    ) -> list[bytes]:
        if not payload:
            return []
        out = []
        for d in [only] if only is not None else list(self.defs.values()):
            enc = encode_value(resolve(payload, d.path), d.kind)
            if enc is not None:
                out.append(self.field_prefix(d.key) + enc + kvmod.u64(slot))
        return out

    def add(
        self, batch: Batch, slot: int, payload: dict[str, Any] | None, only: IndexDef | None = None
    ) -> None:
        """Entries of one point (every index, or `only` one)."""
        for k in self._entries(slot, payload, only):
            batch.put(kvmod.CF_META, k, b"")

    def remove(self, batch: Batch, slot: int, payload: dict[str, Any] | None) -> None:
        for k in self._entries(slot, payload, None):
            batch.delete(kvmod.CF_META, k)

    # -- lookups --------------------------------------------------------------------------

    def _scan(self, src: Reader, start: bytes, end: bytes, n: int) -> Mask:
        """Slots of the entries in [start, end) as a mask of length n (later slots dropped)."""
        found = [
            kvmod.read_u64(k, len(k) - 8) for k, _ in src.scan_range(kvmod.CF_META, start, end)
        ]
        mask = np.zeros(n, np.bool_)
        if found:
            s = np.asarray(found, np.int64)
            mask[s[s < n]] = True
        return mask

    def _equal(self, src: Reader, d: IndexDef, value: Any, n: int) -> Mask:
        enc = encode_value(value, d.kind)
        assert enc is not None
        p = self.field_prefix(d.key) + enc
        return self._scan(src, p, kvmod.prefix_end(p), n)

    def _range(self, src: Reader, d: IndexDef, op: str, value: Any, n: int) -> Mask:
        fp = self.field_prefix(d.key)
        enc = encode_value(value, d.kind)
        assert enc is not None
        start, end = fp, kvmod.prefix_end(fp)
        if op == "$gt":
            start = kvmod.prefix_end(fp + enc)
        elif op == "$gte":
            start = fp + enc
        elif op == "$lt":
            end = fp + enc
        else:
            end = kvmod.prefix_end(fp + enc)
        return self._scan(src, start, end, n)

    # -- planning -------------------------------------------------------------------------

    def answerable(self, flt: Filter) -> bool:
        """Whether every condition of `flt` can be answered from ready indexes."""
        return _answerable(flt.root, self.defs)

    def plan(self, flt: Filter, alive: Mask, src: Reader | None = None) -> Mask | None:
        """The live slots matching `flt` (a mask as long as `alive`), or None when a
        condition needs a field without a ready index or an operand of another type.
        Entries are read from `src` (a `View`, for an answer at one instant), else the
        live store."""
        defs = self.defs
        if not _answerable(flt.root, defs):
            return None
        return self._eval(self.kv if src is None else src, flt.root, defs, alive)

    def _eval(self, src: Reader, node: Node, defs: dict[str, IndexDef], alive: Mask) -> Mask:
        n = len(alive)
        if isinstance(node, Not):
            return alive & ~self._eval(src, node.child, defs, alive)
        if isinstance(node, And):
            out = alive.copy()
            for c in node.children:
                out &= self._eval(src, c, defs, alive)
            return out
        if isinstance(node, Or):
            out = np.zeros(n, np.bool_)
            for c in node.children:
                out |= self._eval(src, c, defs, alive)
            return out
        d = defs[node.field]
        if node.op in ("$eq", "$ne"):
            hit = self._equal(src, d, node.value, n)
        elif node.op in ("$in", "$nin"):
            hit = np.zeros(n, np.bool_)
            for x in set(node.value):
                hit |= self._equal(src, d, x, n)
        else:
            hit = self._range(src, d, node.op, node.value, n)
        return alive & (~hit if node.op in ("$ne", "$nin") else hit)


def _answerable(node: Node, defs: dict[str, IndexDef]) -> bool:
    if isinstance(node, Not):
        return _answerable(node.child, defs)
    if isinstance(node, (And, Or)):
        return all(_answerable(c, defs) for c in node.children)
    d = defs.get(node.field)
    if d is None or not d.ready or node.op == "$exists":
        return False
    if node.op in ("$in", "$nin"):
        return all(value_kind(x) == d.kind for x in node.value)
    if node.op in ORDER_OPS and d.kind == "bool":
        return False
    return value_kind(node.value) == d.kind


__all__ = [
    "INDEX_TYPES",
    "Cond",
    "IndexDef",
    "PayloadIndexes",
    "check_key",
    "check_type",
    "encode_number",
    "encode_string",
    "encode_value",
]
