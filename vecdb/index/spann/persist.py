"""The SPANN index's own files besides the posting file, and checkpoint / open over the state.

The directory holds `MANIFEST` (JSON behind a magic + version header: applied sequence, the
names of the current files, the posting file's durable length, build parameters), one
`heads.<n>.bin` (the head graph's arrays, framed; version 1 held hnswlib's own
serialisation and is still read), one `state.<n>.bin` (per-slot versions, the block
table, the clustering tree, counters, the int8 quantizer and, for a rerank store in row order
"head", its slot -> row map, as raw little-endian arrays) and
one `postings.<n>.bin`. Every file is published by rename and the manifest is switched last,
so a crash at any point leaves the previous checkpoint whole; on open, files of ours the
manifest does not name (tmp files, files of an interrupted checkpoint or compaction) are
deleted; other files are left alone. A state file of another version is a `FormatError`
naming the file, found and supported versions (the engine then rebuilds the index from its
own store). `verify_files` checks every file of a checkpoint without opening the index (no
byte written: for `vecdb inspect --verify`, even while a server runs). Never pickle.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.heads import ClusterTree
from vecdb.index.params import BuildParams
from vecdb.index.spann.bitcodes import Codec, load_codec
from vecdb.index.spann.framing import (
    check_header,
    read_sections,
    read_versioned,
    write_sections,
)
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.postings import (
    BLOCK_HEADER,
    MAGIC,
    VERSION,
    PostingFile,
    decode_block,
)
from vecdb.index.spann.state import (
    COUNTERS,
    SpannState,
    file_path,
    head_space,
    new_state,
)
from vecdb.index.spann.table import BlockTable
from vecdb.index.spann.vectors import NAME as VECTORS
from vecdb.index.spann.vectors import verify_store

MANIFEST = "MANIFEST"
MANIFEST_MAGIC, MANIFEST_VERSION = b"VDBSPMAN", 1
# 3: `HeadGraph` arrays with int8 heads' scales (2: float16 / float32 heads only; 1: hnswlib's file)
HEADS_MAGIC, HEADS_VERSION = b"VDBHEADS", 3
STATE_MAGIC, STATE_VERSION = b"VDBSTATE", 3  # 3: the whole clustering tree


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The last published manifest, or None for a new index."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    (payload,) = read_sections(path, MANIFEST_MAGIC, MANIFEST_VERSION)
    try:
        out: dict[str, Any] = json.loads(payload)
    except ValueError as e:
        raise FormatError(f"{path}: manifest is not valid JSON ({e})") from e
    return out


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    payload = json.dumps(manifest, sort_keys=True).encode()
    write_sections(directory / MANIFEST, MANIFEST_MAGIC, MANIFEST_VERSION, [payload])


OURS = re.compile(
    r"^((postings|heads|state)\.\d+\.bin|MANIFEST)(\.tmp)?$|^heads\.scratch\.tmp$"
    r"|^build\.\d+\.\w+\.tmp$"  # a child build's exchange files (`spann.child`)
)


def clean_directory(directory: Path, keep: set[str]) -> None:
    """Delete leftovers: files of ours (by name) that are neither the manifest nor named in
    `keep`. Files we did not name are never touched."""
    for entry in os.scandir(directory):
        name = entry.name
        if entry.is_file() and OURS.match(name) and name != MANIFEST and name not in keep:
            os.unlink(entry.path)


def save_heads(path: Path, graph: HeadGraph) -> int:
    """The head graph's arrays in our framed file; returns bytes."""
    return write_sections(path, HEADS_MAGIC, HEADS_VERSION, graph.to_sections())


