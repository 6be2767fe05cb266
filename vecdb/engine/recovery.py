"""Opening a collection after a clean close or a crash.

Owns the rules that make derived state match RocksDB: the point table is read from the
`slots` column family; an in-memory index is rebuilt from stored vectors; a disk index
reports its last durable sequence and every later op-log entry is replayed (adds go to the
write buffer, removes to index and buffer). An index whose files cannot be read (an older
format, a failed checksum) is derived state: it is discarded, loudly, and rebuilt from the
stored vectors by the maintenance worker. Never changes what RocksDB holds.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from vecdb.engine import commit, doc_jobs
from vecdb.engine import validate as v
from vecdb.engine.commit import Sequencer
from vecdb.engine.core import CollectionConfig, CollectionCore
from vecdb.engine.settings import EngineSettings
from vecdb.errors import DataLoss, FormatError
from vecdb.index import registry
from vecdb.storage import kv as kvmod
from vecdb.storage.kv import KV
from vecdb.types import Metric

log = logging.getLogger("vecdb.engine")
_CHUNK = 65_536  # vectors read per step when filling an index or buffer from RocksDB


def collection_dir(data_dir: Path, cid: int) -> Path:
    return data_dir / "collections" / f"{cid:08d}"


def open_collection(
    cfg: CollectionConfig, kv: KV, seq: Sequencer, data_dir: Path, settings: EngineSettings
) -> CollectionCore:
    kind = registry.spec(cfg.index)
    directory = collection_dir(data_dir, cfg.cid)
    rebuild = False
    marker = kvmod.META_REBUILD + kvmod.cid_prefix(cfg.cid)
    if kind.persistent and kv.get(kvmod.CF_META, marker) is not None:
        # A rebuild was under way (maintenance._bridge): its index files hold part of the
        # points at most. Start over from the stored vectors, like unreadable files.
        log.warning(
            "an index rebuild was interrupted; rebuilding the index from stored vectors",
            extra={"collection": cfg.name, "directory": str(directory)},
        )
        shutil.rmtree(directory, ignore_errors=True)
        rebuild = True  # everything goes through the buffer (the marker stays until built)
    try:
        index, applied = registry.open_index(
            cfg.index, cfg.dim, cfg.metric, cfg.index_params, directory
        )
    except FormatError as exc:
        if not kind.persistent:
            raise
        log.warning(
            "index files unreadable; rebuilding the index from stored vectors",
            extra={"collection": cfg.name, "directory": str(directory), "error": str(exc)},
        )
        shutil.rmtree(directory, ignore_errors=True)
        index, applied = registry.open_index(
            cfg.index, cfg.dim, cfg.metric, cfg.index_params, directory
        )
        rebuild = True
    if rebuild:  # until the first build is checkpointed, an open must start over again
        kvmod.set_rebuild_marker(kv, kvmod.cid_prefix(cfg.cid), True)
    coll = CollectionCore(cfg, kv, seq, index, kind, directory, settings)
    # Pass 1: the point table and the live count.
    coll.points.load()
    if cfg.kind == "multivector":  # documents replay into their own index (engine.doc_jobs)
        doc_jobs.recover(coll, applied, rebuild)
    elif not kind.persistent:
        # Pass 2a: rebuild the in-memory index from the stored vectors.
        _load_all(coll, into_buffer=False)
    elif rebuild:
        # Pass 2b: everything goes through the buffer into a fresh index.
        _load_all(coll, into_buffer=True)
        coll.status.maintenance_pending = False
    else:
        # Pass 2c: replay the op log past the index's last checkpoint.
        _replay(coll, applied)
        coll.applied_seq = applied
    return coll


def _load_all(coll: CollectionCore, into_buffer: bool) -> None:
    """Every stored vector, in slot order, into one preallocated matrix (the flat index
    adopts it) or into the write buffer."""
    prefix, dim = coll.prefix, coll.cfg.dim
    count = coll.points.count
    slots = np.empty(count, np.int64)
    vectors = np.empty((count, dim), np.float32)
    n = 0
    for key, value in coll.kv.scan_prefix(kvmod.CF_VECTORS, prefix):
        if n == count:  # more vectors than slots: storage changed under us
            raise DataLoss(f"collection {coll.name!r}: vectors and slot table disagree")
        slots[n] = kvmod.read_u64(key, len(prefix))
        vectors[n] = np.frombuffer(value, np.float32)
        n += 1
    slots, vectors = slots[:n], vectors[:n]
    if coll.metric is Metric.COSINE:
        for lo in range(0, n, _CHUNK):  # normalise in place, a chunk at a time
            vectors[lo : lo + _CHUNK] = v.normalize(vectors[lo : lo + _CHUNK])
    if into_buffer:
        assert coll.buffer is not None
        coll.buffer.active.build(slots, vectors)  # adopts the matrix: no second copy
    else:
        coll.index.build(slots, vectors)


def _replay(coll: CollectionCore, applied: int) -> None:
    buf = coll.buffer
    assert buf is not None
    for op in commit.read_log(coll.kv, coll.prefix, applied):
        removed = np.asarray(op.removed, np.int64)
        if removed.size:
            coll.index.remove(removed)
            buf.remove(removed)
        if op.add_count:
            added = list(range(op.add_start, op.add_start + op.add_count))
            raw = coll.points.vectors(added)
            keep = [(s, r) for s, r in zip(added, raw, strict=True) if r is not None]
            if keep:  # points deleted later have no vector any more: skipped
                vecs = np.frombuffer(b"".join(r for _, r in keep), np.float32).reshape(
                    -1, coll.cfg.dim
                )
                if coll.metric is Metric.COSINE:
                    vecs = v.normalize(vecs)
                buf.add(np.asarray([s for s, _ in keep], np.int64), vecs)
