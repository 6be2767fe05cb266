"""The C library through ctypes, loaded once, for the system calls the SPANN files make that
Python offers only with the GIL held or not at all: `aio`'s io_setup / io_submit /
io_getevents (through `syscall`), `vectors`' fallocate (hole punching) and `blockcheck`'s
madvise (prefetch). ctypes releases the GIL during each call. Each caller sets the argument
and result types of its own functions. `LIBC` is None where the library cannot be loaded;
the callers then fall back (thread-pool reads, allocated rows, no prefetch).
"""

from __future__ import annotations

import ctypes


def _load() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's
    except OSError:
        return None


LIBC = _load()
