"""Fixed-width big-endian key parts (collection ids, slots, sequence numbers), so that
RocksDB's byte order is their numeric order. Owns nothing else; `kv` re-exports them.
"""

from __future__ import annotations

import struct

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def cid_prefix(cid: int) -> bytes:
    return _U32.pack(cid)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(raw: bytes, offset: int = 0) -> int:
    return int(_U64.unpack_from(raw, offset)[0])
