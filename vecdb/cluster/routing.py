"""Which shard holds an id, and splitting id-addressed requests into one request per shard.

Dense collections that are not multi-tenant place an id on shard `jump_hash(key(id), n)`:
the jump consistent hash of Lamping and Veach ("A Fast, Minimal Memory, Consistent Hash
Algorithm", 2014), which moves only 1/n of the keys when a shard is added. The key of an
integer id is its value; the key of a string id is the 64-bit blake2b digest of its UTF-8
bytes (stable across processes and Python versions, unlike `hash`). Splitting works on the
wire messages: vector rows are cut out of the request's float32 bytes without decoding them,
payload texts are moved as they are. A request whose ids cannot be placed (mixed kinds, a
vector blob that does not match its count) is not split: `split_positions` answers None and
the router sends it whole to one shard, whose validator answers exactly as a single node.
Owns placement arithmetic only: no I/O, no catalog, no gRPC calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from vecdb.rpc.v1 import vecdb_pb2 as pb

MASK64 = (1 << 64) - 1
_JUMP_MULT = 2862933555777941757  # the 64-bit LCG multiplier of the paper


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in [0, buckets) of a 64-bit `key` (Lamping & Veach, figure 1)."""
    if buckets < 1:
        raise ValueError(f"buckets={buckets} must be >= 1")
    key &= MASK64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _JUMP_MULT + 1) & MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def str_key(raw: bytes) -> int:
    """The 64-bit key of a string id given as its UTF-8 bytes."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def id_key(value: int | str) -> int:
    """The 64-bit key of an id: an int's value, a string's blake2b digest."""
    if isinstance(value, str):
        return str_key(value.encode("utf-8", "surrogatepass"))
    return int(value) & MASK64


def shard_of(value: int | str, shards: int) -> int:
    """The shard holding id `value` in a collection placed by id."""
    return jump_hash(id_key(value), shards)


def id_keys(ids: pb.Ids) -> list[int] | None:
    """The keys of every id of a wire list, or None when the list has mixed kinds."""
    kind = ids.WhichOneof("kind")
    if kind == "strs":
        return [str_key(raw) for raw in ids.strs.values]
    if kind == "mixed":
        return None
    return [v & MASK64 for v in ids.ints.values]


def split_positions(ids: pb.Ids, shards: int) -> dict[int, list[int]] | None:
    """Positions of the ids by shard (in request order), or None when not placeable."""
    keys = id_keys(ids)
    if keys is None:
        return None
    out: dict[int, list[int]] = {}
    for pos, key in enumerate(keys):
        out.setdefault(jump_hash(key, shards), []).append(pos)
    return out


def sub_ids(ids: pb.Ids, positions: Sequence[int]) -> pb.Ids:
    """The ids at `positions`, of the same kind."""
    if ids.WhichOneof("kind") == "strs":
        values = ids.strs.values
        return pb.Ids(strs=pb.StrIds(values=[values[p] for p in positions]))
    ints = ids.ints.values
    return pb.Ids(ints=pb.IntIds(values=[ints[p] for p in positions]))


def rows_fit(vectors: pb.Vectors, count: int) -> bool:
    """Whether `vectors` holds exactly `count` rows of `dim` floats (so rows can be cut)."""
    return (
        not vectors.row_lengths
        and vectors.count == count
        and vectors.dim > 0
        and len(vectors.data) == count * vectors.dim * 4
    )


def sub_vectors(vectors: pb.Vectors, positions: Sequence[int]) -> pb.Vectors:
    """The rows at `positions`, cut from the raw bytes (no float decoding)."""
    width = vectors.dim * 4
    rows = np.frombuffer(vectors.data, dtype=np.uint8).reshape(vectors.count, width)
    picked = rows[np.asarray(positions, dtype=np.intp)]
    return pb.Vectors(dim=vectors.dim, count=len(positions), data=picked.tobytes())


def split_upsert(req: pb.UpsertRequest, shards: int) -> dict[int, pb.UpsertRequest] | None:
    """One UpsertRequest per shard, or None when the request cannot be split as it is (the
    router then sends it whole so a shard's validator names the fault)."""
    n = len(_id_values(req.ids))
    if req.payloads and len(req.payloads) != n:
        return None
    if not rows_fit(req.vectors, n):
        return None
    by_shard = split_positions(req.ids, shards)
    if by_shard is None:
        return None
    out = {}
    for shard, pos in by_shard.items():
        part = pb.UpsertRequest(
            collection=req.collection, ids=sub_ids(req.ids, pos),
            vectors=sub_vectors(req.vectors, pos), tenant=req.tenant, grant_to=req.grant_to,
        )  # fmt: skip
        if req.payloads:
            part.payloads.extend(req.payloads[p] for p in pos)
        out[shard] = part
    return out


def _id_values(ids: pb.Ids) -> Sequence[object]:
    kind = ids.WhichOneof("kind")
    if kind == "strs":
        return ids.strs.values
    if kind == "mixed":
        return ids.mixed.values
    return ids.ints.values


def id_count(ids: pb.Ids) -> int:
    """Number of ids in a wire list of any kind."""
    return len(_id_values(ids))
