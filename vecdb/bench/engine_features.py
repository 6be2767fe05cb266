"""The benchmark's calls to SDK features the engine is still gaining, kept in one place.

Owns how the benchmark asks for a finished build (`optimize(name, wait=True)`) and how it
reads the index state (points indexed vs buffered, build state) from `stats`, whatever keys
the engine reports. When the engine's surface changes, only this module should need to
change. Uses the public SDK only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keys the engine may use in `stats(name)` (top level or under "index") for the index state.
INDEXED_KEYS = ("indexed", "points_indexed", "vectors")
BUFFERED_KEYS = ("buffered", "points_buffered")
STATE_KEYS = ("state", "index_state", "build_state")


def optimize_and_wait(client: Any, name: str) -> None:
    """Ask for a full build/maintenance of `name` and return once it is done."""
    client.optimize(name, wait=True)


def index_state(client: Any, name: str) -> dict[str, Any]:
    """{"indexed", "buffered", "state"} as far as `stats` reports them (None where absent)."""
    try:
        stats = client.stats(name)
    except Exception:  # a stats failure must not fail a benchmark
        return {"indexed": None, "buffered": None, "state": None}
    index = stats.get("index") if isinstance(stats.get("index"), Mapping) else {}
    return {
        "indexed": _first(stats, index, INDEXED_KEYS),
        "buffered": _first(stats, index, BUFFERED_KEYS),
        "state": _first(stats, index, STATE_KEYS),
    }


def _first(top: Mapping[str, Any], index: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for source in (top, index):
        for key in keys:
            if source.get(key) is not None:
                return source[key]
    return None
