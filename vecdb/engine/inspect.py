"""A read-only description of a data directory, for `vecdb inspect` and support requests.

Owns nothing: opens RocksDB read-only and walks the catalog; per collection it also reads the
index's last checkpointed sequence and counts the points written after it (not yet durable in
the index). Sizes are reported twice: apparent (st_size) and allocated (st_blocks x 512). `verify` checks every file (the data directory's manifest, every row
of RocksDB with its block checksums, each index's checkpoint files block by block, every
snapshot's files against their sha256) and reports per file. Must never write or take the
directory's process lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vecdb.engine import commit
from vecdb.engine import snapshot_files as sf
from vecdb.engine.core import CollectionConfig
from vecdb.engine.database import CONFIG_PREFIX, MANIFEST_NAME
from vecdb.engine.recovery import collection_dir
from vecdb.engine.tenants import describe_tenants
from vecdb.errors import VecdbError
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


def verify(data_dir: Path) -> dict[str, Any]:
    """Check everything the data directory holds; {"ok": bool, "files": [{"file", "ok",
    "detail"}, ...]} with one entry per file checked (RocksDB as one entry: its own files
    are checked through every row it holds)."""
    data_dir = data_dir.resolve()
    files: list[dict[str, Any]] = []

    def report(path: Path, ok: bool, detail: str) -> None:
        files.append({"file": str(path), "ok": ok, "detail": detail})

    try:
        read_manifest(data_dir / MANIFEST_NAME)
        report(data_dir / MANIFEST_NAME, True, "checksum ok")
    except VecdbError as exc:
        report(data_dir / MANIFEST_NAME, False, exc.message)
    configs = _verify_store(data_dir / "kv", report)
    names = {collection_dir(data_dir, c.cid).name: c.name for c in configs}
    root = data_dir / "collections"
    # Every index directory on disk, known to the store or not (it may be unreadable).
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if not directory.is_dir() or not any(directory.iterdir()):
            continue
        from vecdb.index.spann.persist import verify_files

        for item in verify_files(directory):
            item["collection"] = names.get(directory.name, "?")
            files.append(item)
    _verify_snapshots(data_dir, report)
    return {"path": str(data_dir), "ok": all(f["ok"] for f in files), "files": files}


def _verify_store(path: Path, report: Any) -> list[CollectionConfig]:
    """Read every row of every column family (RocksDB checks each block's checksum on the
    way); return the collection configs found."""
    try:
        kv = KV(path, read_only=True)
    except VecdbError as exc:
        report(path, False, exc.message)
        return []
    configs: list[CollectionConfig] = []
    try:
        rows = 0
        for cf in kvmod.COLUMN_FAMILIES:
            for _ in kv.scan_range(cf, b"", b"\xff" * 16, fill_cache=False):
                rows += 1
        for _, raw in kv.scan_prefix(kvmod.CF_META, CONFIG_PREFIX):
            configs.append(CollectionConfig.from_json(raw))
        report(path, True, f"RocksDB: {rows:,} rows read, block checksums ok")
    except VecdbError as exc:
        report(path, False, exc.message)
    finally:
        kv.close()
    return configs


def _verify_snapshots(data_dir: Path, report: Any) -> None:
    top = data_dir / sf.SNAPSHOTS
    if not top.is_dir():
        return
    for root in sorted(p for p in top.iterdir() if p.is_dir()):
        for snap in sorted(p for p in root.iterdir() if p.is_dir()):
            body = sf.load(snap)
            if body is None:
                report(snap, False, "incomplete snapshot (no valid completion marker)")
                continue
            try:
                sf.verify(snap, body)
                report(snap, True, f"{len(body['files'])} files match their sha256")
            except VecdbError as exc:
                report(snap, False, exc.message)
