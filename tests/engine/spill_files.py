"""What a spilling buffer leaves open: shared by the spill tests and the spill state machine."""

from __future__ import annotations

import os
from pathlib import Path


def unnamed_files(under: Path) -> list[str]:
    """This process's open unnamed (O_TMPFILE) files under `under` (each once, however many
    descriptors it has: a Python mmap keeps a duplicate of its file's)."""
    out: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the listing's own descriptor, closed meanwhile)
            continue
        if target.startswith(str(under)) and target.endswith("(deleted)"):
            out.add(target)
    return sorted(out)
