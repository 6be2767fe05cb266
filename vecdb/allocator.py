"""Giving freed memory back to the operating system after large index jobs.

glibc keeps freed heap memory in its arenas and, after a large block is freed, raises its
mmap threshold so that later blocks of that size come from the heap too; a bulk build then
leaves hundreds of MiB of free-but-resident memory behind (seen: +306 MiB after building
GloVe-50, kept after the database was closed). `tune_allocator` pins the mmap threshold
(blocks above it are mapped and unmapped, so they are returned when freed) and
`release_free_memory` trims every arena. Both are no-ops where glibc is not the allocator.

`tune_allocator` also caps glibc at one arena (M_ARENA_MAX). By default every thread that
finds the arena it uses locked gets a new one (up to 8 per core): the maintenance worker,
RocksDB's flush threads, numba and hnswlib workers each left freed-but-fragmented memory in
their own 64 MiB heap after a bulk build, and how much depended on thread timing (70,000 x
1024: 44.6-55.2 MiB after the build, 12-16 MiB kept with the database closed; with one arena
40.1-41.3 and 8.3-11.4 MiB, build time unchanged within the machine's noise). Python holds
the GIL around most allocations, so one arena costs little contention. Arenas that threads
already use are kept; the cap applies to arenas created after the first database opens.

Pinning the mmap threshold also stops glibc from raising its trim threshold with it, which
then stays at 128 KiB: every free that leaves more than that at the top of the heap hands
the pages back, and the next call faults them in again. A server answering 1,000 x 384
batches spent ~5 ms of a ~70 ms call doing so (the request, the checked queries, the
results and the scan's buffers of each call). `tune_allocator` sets the trim threshold to
`TRIM_THRESHOLD` (16 MiB): at most that much free memory stays at the top of the heap
between calls, and `release_free_memory` after large jobs still returns all of it.

A leaf module (it imports nothing from vecdb): the engine takes the settings when a database
opens, and the index's build and drain children take them at their start, so a child's
temporaries go back to the system as the parent's do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024  # blocks of at least this many bytes get their own mapping
ARENA_MAX = 1  # malloc arenas of the whole process (see the module docstring)
TRIM_THRESHOLD = 16 * 1024 * 1024  # free bytes at the heap's top kept for the next call


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
    """Pin glibc's mmap and trim thresholds and cap its arenas (once per process); True if
    all three were set."""
    lib = _libc()
    if lib is None:
        return False
    threshold = lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim = lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    arenas = lib.mallopt(M_ARENA_MAX, ARENA_MAX) == 1
    return bool(threshold and trim and arenas)


def release_free_memory() -> None:
    """Return free heap memory of every arena to the operating system."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
