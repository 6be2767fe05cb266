"""The build-memory row: what a vecdb build costs in memory and time, in fresh processes.

Owns this protocol, for a system measured in-process (embedded vecdb):

1. A fresh process imports vecdb and warms its kernels on a tiny in-memory collection, then
   memory-maps the dataset's cached `base.npy` (so the caller's vectors are file-backed pages,
   RssFile, and every byte of anonymous memory that grows is the build's own) and takes the
   baseline RssAnon.
2. (a) It runs the build (batched upsert + optimize, waiting for the end), sampling its own
   RssAnon from /proc/self/status every 20 ms in a background thread, plus the RssAnon of
   every process it started (a large SPANN bulk build runs in a child process, see
   `vecdb.index.spann.child`; its whole RssAnon counts, interpreter included): the peak growth
   of that sum over the baseline, also as a multiple of the raw float32 bytes; the children's
   own peak is reported beside it. VmHWM (peak total RSS of this process, file pages
   included) is reported too. The wall time of the build is reported too.
3. (b) The caller's array is dropped and garbage collected, the database kept open: RssAnon
   growth then (and, as a diagnostic only, after glibc `malloc_trim(0)`).
   Then the database is closed: what stays (after `malloc_trim`) is the process's, not the
   index's (allocator and pymalloc arenas, kernels compiled beyond the warm-up), reported as
   `build_mem_closed_anon_mib`.
4. (c) Three more fresh processes with the same warm-up only open the data directory and
   answer one query: the median of their RssAnon growths (single runs varied by up to 2x). The
   ratio (b)/(c) says how far a long-running process stays above what the index needs.

Must not format results (see `vecdb.bench.report`) and must not import the engine.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench.memory import mib, run_json_child
from vecdb.bench.sampler import Probe, Sampler, fs_growth_probe, rss_anon_probe, status_kib

SETTLE_S = 0.2  # after gc, before reading RSS: lets the allocator and worker threads settle
OPEN_RUNS = 3  # fresh-open processes; (c) is their median (one varied by up to 2x)


def _child(mode: str, payload: dict[str, Any], threads: int, timeout_s: float) -> dict[str, Any]:
    args = ["vecdb.bench.build_memory", mode, json.dumps(payload)]
    return run_json_child(args, threads, timeout_s, f"build-memory {mode} process")


def measure_build_memory(
    system: str,
    spec: dict[str, Any],
    threads: int,
    workdir: Path,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Run the build child then the open child for `system`; the build-memory columns.
    `spec` holds metric, dim, n, build_params, base (a config variant's base system) and
    base_path (the dataset's base.npy). The index is built under `workdir`."""
    payload = {"system": system, "threads": threads, "workdir": str(workdir), **spec}
    built = _child("build", payload, threads, timeout_s)
    runs = [_child("open", payload, threads, timeout_s) for _ in range(OPEN_RUNS)]
    fresh_all = sorted(r["build_mem_fresh_anon_mib"] for r in runs)
    opened = dict(runs[0], build_mem_fresh_anon_mib=float(np.median(fresh_all)))
    opened["build_mem_fresh_all_mib"] = fresh_all
    raw_mib = spec["n"] * spec["dim"] * 4 / 2**20
    out = {
        "build_mem_raw_mib": round(raw_mib, 2),
        **built,
        **opened,
    }
    out["build_mem_peak_x_raw"] = round(out["build_mem_peak_anon_mib"] / raw_mib, 3)
    out["build_mem_after_x_raw"] = round(out["build_mem_after_anon_mib"] / raw_mib, 3)
    fresh = out["build_mem_fresh_anon_mib"]
    out["build_mem_after_over_fresh"] = (
        round(out["build_mem_after_anon_mib"] / fresh, 3) if fresh > 0 else None
    )
    return out


def _system(p: dict[str, Any]) -> Any:
    from vecdb.bench.systems import make_system

    system = make_system(p["system"], p["metric"], p["dim"], p["n"], p["build_params"], p["base"])
    system.set_threads(int(p["threads"]))
    system.import_libraries()  # imports and kernel warm-up belong to the baseline
    return system


def _descendants(pid: int | str = "self") -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            continue
        for k in kids:
            found += [k, *_descendants(k)]
    return found


def children_anon_probe() -> Probe:
    """A probe of the summed RssAnon (KiB) of every process this one started (and theirs)."""
    return lambda: float(sum(status_kib(k, ("RssAnon",))["RssAnon"] for k in _descendants()))


def _malloc_trim() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def build_main(p: dict[str, Any]) -> dict[str, Any]:
    """(Fresh process) steps 1-3: baseline, build under the sampler, after the build."""
    system = _system(p)
    base = np.load(p["base_path"], mmap_mode="r")
    gc.collect()
    before = status_kib()
    own, kids = rss_anon_probe(), children_anon_probe()
    disk = fs_growth_probe(Path(p["workdir"]))
    with Sampler({"anon": lambda: own() + kids(), "children": kids, "disk": disk}) as sampler:
        t0 = time.perf_counter()
        system.build(base, Path(p["workdir"]))
        build_s = time.perf_counter() - t0
    del base
    gc.collect()
    time.sleep(SETTLE_S)
    after = status_kib()
    trimmed = status_kib() if _malloc_trim() else after
    out = {
        "build_mem_build_s": round(build_s, 3),
        "build_mem_baseline_anon_mib": mib(before["RssAnon"]),
        "build_mem_peak_anon_mib": mib(sampler.max("anon") - before["RssAnon"]),
        "build_mem_children_peak_anon_mib": mib(sampler.max("children")),
        "build_mem_vmhwm_mib": mib(after["VmHWM"]),
        "build_mem_disk_peak_mib": round(sampler.max("disk") / 2**20, 1),
        "build_mem_after_anon_mib": mib(after["RssAnon"] - before["RssAnon"]),
        "build_mem_after_trim_anon_mib": mib(trimmed["RssAnon"] - before["RssAnon"]),
        "build_mem_samples": len(sampler.times),
        "build_mem_max_gap_ms": round(1000 * sampler.max_gap_s(), 1),
    }
    system.save(Path(p["workdir"]))
    system.close()
    gc.collect()
    _malloc_trim()
    time.sleep(SETTLE_S)
    # What stays with the database closed: the process's, not the index's (allocator and
    # pymalloc arenas, compiled kernels beyond the warm-up); reported beside (b)
    out["build_mem_closed_anon_mib"] = mib(status_kib()["RssAnon"] - before["RssAnon"])
    return out


def open_main(p: dict[str, Any]) -> dict[str, Any]:
    """(Fresh process) step 4: open the built directory, answer one query."""
    system = _system(p)
    query = np.ascontiguousarray(np.load(p["base_path"], mmap_mode="r")[:1], dtype=np.float32)
    gc.collect()
    before = status_kib()
    t0 = time.perf_counter()
    system.load(Path(p["workdir"]))
    system.search(query, 10)
    open_s = time.perf_counter() - t0
    gc.collect()
    after = status_kib()
    system.close()
    return {
        "build_mem_fresh_anon_mib": mib(after["RssAnon"] - before["RssAnon"]),
        "build_mem_fresh_open_s": round(open_s, 3),
    }


if __name__ == "__main__":
    mode, payload = sys.argv[1], json.loads(sys.argv[2])
    result = build_main(payload) if mode == "build" else open_main(payload)
    print(json.dumps(result), flush=True)
