"""SPANN: the disk-hybrid index (heads in RAM, postings on disk, SPFresh-style updates).

`open_spann` is the engine's factory for `index="spann"`: it creates or opens the index in its
own directory and returns it with the last durable applied sequence. Everything else in this
package is private to the index.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecdb.errors import InvalidArgument
from vecdb.index.spann.index import SpannIndex


def open_spann(
    dim: int, metric: str, params: Mapping[str, Any] | None, directory: Path | None
) -> tuple[SpannIndex, int]:
    """Create or open a SPANN index in `directory`; return it and its applied sequence."""
    if directory is None:
        raise InvalidArgument("the spann index needs a directory")
    return SpannIndex.open(dim, metric, dict(params or {}), Path(directory))


__all__ = ["SpannIndex", "open_spann"]
