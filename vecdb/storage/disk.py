"""Sizes of files on disk, for reports and space checks. Owns nothing else."""

from __future__ import annotations

import stat
from pathlib import Path


def du(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files under `path`. They differ for sparse
    files (a posting file's freed blocks are holes) and by block rounding; allocated bytes
    (st_blocks x 512) are what the disk actually gives up. A file removed while we look (a
    live index replaces and drops files) is skipped."""
    if not path.exists():
        return 0, 0
    apparent = allocated = 0
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
