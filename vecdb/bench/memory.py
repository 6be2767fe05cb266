"""Index-resident memory of one system, measured in a fresh subprocess.

Owns the memory protocol: a new Python process (so earlier systems cannot contaminate it)
imports the system's library, loads a few queries, reads `RssAnon` / `RssFile` from
/proc/self/status, loads the saved index, reads them again, answers the queries with one
search setting and reads them a third time. Reported: growth of anonymous RSS (the index's
own memory), growth of file-backed RSS (mmap'd files, page cache mapped in), peak RSS (VmHWM
of the process holding the index) and the load time. Thread counts are pinned through the
environment. Must not build indexes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench.sampler import status_kib
from vecdb.errors import Internal

THREAD_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PROBE_QUERIES = 100  # queries answered after the load, so lazily loaded state is counted


def read_status_kib(
    fields: tuple[str, ...] = ("RssAnon", "RssFile", "VmHWM"),
) -> dict[str, int]:
    """The named fields of /proc/self/status in KiB (0 where the kernel does not report them)."""
    return status_kib("self", fields)


def measure_in_subprocess(
    system: str,
    spec: dict[str, Any],
    threads: int,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run `python -m vecdb.bench.memory` for `system` and return its measurements.
    `spec` holds metric, dim, n, build_params, params, index_dir and queries_path."""
    payload = json.dumps({"system": system, "threads": threads, **spec})
    return run_json_child(
        ["vecdb.bench.memory", payload], threads, timeout_s, f"memory subprocess for {system}"
    )


def run_json_child(
    module_args: list[str], threads: int, timeout_s: float, what: str
) -> dict[str, Any]:
    """Run `python -m *module_args` with the thread counts pinned to `threads` and return the
    last JSON object line of its stdout; `what` names the process in the error if it fails."""
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    proc = subprocess.run(
        [sys.executable, "-m", *module_args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise Internal(f"{what} failed: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def mib(kib: float) -> float:
    """KiB as MiB, to 2 decimals."""
    return round(kib / 1024.0, 2)


def child_main(payload: dict[str, Any]) -> dict[str, Any]:
    """The subprocess body: load, probe, report."""
    from vecdb.bench.systems import make_system

    p = payload
    system = make_system(
        p["system"], p["metric"], p["dim"], p["n"], p["build_params"], p.get("base")
    )
    queries = np.load(payload["queries_path"], mmap_mode="r")[:PROBE_QUERIES]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    system.set_threads(int(payload["threads"]))
    # Library imports (and their lazily imported parts) belong to the baseline, not the index.
    system.import_libraries()
    before = system.rss_baseline_kib() or read_status_kib()
    t0 = time.perf_counter()
    system.load(Path(payload["index_dir"]))
    load_s = time.perf_counter() - t0
    loaded = system.rss_kib() or read_status_kib()
    system.set_params(payload.get("params") or {})
    system.search(queries, int(payload.get("k", 10)))
    after = system.rss_kib() or read_status_kib()
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at fork time.
    peak_kib = after.get("VmHWM", 0)
    system.close()
    return {
        "rss_anon_load_mib": mib(loaded["RssAnon"] - before["RssAnon"]),
        "rss_anon_mib": mib(after["RssAnon"] - before["RssAnon"]),
        "rss_file_mib": mib(after["RssFile"] - before["RssFile"]),
        "rss_anon_baseline_mib": mib(before["RssAnon"]),
        "peak_rss_mib": mib(peak_kib),
        "load_s": round(load_s, 3),
    }


if __name__ == "__main__":
    print(json.dumps(child_main(json.loads(sys.argv[1]))), flush=True)
