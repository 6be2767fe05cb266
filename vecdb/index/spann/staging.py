"""A bulk build's input written once, where its child process reads it.

A build in a child (`spann.child`) reads its vectors from a file. Written from an array the
engine had just filled (the buffer's rows, or the stored vectors read back for a rebuild),
that is a second full copy: 2.3 s for the 1.2 GB of a 200,000 x 1,536 rebuild on this
machine, with the array's anonymous memory held meanwhile. Instead the engine asks the index
for its input array first (`SpannIndex.build_input`) and fills that: `staged_rows` maps an
unnamed file (O_TMPFILE) in the index directory, so the rows go straight into page cache
pages the child maps through the inherited descriptor, and the parent holds file pages, not
anonymous memory, while the child builds.

An unnamed file has no name to leave behind: its blocks go back when the last descriptor or
mapping is gone, however the process ends. Its blocks are reserved when it is made
(`posix_fallocate`), so filling it cannot meet a full disk (a write fault into a shared
mapping that finds no block kills the process with SIGBUS). A filesystem without unnamed
files, or without room, gets None and the caller allocates as before.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# The live staged mappings: the address of each one's first byte -> (descriptor, bytes)
_LIVE: dict[int, tuple[int, int]] = {}
_LOCK = threading.Lock()


def staged_rows(directory: Path, rows: int, dim: int) -> F32 | None:
    """A writable (rows, dim) float32 array backed by an unnamed file in `directory`, its
    blocks reserved; None when that cannot be made (no unnamed files on this filesystem,
    no room, nothing to hold)."""
    nbytes = 4 * rows * dim
    if nbytes == 0 or not hasattr(os, "O_TMPFILE"):
        return None
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:
        return None
    try:
        os.posix_fallocate(fd, 0, nbytes)
        # its pages faulted in by one call (MAP_POPULATE), not one fault per page filled
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(fd, nbytes, flags, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError:
        os.close(fd)
        return None
    out: F32 = np.frombuffer(mm, np.float32).reshape(rows, dim)
    addr = int(out.ctypes.data)
    with _LOCK:
        _LIVE[addr] = (fd, nbytes)
    weakref.finalize(mm, _forget, addr, fd)  # the last view gone: the file goes
    return out


def _forget(addr: int, fd: int) -> None:
    with _LOCK:
        _LIVE.pop(addr, None)
    os.close(fd)


def staged_fd(vectors: F32) -> int | None:
    """The descriptor of the staged file holding `vectors` as its first rows (a C-contiguous
    float32 view starting at a staged array's first byte), else None."""
    if vectors.dtype != np.float32 or not vectors.flags.c_contiguous or vectors.size == 0:
        return None
    with _LOCK:
        entry = _LIVE.get(int(vectors.ctypes.data))
    if entry is None or vectors.nbytes > entry[1]:
        return None
    return entry[0]


def open_staged(fd: int, rows: int, dim: int) -> F32:
    """(Child) the first `rows` rows of the staged file inherited as descriptor `fd`, mapped
    writable as the kernels were compiled for (a build never writes its input)."""
    return np.asarray(np.memmap(f"/proc/self/fd/{fd}", np.float32, "r+", shape=(rows, dim)))
