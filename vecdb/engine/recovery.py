"""Reopening a collection after a clean close or a crash.

Owns the rules that make derived state match RocksDB: the slot table and count are read from
the `slots` column family; an in-memory index is rebuilt from stored vectors; a disk index
reports its last durable sequence and every later op-log entry is replayed into it (adds go
to the write buffer, removes to index and buffer). Never changes what RocksDB holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from vecdb.engine import validate as v
from vecdb.engine.collection import Collection, CollectionConfig, Sequencer
from vecdb.errors import DataLoss, InvalidArgument
from vecdb.index.base import VectorIndex
from vecdb.index.flat import open_flat
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV
from vecdb.types import IdType, Metric

INDEX_KINDS = ("flat", "spann")


def open_index(
    kind: str, dim: int, metric: str, params: Mapping[str, Any], directory: Path
) -> tuple[VectorIndex, int]:
    """Create or open the index of `kind`; returns it and its last durable sequence."""
    if kind == "flat":
        return open_flat(dim, metric, params, None)
    if kind == "spann":
        from vecdb.index.spann import open_spann  # heavy imports (hnswlib) only when used

        directory.mkdir(parents=True, exist_ok=True)
        index, applied = open_spann(dim, metric, params, directory)
        return index, applied
    raise InvalidArgument(f"index {kind!r} is unknown (expected one of {', '.join(INDEX_KINDS)})")


def check_index_params(kind: str, params: Mapping[str, Any]) -> None:
    """Reject unknown index kinds and bad build parameters, naming them; touches no files."""
    if kind == "flat":
        if params:
            raise InvalidArgument(f"the flat index takes no index_params, got {sorted(params)}")
    elif kind == "spann":
        from vecdb.index.params import BuildParams

        BuildParams.parse(params)
    else:
        raise InvalidArgument(
            f"index {kind!r} is unknown (expected one of {', '.join(INDEX_KINDS)})"
        )


def collection_dir(data_dir: Path, cid: int) -> Path:
    return data_dir / "collections" / f"{cid:08d}"


def open_collection(cfg: CollectionConfig, kv: KV, seq: Sequencer, data_dir: Path) -> Collection:
    directory = collection_dir(data_dir, cfg.cid)
    index, applied = open_index(cfg.index, cfg.dim, cfg.metric, cfg.index_params, directory)
    coll = Collection(cfg, kv, seq, index, directory)
    prefix = coll.prefix
    raw_next = kv.get(kvmod.CF_META, b"next_slot:" + prefix)
    coll.next_slot = 0 if raw_next is None else kvmod.read_u64(raw_next)

    # Pass 1: the slot -> id table and the live count, streamed into numpy chunks so that
    # no per-point Python objects pile up (freed small objects would stay resident).
    id_type = IdType(cfg.id_type)
    for slots, ids in _slot_chunks(kv, prefix, id_type):
        coll.set_slot_ids(slots.tolist(), ids)
        coll.count += len(slots)

    if not index.persistent:
        # Pass 2a: rebuild the in-memory index from the stored vectors.
        _rebuild(coll, kv)
    else:
        # Pass 2b: replay the op log past the index's last checkpoint.
        _replay(coll, kv, applied)
        coll.applied_seq = applied
    return coll


_CHUNK = 65_536


def _slot_chunks(
    kv: KV, prefix: bytes, id_type: IdType
) -> Iterator[tuple[npt.NDArray[np.int64], Any]]:
    slots = np.empty(_CHUNK, np.int64)
    ids: Any = np.empty(_CHUNK, np.int64) if id_type is IdType.INT else [None] * _CHUNK
    n = 0
    for key, value in kv.scan_prefix(kvmod.CF_SLOTS, prefix):
        slots[n] = kvmod.read_u64(key, len(prefix))
        ids[n] = v.decode_id(value, id_type)
        n += 1
        if n == _CHUNK:
            yield slots, ids
            n = 0
    if n:
        yield slots[:n], ids[:n]


def _rebuild(coll: Collection, kv: KV) -> None:
    """Fill the in-memory index from stored vectors, straight into one preallocated matrix."""
    prefix, dim = coll.prefix, coll.cfg.dim
    slots = np.empty(coll.count, np.int64)
    vectors = np.empty((coll.count, dim), np.float32)
    n = 0
    for key, value in kv.scan_prefix(kvmod.CF_VECTORS, prefix):
        if n == len(slots):  # more vectors than slots: storage changed under us
            raise DataLoss(f"collection {coll.cfg.name!r}: vectors and slot table disagree")
        slots[n] = kvmod.read_u64(key, len(prefix))
        vectors[n] = np.frombuffer(value, np.float32)
        n += 1
    slots, vectors = slots[:n], vectors[:n]
    if coll.metric is Metric.COSINE:
        for lo in range(0, n, _CHUNK):  # normalise in place, a chunk at a time
            vectors[lo : lo + _CHUNK] = v.normalize(vectors[lo : lo + _CHUNK])
    coll.index.build(slots, vectors)


def _replay(coll: Collection, kv: KV, applied: int) -> None:
    prefix = coll.prefix
    assert coll.buffer is not None
    for key, value in kv.scan_prefix(kvmod.CF_OPLOG, prefix):
        seq = kvmod.read_u64(key, len(prefix))
        if seq <= applied:
            continue  # already durable in the index (crash between checkpoint and truncation)
        op = msgpack.unpackb(value)
        removed = np.asarray(op["rm"], np.int64)
        if removed.size:
            coll.index.remove(removed)
            coll.buffer.remove(removed)
        start, n = op["add"]
        if n:
            added = list(range(start, start + n))
            raw = kv.multi_get(kvmod.CF_VECTORS, [coll._slot_key(s) for s in added])
            keep = [
                (s, r) for s, r in zip(added, raw, strict=False) if r is not None
            ]  # later deleted: skip
            if keep:
                vecs = np.frombuffer(b"".join(r for _, r in keep), np.float32)
                vecs = vecs.reshape(len(keep), coll.cfg.dim)
                coll.buffer.add(
                    np.asarray([s for s, _ in keep], np.int64), coll.prepare_for_index(vecs)
                )
