"""The multi-vector index as the engine's `VectorIndex` of a kind="multivector" collection.

This module owns the seam between the engine's generic collection machinery (slots, removal,
checkpoints, stats, close) and `MultiVectorIndex`. Documents enter through `add_documents`
(the engine's document writer and recovery); the generic vector calls are refused where a
document collection has no meaning: a dense `search` is an `InvalidArgument` pointing at
search_documents, and `add`/`build` take each vector as a one-token document. No algorithm
code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument
from vecdb.index.base import IndexResult, Progress, Slots, Vectors, Visible
from vecdb.index.multivector.index import MultiVectorIndex
from vecdb.index.multivector.params import MVBuildParams

F32 = npt.NDArray[np.float32]


class DocumentIndex:
    """A `MultiVectorIndex` behind the `VectorIndex` protocol."""

    kind = "multivector"
    persistent = True
    max_abs_component: float | None = None

    def __init__(self, mv: MultiVectorIndex) -> None:
        self.mv = mv  # the index itself

    def add_documents(
        self, slots: Slots, tokens: F32, offsets: npt.NDArray[np.int64], weights: F32 | None
    ) -> None:
        """Insert documents (prepared tokens, doc-major; per-token weights or None)."""
        self.mv.add(slots, tokens, offsets, weights)

    def build(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        self.mv.build(slots, vectors, np.arange(len(slots) + 1), None, progress)

    def add(self, slots: Slots, vectors: Vectors, progress: Progress | None = None) -> None:
        self.mv.add(slots, vectors, np.arange(len(slots) + 1))

    def remove(self, slots: Slots) -> None:
        self.mv.remove(slots)

    def search(
        self,
        queries: Vectors,
        k: int,
        params: Mapping[str, Any] | None = None,
        visible: Visible | None = None,
    ) -> IndexResult:
        raise InvalidArgument(
            "this collection holds multi-vector documents: use search_documents",
            field="collection",
            reason="WRONG_KIND",
        )

    def __len__(self) -> int:
        return len(self.mv)

    def maintain(self, budget_s: float | None = None) -> bool:
        return False  # training is its own worker job (engine.doc_jobs)

    def unstuck(self) -> bool:
        return False

    def checkpoint(self, applied_seq: int) -> None:
        self.mv.checkpoint(applied_seq)

    def stats(self) -> dict[str, Any]:
        return self.mv.stats()

    def close(self) -> None:
        self.mv.close()


def open_multivector(
    dim: int, metric: str, params: Mapping[str, Any], directory: Path
) -> tuple[DocumentIndex, int]:
    """Create or open the index in `directory`; returns it and its checkpointed sequence."""
    mv = MultiVectorIndex(dim, directory, params, metric)
    return DocumentIndex(mv), mv.applied_seq


def check_params(params: Mapping[str, Any]) -> None:
    MVBuildParams.parse(params)
