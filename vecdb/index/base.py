"""The contract between the engine and an index kind.

The engine gives every stored vector a fresh int64 *slot* (an upsert of an existing id gets a
new slot; the old one is removed). Indexes store (slot, vector) pairs and answer top-k in
slots. Vectors arrive already prepared for the metric: for "cosine" they are L2-normalised and
the index computes 1 - dot. Smaller distance is better for every metric.

Durability: the engine's RocksDB op log is the truth. An index with files persists its state in
`checkpoint(seq)` and reports the last checkpointed sequence from `open`; the engine replays
later operations into it. An in-memory index (flat) is rebuilt from stored vectors on open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Slots = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
Progress = Callable[[int], None]  # called with the number of vectors just processed


class VectorIndex(Protocol):
    """What every index kind implements. Methods are called by one writer thread at a time;
    `search` may run concurrently with itself but the engine serialises it against writes."""

    kind: str  # "flat" | "spann"
    persistent: bool  # True if the index keeps its own files (then checkpoint/open matter)

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Replace the whole content with these vectors (bulk build)."""

    def add(self, slots: Slots, vectors: Vectors) -> None:
        """Insert new slots (never seen before by this index)."""

    def remove(self, slots: Slots) -> None:
        """Remove slots; unknown slots are ignored."""

    def search(
        self, queries: Vectors, k: int, params: Mapping[str, Any] | None = None
    ) -> tuple[Slots, npt.NDArray[np.float32]]:
        """Top-k slots and distances per query, shapes (nq, k), padded with -1 / +inf."""

    def __len__(self) -> int:
        """Number of live slots."""

    # Optional: `max_abs_component: float | None`, the largest component magnitude the index
    # can store (a float16 posting file, say). The engine rejects larger vectors up front.

    def maintain(self) -> None:
        """Run pending background work now (splits, merges, compaction)."""

    def checkpoint(self, applied_seq: int) -> None:
        """Make everything applied so far durable and record `applied_seq` with it."""

    def stats(self) -> dict[str, Any]:
        """Numbers for `Stats` / inspect (sizes, counts, memory estimates)."""

    def close(self) -> None:
        """Release files and threads."""


class IndexFactory(Protocol):
    """Creates or opens an index in `directory` (None for a purely in-memory index)."""

    def __call__(
        self,
        dim: int,
        metric: str,
        params: Mapping[str, Any],
        directory: Path | None,
    ) -> tuple[VectorIndex, int]:
        """Return the index and the last durable applied sequence (0 if new or in-memory)."""
