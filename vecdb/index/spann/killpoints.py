"""Named kill points for crash tests: `VECDB_KILL_AT="split:3"` SIGKILLs the process at the
third time the "split" point is reached (also merge, compaction, checkpoint). Several points
may be given comma-separated. Costs one dict lookup when the variable is unset; owns nothing
else.
"""

from __future__ import annotations

import os
import signal

ENV = "VECDB_KILL_AT"
_seen: dict[str, int] = {}


def _targets() -> dict[str, int]:
    out: dict[str, int] = {}
    for item in os.environ.get(ENV, "").split(","):
        name, _, nth = item.strip().partition(":")
        if name:
            out[name] = int(nth or 1)
    return out


def kill_point(name: str) -> None:
    """Count one occurrence of `name`; SIGKILL this process at the configured occurrence."""
    if ENV not in os.environ:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _targets().get(name) == _seen[name]:
        os.kill(os.getpid(), signal.SIGKILL)
