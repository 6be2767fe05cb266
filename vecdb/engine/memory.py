"""Giving freed memory back to the operating system after large index jobs.

glibc keeps freed heap memory in its arenas and, after a large block is freed, raises its
mmap threshold so that later blocks of that size come from the heap too; a bulk build then
leaves hundreds of MiB of free-but-resident memory behind (seen: +306 MiB after building
GloVe-50, kept after the database was closed). `tune_allocator` pins the mmap threshold
(blocks above it are mapped and unmapped, so they are returned when freed) and
`release_free_memory` trims every arena. Both are no-ops where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
MMAP_THRESHOLD = 256 * 1024  # blocks of at least this many bytes get their own mapping


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim  # noqa: B018 - probe: absent outside glibc
        lib.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return lib


@functools.cache
def tune_allocator() -> bool:
    """Pin glibc's mmap threshold (once per process); True if it was set."""
    lib = _libc()
    return bool(lib is not None and lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)


def release_free_memory() -> None:
    """Return free heap memory of every arena to the operating system."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
