"""Per-call search statistics: what one `search(..., with_stats=True)` read.

Owns `Totals`, the collection's cumulative `SearchStats` (`CollectionCore.io`), whose `add`
also feeds the collector of the call running in the current context (a `ContextVar`, so
concurrent searches in other threads or tasks never mix), and `collect()`, which opens such a
collector around one call. Every search path already adds what it read to the collection's
totals in the calling thread (`reader.search_slots`, `tenant_search`), so per-call numbers
need no change there. `as_dict` is the public shape (`SearchResult.stats`, the wire's
`SearchStats`): the counters of `SearchStats` as integers plus the index's `extra` counters
(the tenant walk's `tenant_subtree`, `tenant_leaves`, `tenant_nodes`, `tenant_copy`, ...).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import fields

from vecdb.index.base import SearchStats

_SINK: ContextVar[SearchStats | None] = ContextVar("vecdb_search_stats", default=None)


_NUMBERS = tuple(f.name for f in fields(SearchStats) if f.name != "extra")


class Totals(SearchStats):
    """A collection's cumulative search statistics (see the module docstring)."""

    def add(self, other: SearchStats) -> None:
        # `SearchStats.add` with the field names listed once (every search adds here)
        for name in _NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.extra:
            extra = self.extra
            for key, value in other.extra.items():
                extra[key] = extra.get(key, 0.0) + value
        sink = _SINK.get()
        if sink is not None and sink is not self:
            sink.add(other)


class collect:  # noqa: N801 - used as a function: `with query_stats.collect() as sink`
    """A fresh collector for the searches run inside the `with` block in this context (a
    plain class rather than a generator context manager: it wraps every search with stats)."""

    __slots__ = ("sink", "_token")

    def __init__(self) -> None:
        self.sink = SearchStats()

    def __enter__(self) -> SearchStats:
        self._token = _SINK.set(self.sink)
        return self.sink

    def __exit__(self, *exc: object) -> None:
        _SINK.reset(self._token)


def as_dict(stats: SearchStats) -> dict[str, float]:
    """The counters (integers) and the extra counters of one call."""
    out: dict[str, float] = {name: int(getattr(stats, name)) for name in SearchStats.COUNTERS}
    out.update({k: float(v) for k, v in sorted(stats.extra.items())})
    return out
