"""TEMPORARY: the pre-contract SpannIndex behind the new contract, with one coarse lock.

Lets the engine's background worker run against SPANN until the reworked index lands; to be
deleted then. Every call takes one readers-writer lock (searches share it), removes are
remembered so that a later add cannot bring a slot back (remove wins).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.index.base import IndexResult, Progress, SearchStats, Slots, Vectors, Visible
from vecdb.index.spann.index import SpannIndex


class ShimSpann:
    kind = "spann"
    persistent = True

    def __init__(self, inner: SpannIndex) -> None:
        self.inner = inner
        self.lock = threading.RLock()
        self.max_abs_component = inner.max_abs_component
        self.removed: set[int] = set()

    def _keep(self, slots: Slots, vectors: Vectors) -> tuple[Slots, Vectors]:
        if not self.removed:
            return slots, vectors
        ok = ~np.isin(slots, np.fromiter(self.removed, np.int64))
        return slots[ok], vectors[ok]

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        with self.lock:
            self.inner.build(*self._keep(slots, vectors))

    def add(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        with self.lock:
            self.inner.add(*self._keep(slots, vectors))

    def remove(self, slots: Slots) -> None:
        with self.lock:
            self.removed.update(np.asarray(slots, np.int64).tolist())
            self.inner.remove(slots)

    def search(
        self,
        queries: Vectors,
        k: int,
        params: Mapping[str, Any] | None = None,
        visible: Visible | None = None,
    ) -> IndexResult:
        with self.lock:
            slots, dist = self.inner.search(queries, k, params)
            st = self.inner.last_search_stats()
        stats = SearchStats()
        for c in SearchStats.COUNTERS:
            setattr(stats, c, int(st.get(c, 0)))
        if visible is not None:
            ok = visible.contains(slots)
            slots, dist = np.where(ok, slots, -1), np.where(ok, dist, np.inf).astype(np.float32)
        return IndexResult(slots, dist, stats)

    def __len__(self) -> int:
        return len(self.inner)

    def maintain(self, budget_s: float | None = None) -> bool:
        with self.lock:
            self.inner.maintain()
        return False

    def checkpoint(self, applied_seq: int) -> None:
        with self.lock:
            self.inner.checkpoint(applied_seq)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return self.inner.stats()

    def verify(self) -> dict[str, int]:
        return self.inner.verify()

    def close(self) -> None:
        with self.lock:
            self.inner.close()


def open_shim(
    dim: int, metric: str, params: dict[str, Any], directory: Path
) -> tuple[ShimSpann, int]:
    inner, applied = SpannIndex.open(dim, metric, params, directory)
    return ShimSpann(inner), applied
