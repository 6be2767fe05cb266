"""A file-layer fault injector for the index's files (installed as `framing.faults`).

Every pwrite and fsync of the SPANN index's files passes through it. Per seed it can write
only part of a buffer (the caller must continue), fail a write with EIO or ENOSPC, fail an
fsync with EIO, and remember every write not yet fsynced, so that `power_cut` can, after
the process closed the files, keep, revert or fill with garbage each 4 KiB sector of those
writes (SQLite's crash VFS / LevelDB's fault-injection model): what a power cut may leave.
"""

from __future__ import annotations

import errno
import os
import random
from dataclasses import dataclass, field

SECTOR = 4096


@dataclass
class Pending:
    path: str
    offset: int
    old: bytes  # what the bytes were before the write (zeros past the old end)
    size: int


@dataclass
class Injector:
    rng: random.Random
    p_short: float = 0.0  # a write writes only part of its buffer
    p_eio: float = 0.0  # a write fails with EIO
    p_enospc: float = 0.0  # a write fails with ENOSPC
    p_fsync: float = 0.0  # an fsync fails with EIO
    writes: int = 0
    failures: int = 0
    short: int = 0
    unsynced: dict[int, list[Pending]] = field(default_factory=dict)

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        r = self.rng.random()
        if r < self.p_eio:
            self.failures += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        if r < self.p_eio + self.p_enospc:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = len(data)
        if n > 1 and self.rng.random() < self.p_short:
            n = self.rng.randrange(1, n)
            self.short += 1
        try:
            old = os.pread(fd, n, offset)
        except OSError:  # opened write-only (a tmp file, fsynced before it is published)
            old = b""
        old += bytes(n - len(old))
        path = os.readlink(f"/proc/self/fd/{fd}")
        self.unsynced.setdefault(fd, []).append(Pending(path, offset, old, n))
        self.writes += 1
        return os.pwrite(fd, data[:n], offset)

    def fsync(self, fd: int) -> None:
        if self.rng.random() < self.p_fsync:
            self.failures += 1
            # Like Linux after a failed writeback: the dirty pages may be gone for good.
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)
        self.unsynced.pop(fd, None)

    def power_cut(self) -> dict[str, int]:
        """Apply what a power cut may do to every write never fsynced (call after the
        files are closed); returns sector counts by fate."""
        fates = {"kept": 0, "reverted": 0, "garbage": 0}
        pending = [p for ps in self.unsynced.values() for p in ps]
        for p in reversed(pending):
            if not os.path.exists(p.path):
                continue  # a file the index deleted since (an older generation)
            with open(p.path, "r+b") as f:
                pos = p.offset
                while pos < p.offset + p.size:
                    end = min(p.offset + p.size, (pos // SECTOR + 1) * SECTOR)
                    fate = self.rng.choice(("kept", "reverted", "garbage"))
                    fates[fate] += 1
                    if fate != "kept":
                        f.seek(pos)
                        lo, hi = pos - p.offset, end - p.offset
                        f.write(p.old[lo:hi] if fate == "reverted" else self.rng.randbytes(hi - lo))
                    pos = end
        self.unsynced.clear()
        return fates
