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
    # from several threads at once. With the arena cap no thread gets a 64 MiB-aligned
    # heap of its own: every anonymous mapping that grows is [heap] or an mmapped block.
    code = textwrap.dedent(
        f"""
        import re, threading
        import numpy as np
        import vecdb
        from vecdb import allocator

        def arena_heaps():
            n = 0
            for line in open("/proc/self/maps"):
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\\s*$", line)
                if m and int(m.group(1), 16) % (64 << 20) == 0:
                    n += 1
            return n

        before = arena_heaps()
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
        print(before, arena_heaps())
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
    assert after <= before, out.stdout
