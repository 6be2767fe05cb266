"""The index kinds a dense collection can use, their defaults and how to open them.

The one list of index kinds: the engine, the SDK's checks and the docs read it from here. Each
kind names its opener (imported lazily: SPANN pulls in hnswlib), whether it keeps files and
whether writes reach it through the engine's write buffer, and a parameter check that touches
no files. Must not hold algorithm code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdb.errors import InvalidArgument
from vecdb.index.base import VectorIndex
from vecdb.types import IndexKind

DEFAULT_KIND = IndexKind.SPANN  # what create_collection uses when no index is named


@dataclass(frozen=True)
class KindSpec:
    """One index kind."""

    kind: IndexKind  # its name
    persistent: bool  # keeps its own files: checkpoints, op-log replay after a crash
    buffered: bool  # writes go to the engine's exact write buffer, applied in the background


KINDS: dict[str, KindSpec] = {
    IndexKind.FLAT.value: KindSpec(IndexKind.FLAT, persistent=False, buffered=False),
    IndexKind.SPANN.value: KindSpec(IndexKind.SPANN, persistent=True, buffered=True),
    # kind="multivector" collections only (documents; see vecdb.index.multivector.adapter)
    IndexKind.MULTIVECTOR.value: KindSpec(IndexKind.MULTIVECTOR, persistent=True, buffered=False),
}


def names() -> tuple[str, ...]:
    """Every kind's name, in a stable order (for messages)."""
    return tuple(KINDS)


def spec(kind: object) -> KindSpec:
    """The kind named `kind`; `InvalidArgument` listing the known kinds otherwise."""
    found = KINDS.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise InvalidArgument(
            f"index {kind!r} is unknown (expected one of {', '.join(KINDS)}; "
            f"'multivector' goes with kind='multivector')",
            field="index",
            reason="BAD_INDEX",
        )
    return found


def check_params(kind: str, params: Mapping[str, Any]) -> None:
    """Reject bad build parameters, naming them; touches no files."""
    if spec(kind).kind is IndexKind.MULTIVECTOR:
        from vecdb.index.multivector.adapter import check_params as check_mv

        return check_mv(params)
    if spec(kind).kind is IndexKind.FLAT:
        if params:
            raise InvalidArgument(f"the flat index takes no index_params, got {sorted(params)}")
        return
    from vecdb.index.params import BuildParams

    BuildParams.parse(params)


def open_index(
    kind: str, dim: int, metric: str, params: Mapping[str, Any], directory: Path
) -> tuple[VectorIndex, int]:
    """Create or open the index of `kind` (files under `directory` if it keeps any); returns
    it and its last durable applied sequence (0 if new or in-memory)."""
    if spec(kind).kind is IndexKind.MULTIVECTOR:
        from vecdb.index.multivector.adapter import open_multivector

        return open_multivector(dim, metric, params, directory)
    if spec(kind).kind is IndexKind.FLAT:
        from vecdb.index.flat import open_flat

        return open_flat(dim, metric, params, None)
    from vecdb.index.spann import open_spann  # heavy imports (hnswlib) only when used

    directory.mkdir(parents=True, exist_ok=True)
    index, applied = open_spann(dim, metric, params, directory)
    return index, applied


def durable_seq(kind: str, directory: Path) -> int | None:
    """The sequence the index in `directory` last checkpointed, read without opening it
    (None for an in-memory kind or an index never checkpointed); for read-only tools."""
    if not spec(kind).persistent:
        return None
    if spec(kind).kind is IndexKind.MULTIVECTOR:
        from vecdb.index.multivector.persist import applied_seq

        return applied_seq(directory)
    from vecdb.index.spann.persist import read_manifest

    manifest = read_manifest(directory) if directory.is_dir() else None
    return None if manifest is None else int(manifest["applied_seq"])
