"""Index statistics of a SPANN index: counts, posting sizes, replicas, memory, disk, locks.

Computed on demand for `stats` / `vecdb inspect`: a posting file up to
`compaction.WALK_BYTES` has its live entries counted on each call (every posting's slots and
versions through an mmap, so it is not for hot paths); a larger one reports the background
worker's last count. The memory figure is an estimate of what the index keeps in anonymous
memory; the page cache holding the posting file is not counted.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import FormatError
from vecdb.index.params import BITS, SearchParams, rerank_candidates
from vecdb.index.spann import compaction
from vecdb.index.spann.postings import MmapReader
from vecdb.index.spann.state import SpannState
from vecdb.index.spann.vectors import store_stats

I64 = npt.NDArray[np.int64]


def tree_bytes(st: SpannState) -> int:
    t = st.tree
    arrays = (t.parent, t.first_child, t.next_sibling, t.level, t.count, t.radius, t.posting)
    return sum(a.nbytes for a in arrays) + t.crow.nbytes + t.centroids.nbytes + t.primary.nbytes


def allocated_bytes(directory: Any) -> int:
    """Bytes the files of `directory` take on disk; a file the worker replaces or removes
    while we look (a checkpoint's temporary, an old generation) is skipped, not an error."""
    total = 0
    for entry in os.scandir(directory):
        try:
            if entry.is_file():
                total += entry.stat().st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def posting_counts(st: SpannState) -> tuple[I64, str]:
    """Live entries per posting id for `index_stats`, and how they were had: "counted"
    (every block walked now, under the read lock, so the worker cannot publish a new table
    meanwhile) when the posting file is at most `compaction.WALK_BYTES`; above it,
    "last_count" (the maintenance worker's last whole count, `SpannState.live_seen`, with
    the entries appended since; slots removed or moved since are not seen until the next
    count, `compaction.known`) or, before any count in this process, "entries" (the block
    table's entry counts: stale and removed entries included, an upper bound). Counting a
    large index on every call reads the whole file once it is cold."""
    if st.file.length <= compaction.WALK_BYTES:
        with st.lock.read():
            return compaction.counts(st, keep=False), "counted"
    seen = st.live_seen
    entries = compaction.entries(st)
    entries[~st.leaf_mask(len(entries))] = 0  # postings merged away or split keep no live entries
    if seen is not None and seen.table is st.table:
        return seen.estimate(entries), "last_count"
    return entries, "entries"


NO_REQUEST = SearchParams.parse(None)  # a search that names no parameter


def rerank_default(st: SpannState) -> dict[str, Any]:
    """A "bits" index's `rerank_k` when a request gives none, and the agreement with the
    reference its calibration reached (`calibrate`); nothing for other indexes."""
    if not st.is_bits:
        return {}
    calibrated = st.rerank_k > 0
    return {
        "rerank_k_default": rerank_candidates(NO_REQUEST, BITS, st.rerank_k),
        "rerank_k_calibrated": calibrated,
        "rerank_k_calibration": round(st.rerank_k_agreement, 4) if calibrated else None,
    }


def index_stats(st: SpannState) -> dict[str, Any]:
    """Heads, postings, mean/max live posting size, replicas per vector, resident memory
    estimate, bytes on disk (allocated: files grow sparsely), reader, update counters and the
    longest write-locked step. Called from any thread; posting sizes as `posting_counts`
    says."""
    live, how = posting_counts(st)
    used = live[live > 0]
    g = st.graph
    head_bytes = 0 if g is None else g.nbytes()
    disk = allocated_bytes(st.directory)
    return {
        "kind": "spann",
        "spec": st.params.spec(),
        "vectors": st.n_live,
        "heads": st.live_heads,
        "head_vectors": None if g is None else g.dtype,  # the graph's form (its file's)
        "head_graph_bytes": head_bytes,
        "tree_nodes": len(st.tree),
        "postings": len(used),
        "posting_size_mean": float(used.mean()) if len(used) else 0.0,
        "posting_size_max": int(used.max()) if len(used) else 0,
        "posting_limit": st.limit,
        "replicas_per_vector": float(live.sum()) / max(1, st.n_live),
        "posting_counts": how,  # how the three figures above were counted (`posting_counts`)
        "resident_bytes_estimate": head_bytes
        + st.slot_version.nbytes
        + st.table.memory_bytes()
        + tree_bytes(st),
        "posting_file_bytes": st.file.length,
        "referenced_bytes": st.table.ref_bytes,
        "freed_bytes_awaiting_checkpoint": st.file.space.awaiting_checkpoint,
        "space": dataclasses.asdict(st.file.space.stats()),
        "resident_space_map_bytes": st.file.space.stats().map_bytes,
        "bytes_on_disk": disk,
        "io": "mmap" if isinstance(st.reader, MmapReader) else "direct",
        **store_stats(st),  # the rerank store (`vectors.store_stats`)
        **rerank_default(st),
        "longest_write_lock_s": st.lock.longest_write_s,
        "longest_write_lock_phase": st.lock.longest_write_phase,
        **st.counters,
    }


def verify(st: SpannState) -> dict[str, int]:
    """Read every referenced block with its CRC check (for `vecdb inspect`); raises
    `FormatError` naming the file and offset of the first torn or corrupt block."""
    blocks = entries = 0
    for p in range(st.next_posting):
        for off, count in st.table.chain(p):
            posting, slots, _, _ = st.file.read_block(off)
            if posting != p or len(slots) != count:
                raise FormatError(f"{st.file.path}: block at {off} is not posting {p}'s")
            blocks, entries = blocks + 1, entries + count
    return {"blocks": blocks, "entries": entries}
