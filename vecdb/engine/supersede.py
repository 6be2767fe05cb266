"""When a collection's first bulk build is not worth finishing.

Writes keep arriving while the first build runs. When as many again arrived as it is
building, their drain would rebuild everything right after (`REBUILD_SHARE`), so the
maintenance worker abandons the first build (once per collection, the buffer keeps every
write) and builds once from all of them. Decides only: the worker does the abandoning.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

from vecdb.engine.core import CollectionCore

log = logging.getLogger("vecdb.engine")
_SUPERSEDED: weakref.WeakSet[CollectionCore] = weakref.WeakSet()  # first build abandoned once


def superseded_check(coll: CollectionCore, building: int) -> Callable[[], bool] | None:
    """For a first build of `building` vectors: whether to abandon it (once per collection)
    because as many writes again arrived while it ran. Their drain would rebuild everything
    (REBUILD_SHARE) right after, so one build from all of them is cheaper: MiniLM's 390,000
    vectors arrived as a 175,000-vector first build (256 MiB) and a 390,000-vector rebuild.
    Only while everything fits `rebuild_max_bytes`; the buffer keeps every write (thawed)."""
    if coll.status.builds > 0 or coll in _SUPERSEDED:
        return None
    limit = coll.settings.rebuild_max_bytes / (4 * coll.cfg.dim)

    def check() -> bool:
        buf = coll.buffer
        arrived = 0 if buf is None else len(buf.active)
        if arrived < building or building + arrived > limit:
            return False
        _SUPERSEDED.add(coll)
        log.info("first build superseded", extra={"collection": coll.name, "vectors": building})
        return True

    return check