def load_heads(
    path: Path, space: str, dim: int, ef_construction: int, dtype: str = "int8"
) -> HeadGraph:
    """Load the head graph (its vectors in the form the file has); a version-1 file
    (hnswlib's serialisation) is converted on the way (vectors in `dtype`; its inserts then
    use `ef_construction`)."""
    version, sections = read_versioned(path, HEADS_MAGIC, (1, 2, HEADS_VERSION))
    try:
        if version == 1:
            if len(sections) != 1:
                raise FormatError(f"{path}: expected 1 section, found {len(sections)}")
            return HeadGraph.from_hnswlib(sections[0], space, dim, ef_construction, dtype)
        return HeadGraph.from_sections(sections, dim, version)
    except (ValueError, struct.error) as exc:
        raise FormatError(f"{path}: malformed head graph ({exc})") from exc
    except FormatError as exc:
        raise FormatError(f"{path}: {exc.message}") from exc


TABLE_SECTIONS, TREE_SECTIONS = 3, 10


def save_state(
    path: Path,
    info: dict[str, Any],
    versions: bytes,
    table: list[bytes],
    tree: list[bytes],
    quant: bytes = b"",
    row_map: bytes = b"",
) -> int:
    """Counters, per-slot versions, block table, clustering tree, quantizer and (a rerank
    store in row order "head" only: one section more) its slot -> row map, as raw
    little-endian arrays."""
    sections = [json.dumps(info, sort_keys=True).encode(), versions, *table, *tree, quant]
    if row_map:
        sections.append(row_map)
    return write_sections(path, STATE_MAGIC, STATE_VERSION, sections)


def load_state(
    path: Path, dim: int, width: int, block_dim: int | None = None
) -> tuple[npt.NDArray[np.uint8], BlockTable, ClusterTree, dict[str, Any], bytes, bytes]:
    """(versions, block table, tree, counters, quantizer section, row map section: b"" when
    absent) of a state file; the table's entries are `block_dim` components of `width`
    bytes (default: `dim`)."""
    s = read_sections(path, STATE_MAGIC, STATE_VERSION)
    want = 3 + TABLE_SECTIONS + TREE_SECTIONS
    row_map = s.pop() if len(s) == want + 1 else b""
    if len(s) != want:
        raise FormatError(f"{path}: expected {want} or {want + 1} sections, found {len(s)}")
    info: dict[str, Any] = json.loads(s[0])
    slot_version = np.frombuffer(s[1], dtype=np.uint8).copy()
    table = BlockTable.from_arrays(block_dim or dim, s[2 : 2 + TABLE_SECTIONS], width)
    tree = ClusterTree.from_sections(dim, s[2 + TABLE_SECTIONS : -1])
    return slot_version, table, tree, info, s[-1], row_map


def _files(manifest: dict[str, Any]) -> set[str]:
    return {f for f in (manifest["postings"], manifest["heads"], manifest["state"]) if f}


