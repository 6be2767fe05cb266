"""The SPANN index's own files besides the posting file: manifest, head graph and state.

The directory holds `MANIFEST` (JSON behind a magic + version header: applied sequence, the
names of the current files, the posting file's durable length, build parameters), one
`heads.<n>.bin` (the hnswlib graph, framed), one `state.<n>.bin` (per-slot versions, the block
table, the head tree, counters and the int8 quantizer as raw little-endian arrays) and one `postings.<n>.bin`. Every
file is published by rename and the manifest is switched last, so a crash at any point leaves
the previous checkpoint whole; on open, files of ours the manifest does not name (tmp files,
files of an interrupted checkpoint or compaction) are deleted; other files are left alone. Never pickle.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.spann.build import HeadTree
from vecdb.index.spann.framing import (
    HEADER,
    SECTION,
    check_header,
    read_sections,
    write_sections,
)
from vecdb.index.spann.table import BlockTable

MANIFEST = "MANIFEST"
MANIFEST_MAGIC, MANIFEST_VERSION = b"VDBSPMAN", 1
HEADS_MAGIC, HEADS_VERSION = b"VDBHEADS", 1
STATE_MAGIC, STATE_VERSION = b"VDBSTATE", 2
SCRATCH = "heads.scratch.tmp"


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


OURS = re.compile(r"^((postings|heads|state)\.\d+\.bin|MANIFEST)(\.tmp)?$|^heads\.scratch\.tmp$")


def clean_directory(directory: Path, keep: set[str]) -> None:
    """Delete leftovers: files of ours (by name) that are neither the manifest nor named in
    `keep`. Files we did not name are never touched."""
    for entry in os.scandir(directory):
        name = entry.name
        if entry.is_file() and OURS.match(name) and name != MANIFEST and name not in keep:
            os.unlink(entry.path)


def save_heads(path: Path, graph: hnswlib.Index) -> int:
    """The hnswlib graph (its own serialisation) inside our framed file; returns bytes."""
    scratch = path.parent / SCRATCH
    graph.save_index(str(scratch))
    try:
        return write_sections(path, HEADS_MAGIC, HEADS_VERSION, [scratch.read_bytes()])
    finally:
        scratch.unlink(missing_ok=True)


def load_heads(path: Path, space: str, dim: int) -> hnswlib.Index:
    """Load the graph; the payload is streamed to a scratch file (CRC checked on the way) so
    no graph-sized Python buffer outlives the load in the heap."""
    scratch = path.parent / SCRATCH
    with open(path, "rb") as src:
        check_header(src.read(HEADER.size), HEADS_MAGIC, HEADS_VERSION, path)
        length, crc, _ = SECTION.unpack(src.read(SECTION.size))
        seen, left = 0, length
        with open(scratch, "wb") as dst:
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise FormatError(f"{path}: torn head graph ({length - left}/{length})")
                seen = zlib.crc32(chunk, seen)
                dst.write(chunk)
                left -= len(chunk)
    try:
        if seen != crc:
            raise FormatError(f"{path}: CRC mismatch in head graph")
        graph = hnswlib.Index(space=space, dim=dim)
        graph.load_index(str(scratch))  # sized exactly; new heads grow it when needed
        return graph
    finally:
        scratch.unlink(missing_ok=True)


def save_state(
    path: Path,
    slot_version: npt.NDArray[np.uint8],
    table: BlockTable,
    tree: HeadTree,
    info: dict[str, Any],
    quant: bytes = b"",
) -> int:
    """Per-slot versions, block table and head tree as raw little-endian arrays."""
    sections = [
        json.dumps(info, sort_keys=True).encode(),
        slot_version.tobytes(),
        *table.to_arrays(),
        tree.parent.astype("<i4").tobytes(),
        tree.head.astype("<i4").tobytes(),
        tree.head_node.astype("<i4").tobytes(),
        quant,
    ]
    return write_sections(path, STATE_MAGIC, STATE_VERSION, sections)


def load_state(
    path: Path, dim: int, width: int
) -> tuple[npt.NDArray[np.uint8], BlockTable, HeadTree, dict[str, Any], bytes]:
    s = read_sections(path, STATE_MAGIC, STATE_VERSION)
    if len(s) != 9:
        raise FormatError(f"{path}: expected 9 sections, found {len(s)}")
    info: dict[str, Any] = json.loads(s[0])
    slot_version = np.frombuffer(s[1], dtype=np.uint8).copy()
    table = BlockTable.from_arrays(dim, s[2:5], width)
    tree = HeadTree(*(np.frombuffer(b, dtype="<i4").astype(np.int32) for b in s[5:8]))
    return slot_version, table, tree, info, s[8]
