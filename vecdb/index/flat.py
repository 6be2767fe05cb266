"""The flat index: exact search over vectors held in memory.

Owns a row-major float32 matrix of live and dead rows, the slot of each row, and a map from
slot to row. Search is an exact blocked scan with the numba kernels. Nothing is persisted: the
engine rebuilds it from stored vectors on open. Also serves as the engine's write buffer in
front of disk indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.index.base import Progress, Slots, Vectors
from vecdb.kernels.scan import exact_topk

_MIN_CAPACITY = 1024
_COMPACT_DEAD_FRACTION = 0.5  # rewrite the matrix once half of its rows are dead


class FlatIndex:
    """Exact search; add is an append, remove marks the row dead."""

    kind = "flat"
    persistent = False

    def __init__(self, dim: int, metric: str) -> None:
        self.dim = dim  # vector dimension
        self.metric = metric  # "l2" | "ip" | "cosine" (cosine rows are unit vectors)
        self._vectors = np.zeros((0, dim), np.float32)  # rows, capacity >= _n
        self._slots = np.zeros(0, np.int64)  # slot of each row
        self._valid = np.zeros(0, np.bool_)  # row is live
        self._n = 0  # rows in use (live + dead)
        self._live = 0  # live rows
        self._row_of = np.zeros(0, np.int64)  # slot -> row of a live slot, -1 if none

    # -- build / add ---------------------------------------------------------------------

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        """Adopt `vectors` as the matrix (no copy if it is C-contiguous float32); the caller
        must not modify it afterwards."""
        n = len(slots)
        if vectors.shape != (n, self.dim):
            raise InvalidArgument(f"expected ({n}, {self.dim}) vectors, got {vectors.shape}")
        self._vectors = np.ascontiguousarray(vectors, np.float32)
        self._slots = np.array(slots, np.int64)
        self._valid = np.ones(n, np.bool_)
        self._n = self._live = n
        self._row_of = np.full(int(slots.max()) + 1 if n else 0, -1, np.int64)
        self._row_of[self._slots] = np.arange(n, dtype=np.int64)
        if progress is not None:
            progress(len(slots))

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= self._vectors.shape[0]:
            return
        cap = max(_MIN_CAPACITY, need, 2 * self._vectors.shape[0])
        vectors = np.zeros((cap, self.dim), np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        slots = np.full(cap, -1, np.int64)
        slots[: self._n] = self._slots[: self._n]
        valid = np.zeros(cap, np.bool_)
        valid[: self._n] = self._valid[: self._n]
        self._vectors, self._slots, self._valid = vectors, slots, valid

    def add(self, slots: Slots, vectors: Vectors) -> None:
        n = len(slots)
        if n == 0:
            return
        if vectors.shape != (n, self.dim):
            raise InvalidArgument(f"expected ({n}, {self.dim}) vectors, got {vectors.shape}")
        self.remove(slots)  # re-adding a slot replaces it
        self._reserve(n)
        lo, hi = self._n, self._n + n
        self._vectors[lo:hi] = vectors
        self._slots[lo:hi] = slots
        self._valid[lo:hi] = True
        top = int(slots.max()) + 1
        if top > self._row_of.shape[0]:
            grown = np.full(max(top, 2 * self._row_of.shape[0]), -1, np.int64)
            grown[: self._row_of.shape[0]] = self._row_of
            self._row_of = grown
        self._row_of[slots] = np.arange(lo, hi, dtype=np.int64)
        self._n = hi
        self._live += n

    # -- search --------------------------------------------------------------------------

    def search(
        self, queries: Vectors, k: int, params: Mapping[str, Any] | None = None
    ) -> tuple[Slots, npt.NDArray[np.float32]]:
        if params:
            raise InvalidArgument(f"the flat index takes no search params, got {sorted(params)}")
        if self._live == 0:
            nq = queries.shape[0]
            return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
        rows, dist = exact_topk(
            queries, self._vectors[: self._n], self.metric, k, valid=self._valid[: self._n]
        )
        slots = np.where(rows >= 0, self._slots[np.maximum(rows, 0)], -1)
        return slots.astype(np.int64), dist

    def live(self) -> tuple[Slots, Vectors]:
        """Every live slot and its vector, in insertion order."""
        mask = self._valid[: self._n]
        return self._slots[: self._n][mask].copy(), self._vectors[: self._n][mask].copy()

    # -- remove --------------------------------------------------------------------------

    def remove(self, slots: Slots) -> None:
        known = slots[(slots >= 0) & (slots < self._row_of.shape[0])]
        rows = self._row_of[known]
        rows = np.unique(rows[rows >= 0])
        if rows.size:
            self._valid[rows] = False
            self._row_of[self._slots[rows]] = -1
            self._live -= int(rows.size)
        if self._n >= _MIN_CAPACITY and self._live < (1 - _COMPACT_DEAD_FRACTION) * self._n:
            self._compact()

    def _compact(self) -> None:
        slots, vectors = self.live()
        self.build(slots, vectors)

    def __len__(self) -> int:
        return self._live

    # -- lifecycle -----------------------------------------------------------------------

    def maintain(self) -> None:
        # Drop dead rows and the growth slack of appends (capacity back to the live count).
        if self._live < self._n or self._vectors.shape[0] > self._n:
            self._compact()

    def checkpoint(self, applied_seq: int) -> None:
        """Nothing to persist: the engine rebuilds this index from stored vectors."""

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vectors": self._live,
            "rows": self._n,
            "resident_bytes": int(
                self._vectors.nbytes + self._slots.nbytes + self._valid.nbytes + self._row_of.nbytes
            ),
        }

    def close(self) -> None:
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._row_of = np.zeros(0, np.int64)


def open_flat(
    dim: int, metric: str, params: Mapping[str, Any], directory: Path | None
) -> tuple[FlatIndex, int]:
    if params:
        raise InvalidArgument(f"the flat index takes no index_params, got {sorted(params)}")
    return FlatIndex(dim, metric), 0