def checkpoint(st: SpannState, applied_seq: int) -> None:
    """Make the applied state durable and record `applied_seq` with it (worker thread)."""
    # Pass 1: posting data
    st.file.sync()
    if st.store is not None:  # the rerank rows (`vectors`), durable with the postings
        st.store.sync()
    # Pass 2: head graph, if it changed (searches may run: they only read the graph)
    if st.heads_dirty and st.graph is not None:
        st.heads_gen += 1
        save_heads(file_path(st.directory, "heads", st.heads_gen), st.graph)
    st.heads_dirty = False
    # Pass 3: a consistent snapshot of versions, table and tree (removes wait for it)
    with st.lock.read():
        info: dict[str, Any] = dict(st.counters, live_heads=st.live_heads, n_live=st.n_live)
        info["next_posting"], info["replica_cap"] = st.next_posting, st.replica_cap
        info["rerank_k"], info["rerank_k_agreement"] = st.rerank_k, st.rerank_k_agreement
        versions, table, tree = (
            st.slot_version.tobytes(),
            st.table.to_arrays(),
            st.tree.to_sections(),
        )
        row_map, rows_end = b"", 0
        if st.store is not None and st.store.mapped:  # the rows these versions' slots name
            row_map, rows_end = st.store.map_bytes(len(st.slot_version)), st.store.next_row
            info["next_row"] = rows_end
        # The table is captured: blocks it drops from now on belong to the next epoch.
        mark, length, file = st.file.begin_checkpoint(), st.file.length, st.file
    st.ckpt_no += 1
    state = file_path(st.directory, "state", st.ckpt_no)
    quant = b"" if st.file.quant is None else st.file.quant.to_bytes()
    save_state(state, info, versions, table, tree, quant, row_map)
    kill_point("checkpoint")
    # Pass 4: switch the manifest, then drop files it no longer names
    heads = file_path(st.directory, "heads", st.heads_gen)
    manifest = {
        "applied_seq": int(applied_seq),
        "dim": st.dim,
        "metric": st.metric,
        "params": st.params.__dict__,
        "postings": file.path.name,
        "postings_length": length,
        "heads": heads.name if st.graph is not None else None,
        "state": state.name,
        "gens": [st.file_gen, st.heads_gen, st.ckpt_no],
    }
    write_manifest(st.directory, manifest)
    st.applied_seq = int(applied_seq)
    st.freed_bytes = 0
    clean_directory(st.directory, _files(manifest))
    # Blocks dropped before the capture are in no published checkpoint any more: reusable.
    file.checkpointed(mark)
    if st.store is not None:  # rows dead in this checkpoint give their pages back
        snapshot = np.frombuffer(row_map, "<i4") if row_map else None
        st.store.reclaim(np.frombuffer(versions, np.uint8), snapshot, rows_end)


def open_state(
    dim: int, metric: str, params: dict[str, Any], directory: Path, clean: bool = True
) -> tuple[SpannState, int]:
    """Open the index in `directory` (creating it if new); return its state and the last
    durable applied sequence. `clean=False` leaves other files alone (a drain child and its
    parent open a checkpoint while their exchange files are in use: `drain_child`)."""
    directory.mkdir(parents=True, exist_ok=True)
    m = read_manifest(directory)
    if m is None:
        clean_directory(directory, set())
        return new_state(dim, metric, BuildParams.parse(params, dim), directory), 0
    if m["dim"] != dim or m["metric"] != metric:
        raise FormatError(
            f"{directory / MANIFEST}: index is dim={m['dim']} metric={m['metric']}, "
            f"opened as dim={dim} metric={metric}"
        )
    if clean:
        clean_directory(directory, _files(m))
    p = BuildParams.parse(dict(m["params"], io=params.get("io", m["params"]["io"])))
    versions, table, tree, info, qbytes, row_map = load_state(
        directory / m["state"], dim, p.width, p.block_dim(dim)
    )
    quant = load_codec(qbytes, dim, p.vector_dtype)
    file = PostingFile(
        directory / m["postings"], dim, m["postings_length"], p.width, quant, p.block_entries(dim)
    )
    st = new_state(dim, metric, p, directory, file=file)
    st.file_gen, st.heads_gen, st.ckpt_no = m["gens"]
    st.slot_version = versions
    st.table = file.attach(table)  # rebuilds the free-space map: unreferenced bytes are free
    tree.leaf_vectors = st.leaf_vectors()
    st.tree = tree
    if m["heads"] is not None:
        st.graph = load_heads(
            directory / m["heads"], head_space(metric), dim, p.head_ef_construction, p.head_dtype
        )
    st.live_heads, st.next_posting = info["live_heads"], info["next_posting"]
    st.n_live, st.replica_cap = info["n_live"], int(info.get("replica_cap", 0))
    st.counters = {k: int(info.get(k, 0)) for k in COUNTERS}
    st.rerank_k = int(info.get("rerank_k", 0))
    st.rerank_k_agreement = float(info.get("rerank_k_agreement", 1.0))
    st.rng = np.random.default_rng(p.seed + st.ckpt_no)
    st.applied_seq = int(m["applied_seq"])
    if st.store is not None and st.store.mapped:  # row order "head": the slot -> row map
        if len(row_map) != 4 * len(versions):
            raise FormatError(
                f"{directory / m['state']}: the rerank store's row map holds "
                f"{len(row_map) // 4} slots, the state {len(versions)}"
            )
        st.store.load_map(row_map, int(info.get("next_row", 0)), versions)
    return st, st.applied_seq


