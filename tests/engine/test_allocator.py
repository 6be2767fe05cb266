"""vecdb.allocator: glibc allocator settings taken when a database opens."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vecdb import allocator

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    allocator._libc() is None, reason="glibc only: mallopt/malloc_trim absent"
)


def _fresh_process(code: str) -> subprocess.CompletedProcess[str]:
    """`code` run in a fresh interpreter (the settings are once per process)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_opening_a_database_caps_arenas_and_a_threaded_build_stays_in_the_main_arena(
    tmp_path: Path,
) -> None:
    # A fresh process (the settings are once per process): open a database, then allocate
    # from several threads at once. With the arena cap no thread gets an arena of its own:
    # glibc's malloc_info lists one <heap nr=...> per arena, before and after alike.
    code = textwrap.dedent(
        f"""
        import ctypes, os, tempfile, threading
        import numpy as np
        import vecdb
        from vecdb import allocator

        libc = allocator._libc()
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]

        def arenas():
            fd, name = tempfile.mkstemp()
            os.close(fd)
            fp = libc.fopen(name.encode(), b"w")
            assert libc.malloc_info(0, fp) == 0
            libc.fclose(fp)
            with open(name) as f:
                text = f.read()
            os.unlink(name)
            return text.count("<heap nr=")

        before = arenas()
        with vecdb.connect({str(tmp_path / "db")!r}) as c:
            assert allocator.tune_allocator() is True
            def churn():
                for _ in range(200):
                    xs = [np.empty(1000, np.float32) for _ in range(50)]
                    del xs
            threads = [threading.Thread(target=churn) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            c.create_collection("a", dim=4)
        print(before, arenas())
        """
    )
    out = _fresh_process(code)
    before, after = map(int, out.stdout.split())
    assert before >= 1 and after == before, out.stdout


def test_opening_a_database_keeps_freed_memory_at_the_heap_top_for_the_next_call(
    tmp_path: Path,
) -> None:
    # With the mmap threshold pinned, glibc's trim threshold would stay at 128 KiB and a
    # call's freed buffers would go back to the system at once (and fault in again on the
    # next call). After opening a database, 4 MiB freed at the top of the heap stay there
    # (mallinfo2's keepcost: releasable bytes at the top) until release_free_memory.
    code = textwrap.dedent(
        f"""
        import ctypes
        import vecdb
        from vecdb import allocator

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                "keepcost").split()]

        libc = allocator._libc()
        libc.mallinfo2.restype = MallInfo2
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]

        def freed_top():
            blocks = [libc.malloc(100_000) for _ in range(40)]  # under the mmap threshold
            for b in reversed(blocks):
                libc.free(b)
            return libc.mallinfo2().keepcost

        with vecdb.connect({str(tmp_path / "db")!r}):
            assert allocator.tune_allocator() is True
            kept = freed_top()
            allocator.release_free_memory()
            released = libc.mallinfo2().keepcost
        print(kept, released)
        """
    )
    out = _fresh_process(code)
    kept, released = map(int, out.stdout.split())
    assert kept >= 4_000_000 and released < 1_000_000, out.stdout
