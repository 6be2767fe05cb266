"""A read-only description of a data directory, for `vecdb inspect` and support requests.

Owns nothing: opens RocksDB read-only and walks the catalog; per collection it also reads the
index's last checkpointed sequence and counts the points written after it (not yet durable in
the index). Sizes are reported twice: apparent (st_size) and allocated (st_blocks x 512). Must never write or take the directory's process lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecdb.engine import commit
from vecdb.engine.core import CollectionConfig
from vecdb.engine.database import CONFIG_PREFIX, MANIFEST_NAME
from vecdb.engine.recovery import collection_dir
from vecdb.engine.tenants import describe_tenants
from vecdb.index import registry
from vecdb.storage import kv as kvmod
from vecdb.storage.disk import du
from vecdb.storage.kv import KV
from vecdb.storage.manifest import read_manifest


def _index_progress(kv: KV, cfg: CollectionConfig, directory: Path) -> dict[str, Any]:
    """How much of a collection its index holds durably: points written after the index's
    last checkpoint wait in the op log (a running server holds them in its write buffer)."""
    if not registry.spec(cfg.index).persistent:
        return {"unindexed": 0, "index_checkpoint_seq": None}
    applied = registry.durable_seq(cfg.index, directory) or 0
    prefix = kvmod.cid_prefix(cfg.cid)
    added: list[int] = []
    for op in commit.read_log(kv, prefix, applied):
        added.extend(range(op.add_start, op.add_start + op.add_count))
    keys = [prefix + kvmod.u64(s) for s in added]
    alive = sum(1 for raw in kv.multi_get(kvmod.CF_VECTORS, keys) if raw is not None)
    return {"unindexed": alive, "index_checkpoint_seq": applied}


def describe(data_dir: Path) -> dict[str, Any]:
    data_dir = data_dir.resolve()
    body = read_manifest(data_dir / MANIFEST_NAME)
    kv = KV(data_dir / "kv", read_only=True)
    try:
        raw_seq = kv.get(kvmod.CF_META, b"seq")
        collections = []
        for _, raw in kv.scan_prefix(kvmod.CF_META, CONFIG_PREFIX):
            cfg = CollectionConfig.from_json(raw)
            index_bytes, index_allocated = du(collection_dir(data_dir, cfg.cid))
            collections.append(
                {
                    "name": cfg.name,
                    "dim": cfg.dim,
                    "metric": cfg.metric,
                    "index": cfg.index,
                    "index_params": cfg.index_params,
                    "id_type": cfg.id_type,
                    "count": kv.count_prefix(kvmod.CF_IDS, kvmod.cid_prefix(cfg.cid)),
                    "index_bytes": index_bytes,  # apparent size of the index files
                    "index_allocated_bytes": index_allocated,  # blocks they occupy
                    **_index_progress(kv, cfg, collection_dir(data_dir, cfg.cid)),
                }
            )
            if cfg.multi_tenant:  # the tenants section: name, state, vectors, owned
                collections[-1]["tenants"] = describe_tenants(kv, kvmod.cid_prefix(cfg.cid))
    finally:
        kv.close()
    apparent, allocated = du(data_dir)
    return {
        "path": str(data_dir),
        "data_format": body.get("data_format"),
        "seq": 0 if raw_seq is None else kvmod.read_u64(raw_seq),
        "bytes_on_disk": apparent,  # apparent size of every file
        "allocated_bytes": allocated,  # blocks they occupy (less for sparse files)
        "collections": sorted(collections, key=lambda c: c["name"]),
    }