def verify_files(directory: Path) -> list[dict[str, Any]]:
    """One report per file of the index's last checkpoint ({"file", "ok", "detail"}):
    manifest, head graph and state (framing and CRC of every section), posting file (header,
    size, and the CRC and owner of every block the state's table names). Reads only."""
    out: list[dict[str, Any]] = []

    def report(path: Path, ok: bool, detail: str) -> None:
        out.append({"file": str(path), "ok": ok, "detail": detail})

    try:
        m = read_manifest(directory)
    except FormatError as exc:
        report(directory / MANIFEST, False, exc.message)
        return out
    if m is None:
        report(directory / MANIFEST, True, "no checkpoint yet (the op log holds everything)")
        return out
    report(directory / MANIFEST, True, f"applied sequence {m['applied_seq']}")
    if m["heads"] is not None:
        try:
            read_sections(directory / m["heads"], HEADS_MAGIC, (1, 2, HEADS_VERSION))
            report(directory / m["heads"], True, "head graph CRC ok")
        except FormatError as exc:
            report(directory / m["heads"], False, exc.message)
    params = BuildParams.parse(dict(m["params"]))
    try:
        bdim = params.block_dim(m["dim"])
        got = load_state(directory / m["state"], m["dim"], params.width, bdim)
        table, qbytes = got[1], got[4]
        report(directory / m["state"], True, "state CRC ok")
    except (FormatError, ValueError, KeyError) as exc:
        report(directory / m["state"], False, getattr(exc, "message", str(exc)))
        return out
    try:
        quant = load_codec(qbytes, m["dim"], params.vector_dtype)
    except FormatError as exc:
        report(directory / m["state"], False, exc.message)
        return out
    path = directory / m["postings"]
    try:
        blocks = _verify_postings(path, table, m["dim"], params.width, quant)
        report(path, True, f"{blocks} blocks, CRC ok")
    except FormatError as exc:
        report(path, False, exc.message)
    if params.rerank != "none":  # the rerank store (`vectors.verify_store`, read-only)
        report(directory / VECTORS, *verify_store(directory, m["dim"], params.rerank))
    return out


def _verify_postings(
    path: Path, table: BlockTable, dim: int, width: int, quant: Codec | None
) -> int:
    """CRC-check every block `table` names in the posting file at `path` (read-only)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; a missing file is a finding)
    except OSError as exc:
        raise FormatError(f"{path}: posting file is unreadable or missing ({exc})") from exc
    with f:
        head = f.read(24)
        check_header(head, MAGIC, VERSION, path)
        size = os.fstat(f.fileno()).st_size
        ext = table.extents()
        blocks = 0
        for posting, off, _ in zip(
            ext.posting.tolist(), ext.offset.tolist(), ext.size.tolist(), strict=True
        ):
            f.seek(off)
            raw = f.read(BLOCK_HEADER.size)
            if len(raw) < BLOCK_HEADER.size:
                raise FormatError(f"{path}: block at byte {off} lies past the end ({size} bytes)")
            nbytes = BLOCK_HEADER.unpack_from(raw, 0)[2]
            f.seek(off)
            data = f.read(nbytes)
            if len(data) != nbytes or nbytes < BLOCK_HEADER.size:
                raise FormatError(f"{path}: torn posting block at byte {off}")
            got, _, _, _ = decode_block(
                np.frombuffer(data, np.uint8), f"{path} at byte {off}", quant
            )
            if got != posting:
                raise FormatError(f"{path}: block at byte {off} is not posting {posting}'s")
            blocks += 1
    return blocks
