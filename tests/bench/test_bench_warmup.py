"""The memory probe's warm-up (`VecdbSystem.import_libraries`) loads the kernels of every
search path it will measure, so that fixed compiled code is in the baseline, not in the
index's memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_warm_up_loads_the_threaded_batch_kernels() -> None:
    # A fresh process: numba's dispatchers are per process. The threaded batch path's
    # kernels (`pairs.bucket_parts`, `pairs.gather_part`) are loaded by the warm-up at two
    # threads, and were not before it.
    code = textwrap.dedent(
        """
        import json
        from vecdb.bench.systems import make_system
        from vecdb.kernels import pairs
        system = make_system("vecdb-spann", "cosine", 16, 1000, {}, None)
        system.set_threads(2)
        before = [len(pairs.bucket_parts.signatures), len(pairs.gather_part.signatures)]
        system.import_libraries()
        after = [len(pairs.bucket_parts.signatures), len(pairs.gather_part.signatures)]
        print(json.dumps({"before": before, "after": after}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NUMBA_NUM_THREADS="2"),
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == [0, 0]
    assert min(seen["after"]) >= 1


def test_warm_up_loads_the_single_query_kernels() -> None:
    # SPANN's one-kernel single-query path (`kernels.single`) runs only for one query on a
    # data directory on disk (its mmap reader): the warm-up loads it, so the fresh-open
    # probe's first query does not count its code as index memory.
    code = textwrap.dedent(
        """
        import json
        from vecdb.bench.systems import make_system
        from vecdb.kernels import single
        system = make_system("vecdb-spann", "cosine", 16, 1000, {}, None)
        system.set_threads(1)
        kernels = (single.search_one_rerank, single.search_one_bits)
        before = [len(k.signatures) for k in kernels]
        system.import_libraries()
        after = [len(k.signatures) for k in kernels]
        print(json.dumps({"before": before, "after": after}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == [0, 0]
    assert max(seen["after"]) >= 1  # the default index's kernel (int8 + store, or bits)
