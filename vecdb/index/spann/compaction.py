"""Compaction of a SPANN posting file: rewrite live entries only, then switch files.

Appends, splits, clean-ups and removes leave dead bytes behind: replaced blocks, and stale or
removed entries inside live blocks. When `maintain` finds the dead fraction above
`compact_garbage`, every posting's live entries (read with CRC checks) are packed best-fit
into a new posting file generation, which is fsynced and then published by a checkpoint at
the last applied sequence (the engine's replay of later ops is idempotent), after which the old
file is deleted. A crash before that checkpoint leaves the old manifest and file in force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vecdb.index.spann.build import make_head_graph
from vecdb.index.spann.killpoints import kill_point
from vecdb.index.spann.postings import PAGE, DirectReader, PostingFile
from vecdb.index.spann.table import BlockTable
from vecdb.index.spann.update import read_live

if TYPE_CHECKING:
    from vecdb.index.spann.index import SpannIndex

GROUP = 4096  # postings packed together (best-fit works within a group)
REBUILD_DELETED = 0.2  # rebuild the head graph when deleted heads exceed this share


def garbage_fraction(idx: SpannIndex, live: npt.NDArray[np.int64]) -> float:
    """Dead share of the posting file: unreferenced blocks plus stale or removed entries."""
    entries = int(idx.table.post_entries.sum())
    stale = 1.0 - float(live.sum()) / entries if entries else 0.0
    data = max(1, idx.file.length - PAGE)
    return (data - idx.table.ref_bytes + stale * idx.table.ref_bytes) / data


def rebuild_heads(idx: SpannIndex) -> None:
    """Rebuild the head graph without its deleted heads once they are a large share of it
    (hnswlib keeps deleted nodes for routing; they cost memory and search time)."""
    graph = idx.heads()
    labels = np.flatnonzero(idx.tree.head_node[: idx.next_posting] >= 0)
    if len(labels) == 0 or graph.get_current_count() <= (1 + REBUILD_DELETED) * len(labels):
        return
    vecs = np.asarray(graph.get_items(labels), dtype=np.float32)
    idx.graph = make_head_graph(vecs, idx.metric, idx.params, idx.threads, labels)
    idx.heads_dirty = True


def compact(idx: SpannIndex) -> None:
    """Rewrite every posting's live entries into a fresh, packed file and switch to it."""
    # Pass 1: write the new generation
    old_file = idx.file
    idx.file_gen += 1
    new_file = PostingFile(
        idx.posting_path(idx.file_gen), idx.dim, width=idx.width, quant=old_file.quant
    )
    table = BlockTable(idx.dim, idx.width)
    table.ensure(idx.next_posting)
    heads = np.flatnonzero(idx.tree.head_node[: idx.next_posting] >= 0)
    for lo in range(0, len(heads), GROUP):
        parts = [(int(p), *read_live(idx, int(p))) for p in heads[lo : lo + GROUP]]
        parts = [(p, s, v) for p, s, v in parts if len(s)]
        blocks = [new_file.encode(p, s, idx.slot_version[s], v) for p, s, v in parts]
        for (p, s, _), off in zip(parts, new_file.write_packed(blocks), strict=True):
            table.push(p, int(off), len(s))
    new_file.sync()
    kill_point("compaction")
    # Pass 2: switch readers and tables to it; drop deleted heads from the graph
    if isinstance(idx.reader, DirectReader):
        idx.reader.close()
    idx.file, idx.table = new_file, table
    idx.reader = idx.open_reader()
    old_file.close()
    idx.counters["compactions"] += 1
    rebuild_heads(idx)
    # Pass 3: publish (the checkpoint deletes the old file)
    idx.checkpoint(idx.applied_seq)
