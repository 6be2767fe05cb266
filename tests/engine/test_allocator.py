"""vecdb.allocator: glibc allocator settings taken when a database opens."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vecdb import allocator

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(allocator._libc() is None, reason="glibc only: mallopt/malloc_trim absent")
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
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    before, after = map(int, out.stdout.split())
    assert before >= 1 and after == before, out.stdout
