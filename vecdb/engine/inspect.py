"""A read-only description of a data directory, for `vecdb inspect` and support requests.

Owns nothing: opens RocksDB read-only and walks the catalog; per collection it also reads the
index's last checkpointed sequence and counts the points written after it (not yet durable in
the index). Sizes are reported twice: apparent (st_size) and allocated (st_blocks x 512). `verify` checks every file (the data directory's manifest, every row
of RocksDB with its block checksums, each index's checkpoint files block by block, every
snapshot's files against their sha256) and reports per file. Must never write or take the
directory's process lock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.engine import commit
from vecdb.engine import snapshot_files as sf
from vecdb.engine.core import CollectionConfig
from vecdb.engine.database import CONFIG_PREFIX, DATA_FORMAT, MANIFEST_NAME
from vecdb.engine.recovery import collection_dir
from vecdb.engine.tenants import describe_tenants
from vecdb.errors import FormatError, VecdbError
from vecdb.index import registry
from vecdb.index.multivector import persist as mvp
from vecdb.index.multivector import rowfile
from vecdb.index.spann.framing import read_sections, read_versioned
from vecdb.storage import kv as kvmod
from vecdb.storage.disk import du
from vecdb.storage.kv import KV
from vecdb.storage.manifest import read_manifest
from vecdb.types import IndexKind


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
    body = _read_data_manifest(data_dir)
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


def _read_data_manifest(data_dir: Path) -> dict[str, Any]:
    """The data directory's manifest; `FormatError` for a data format this build does not
    know (a newer vecdb wrote it: its files cannot be described or checked by this one)."""
    path = data_dir / MANIFEST_NAME
    body = read_manifest(path)
    if body.get("data_format") != DATA_FORMAT:
        raise FormatError(
            f"{path}: data format {body.get('data_format')} is not supported by this vecdb "
            f"(supported: {DATA_FORMAT})"
        )
    return body


def verify(data_dir: Path) -> dict[str, Any]:
    """Check everything the data directory holds; {"ok": bool, "files": [{"file", "ok",
    "detail"}, ...]} with one entry per file checked (RocksDB as one entry: its own files
    are checked through every row it holds)."""
    data_dir = data_dir.resolve()
    files: list[dict[str, Any]] = []

    def report(path: Path, ok: bool, detail: str) -> None:
        files.append({"file": str(path), "ok": ok, "detail": detail})

    try:
        _read_data_manifest(data_dir)
        report(data_dir / MANIFEST_NAME, True, "checksum ok")
    except VecdbError as exc:
        report(data_dir / MANIFEST_NAME, False, exc.message)
    configs = _verify_store(data_dir / "kv", report)
    known = {collection_dir(data_dir, c.cid).name: c for c in configs}
    root = data_dir / "collections"
    # Every index directory on disk, known to the store or not (it may be unreadable).
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if not directory.is_dir() or not any(directory.iterdir()):
            continue
        cfg = known.get(directory.name)
        for item in _verify_index(directory, None if cfg is None else cfg.index):
            item["collection"] = "?" if cfg is None else cfg.name
            files.append(item)
    _verify_snapshots(data_dir, report)
    return {"path": str(data_dir), "ok": all(f["ok"] for f in files), "files": files}


def _verify_index(directory: Path, kind: str | None) -> list[dict[str, Any]]:
    """The per-file report of one index directory, by the checks of its kind (`kind` None: a
    directory the store does not name, judged by its manifest's magic)."""
    if kind is None:
        kind = _kind_on_disk(directory)
    if kind == IndexKind.MULTIVECTOR.value:
        return _verify_multivector(directory)
    from vecdb.index.spann.persist import verify_files

    return verify_files(directory)


def _kind_on_disk(directory: Path) -> str:
    try:
        with open(directory / mvp.MANIFEST, "rb") as f:
            magic = f.read(len(mvp.MANIFEST_MAGIC))
    except OSError:
        return IndexKind.SPANN.value
    return IndexKind.MULTIVECTOR.value if magic == mvp.MANIFEST_MAGIC else IndexKind.SPANN.value


def _verify_multivector(directory: Path) -> list[dict[str, Any]]:
    """A document index's last checkpoint: manifest and state (framing and the CRC of every
    section), and the raw and tier row files it names (header, row width, and at least the
    rows the manifest counts; the rows themselves carry no checksum). Reads only: the
    index's own open would truncate the row files."""
    out: list[dict[str, Any]] = []

    def report(path: Path, ok: bool, detail: str) -> None:
        out.append({"file": str(path), "ok": ok, "detail": detail})

    path = directory / mvp.MANIFEST
    if not path.exists():
        report(path, True, "no checkpoint yet (the op log holds everything)")
        return out
    try:
        manifest = json.loads(read_sections(path, mvp.MANIFEST_MAGIC, mvp.MANIFEST_VERSION)[0])
        state, raw, raw_rows = manifest["state"], manifest["raw"], int(manifest["raw_rows"])
        tier, tier_rows = manifest["tier"], int(manifest["tier_rows"])
        tier_dtype = None if tier is None else np.dtype(manifest["tier_dtype"])
    except (FormatError, ValueError, KeyError, TypeError, IndexError) as exc:
        report(path, False, getattr(exc, "message", f"{path}: unreadable manifest ({exc!r})"))
        return out
    report(path, True, f"applied sequence {manifest.get('applied_seq')}")
    try:
        _, sections = read_versioned(directory / state, mvp.STATE_MAGIC, mvp.STATE_READS)
        meta = json.loads(sections[0])
        dim = int(meta["dim"])
        if len(sections) != 1 + len(meta["arrays"]):
            raise FormatError(f"{directory / state}: {len(sections) - 1} arrays, "
                              f"{len(meta['arrays'])} described")  # fmt: skip
        report(directory / state, True, "state CRC ok")
    except (FormatError, ValueError, KeyError, TypeError, IndexError) as exc:
        report(directory / state, False,
               getattr(exc, "message", f"{directory / state}: unreadable state ({exc!r})"))  # fmt: skip
        return out
    report(directory / raw, *_check_rows(directory / raw, 4 * dim, raw_rows))
    if tier is not None and tier_dtype is not None:
        report(
            directory / tier, *_check_rows(directory / tier, tier_dtype.itemsize * dim, tier_rows)
        )
    return out


def _check_rows(path: Path, width: int, rows: int) -> tuple[bool, str]:
    """A row file's header and size against the rows its manifest counts."""
    try:
        with open(path, "rb") as f:
            head = f.read(rowfile.HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        return False, f"{path}: row file is unreadable or missing ({exc.strerror or exc})"
    if len(head) != rowfile.HEADER.size:
        return False, f"{path}: too short for a row file header"
    magic, version, have = rowfile.HEADER.unpack(head)
    if magic != rowfile.MAGIC:
        return False, f"{path}: bad magic {magic!r}, expected {rowfile.MAGIC!r}"
    if version != rowfile.VERSION:
        return False, f"{path}: row format version {version} is not supported (supported: " \
                      f"{rowfile.VERSION})"  # fmt: skip
    if have != width:
        return False, f"{path}: row width {have} bytes, expected {width}"
    if size < rowfile.PAGE + rows * width:
        return False, f"{path}: {size} bytes, fewer than the {rows} rows the manifest names"
    return True, f"header ok, {rows:,} rows"


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
            if snap.name.endswith(sf.TMP):  # being written or deleted, or interrupted
                report(snap, True, "not a snapshot yet or any more (removed at the next open)")
                continue
            try:
                body = sf.read_snapshot(snap)
                sf.verify(snap, body)
                report(snap, True, f"{len(body['files'])} files match their sha256")
            except VecdbError as exc:
                report(snap, False, exc.message)
