"""Free space on a file system: the one probe every layer asks (`storage.faults` for the
writes' reserve, `index.room` for index jobs, the engine's snapshots and rebuild rule).
Imports nothing from vecdb."""

from __future__ import annotations

import os
from pathlib import Path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of `path` (or of its
    nearest existing parent); OSError if the file system cannot say."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return int(st.f_bavail) * int(st.f_frsize)
