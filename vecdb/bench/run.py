"""The benchmark orchestrator: one dataset, several systems, one sweep each.

Owns the order of work and the time budget. Per system: build (all threads, timed), then per
sweep setting a warm-up batch that gives recall and I/O counters, timed batches on 1 thread
and on all threads, and single-query latency on a subsample; then save, bytes on disk, and the
index-resident memory from a fresh subprocess (`vecdb.bench.memory`); for embedded vecdb systems
also the build-memory row (`vecdb.bench.build_memory`: peak and after-build anonymous memory
of a build in a fresh process, against a fresh process that only opens the index; a system's
config may turn it off with `"build_memory": false`). Each system gets an even
share of the time still left; a sweep that runs out stops early and says so. Rows go to
`results-<dataset>.jsonl` as each system finishes, so a crash keeps what was measured. Must not
format results (see `vecdb.bench.report`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench import metrics, scaling
from vecdb.bench.build_memory import measure_build_memory
from vecdb.bench.datasets import Dataset, slugify
from vecdb.bench.environment import environment, load_average
from vecdb.bench.memory import measure_in_subprocess
from vecdb.bench.systems import Params, System, directory_bytes, expand_sweep, make_system

K = 10  # neighbours asked for; recall@1 and recall@10 come from the same result


@dataclass
class RunConfig:
    """Everything a run needs besides the dataset; `systems_config` comes from --config."""

    systems: list[str]  # registry names, in row order
    out_dir: Path  # JSONL and plots go here
    threads: int  # "all threads" (the 1-thread numbers are always measured too)
    time_limit_s: float | None = None  # whole run, soft: a system's build is never cut
    latency_queries: int = 1000  # single-query latency on the first this many queries
    repeats: int = 3  # timed batch calls per setting on 1 thread
    repeats_all: int = 2  # and on all threads
    measure_memory: bool = True  # run the fresh-subprocess memory pass
    work_dir: Path | None = None  # where indexes are built and saved (a temp dir inside)
    systems_config: dict[str, Any] = field(default_factory=dict)  # per system: build, sweep
    progress: bool = True  # tqdm bars on stderr
    label: str | None = None  # names the JSONL, plots and RESULTS.md section (default: dataset)

    @classmethod
    def from_options(
        cls,
        o: Mapping[str, Any],
        systems: list[str],
        config: Mapping[str, Any],
        label: str | None,
        started: float,
        **more: Any,
    ) -> RunConfig:
        """The run `vecdb bench`'s options `o` ask for: all threads = `--threads` or every
        core, the time limit less what passed since `started` (perf_counter), the config's
        per-system settings; `more` sets the other fields."""
        limit = o["time_limit"]
        left = None if limit is None else max(0.0, limit - (time.perf_counter() - started))
        return cls(
            systems=systems,
            out_dir=o["out_dir"],
            threads=o["threads"] or os.cpu_count() or 1,
            time_limit_s=left,
            systems_config=dict(config.get("systems", {})),
            progress=o["progress"],
            label=label,
            **more,
        )


def run_header(
    dataset: str,
    label: str | None,
    command: str,
    started: float,
    load_start: Any,
    threads: int = 1,
) -> dict[str, Any]:
    """The header of a run's RESULTS.md section: what ran, how long since `started`, the
    load average at its start and end and, with `threads` > 1, the host's thread scaling
    now (`scaling.measure`; the run's rows carry the one from its start)."""
    header = {
        "dataset": dataset,
        "label": label,
        "command": command,
        "seconds": time.perf_counter() - started,
        "load_start": load_start,
        "load_end": load_average(),
    }
    if threads > 1:
        header["thread_scaling_end"] = scaling.measure(threads)
    return header


@dataclass
class RunResult:
    """What a run produced."""

    rows: list[dict[str, Any]]
    jsonl_path: Path
    env: dict[str, Any]
    seconds: float


def run_benchmark(ds: Dataset, cfg: RunConfig, log: Callable[[str], None] = print) -> RunResult:
    """Measure every system of `cfg` on `ds` and write the JSONL rows."""
    start = time.perf_counter()
    deadline = None if cfg.time_limit_s is None else start + cfg.time_limit_s
    env = environment(cfg.threads)
    env["thread_scaling"] = scaling.measure(cfg.threads)  # what "all threads" can give here
    run_id = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = cfg.out_dir / f"results-{slugify(cfg.label or ds.name)}.jsonl"
    jsonl.write_text("")
    common = {
        "run_id": run_id,
        "dataset": ds.name,
        "metric": ds.metric,
        "n": len(ds.base),
        "d": int(ds.base.shape[1]),
        "n_queries": len(ds.queries),
        "k": K,
        **env,
    }
    rows = run_systems(
        cfg,
        common,
        jsonl,
        lambda name, budget, workdir: bench_system(name, ds, cfg, budget, workdir, log),
        deadline,
        "vecdb-bench-",
        log,
    )
    return RunResult(rows, jsonl, env, time.perf_counter() - start)


def run_systems(
    cfg: RunConfig,
    common: dict[str, Any],
    jsonl: Path,
    bench_one: Callable[[str, float | None, Path], list[dict[str, Any]]],
    deadline: float | None,
    prefix: str,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The system loop shared by the runs: each system of `cfg` gets an even share of the time
    left before `deadline` and a fresh work dir; `bench_one(name, budget_s, workdir)` gives its
    rows (a failure becomes one error row), which go to `jsonl` merged over `common` as each
    system finishes. numba's thread count is restored afterwards."""
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    work_root = Path(tempfile.mkdtemp(prefix=prefix, dir=cfg.work_dir))
    bar = tqdm(total=len(cfg.systems), desc="systems", unit="system", disable=not cfg.progress)
    threads = numba_threads()
    try:
        for i, name in enumerate(cfg.systems):
            left = None if deadline is None else deadline - time.perf_counter()
            budget = None if left is None else max(0.0, left) / (len(cfg.systems) - i)
            bar.set_postfix_str(name)
            workdir = work_root / name
            workdir.mkdir()
            try:
                sys_rows = bench_one(name, budget, workdir)
            except Exception as exc:  # one failing system must not lose the others
                log(f"{name}: failed: {type(exc).__name__}: {exc}")
                sys_rows = [{"system": name, "error": f"{type(exc).__name__}: {exc}"}]
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            with jsonl.open("a") as f:
                for row in sys_rows:
                    full = {**common, **row}
                    rows.append(full)
                    f.write(json.dumps(full) + "\n")
            bar.update(1)
    finally:
        bar.close()
        shutil.rmtree(work_root, ignore_errors=True)
        numba_threads(threads)  # systems set their own: the caller's process gets its back
    return rows


def numba_threads(restore: int | None = None) -> int | None:
    """numba's thread count (None without numba); with `restore`, set it back first."""
    try:
        import numba
    except ImportError:
        return None
    if restore is not None:
        numba.set_num_threads(restore)
    return int(numba.get_num_threads())


def bench_system(
    name: str,
    ds: Dataset,
    cfg: RunConfig,
    budget_s: float | None,
    workdir: Path,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Build, sweep, save and measure memory of one system; one row per setting."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    sys_cfg = cfg.systems_config.get(name, {})
    base = sys_cfg.get("base")
    dim = int(ds.base.shape[1])
    system = make_system(name, ds.metric, dim, len(ds.base), sys_cfg.get("build", {}), base)
    sweep = expand_sweep(sys_cfg.get("sweep", system.default_sweep))
    deadline = None if budget_s is None else t_start + budget_s
    try:
        # Pass 1: build with all threads.
        build = timed_build(system, ds, cfg.threads, workdir)
        log(f"{name}: built in {build['build_s']:.1f} s ({system.build_params})")
        # Pass 2: the sweep.
        rows: list[dict[str, Any]] = []
        bar = tqdm(sweep, desc=name, unit="setting", leave=False, disable=not cfg.progress)
        for j, params in enumerate(bar):
            now = time.perf_counter()
            if rows and deadline is not None and now > deadline:
                log(f"{name}: time budget spent; skipped {len(sweep) - j} of {len(sweep)} settings")
                for row in rows:
                    row["sweep_truncated"] = len(sweep) - j
                break
            share = None if deadline is None else max(1.0, (deadline - now) / (len(sweep) - j))
            bar.set_postfix_str(json.dumps(params))
            rows.append(measure_setting(system, ds, cfg, params, share))
        bar.close()
        # Pass 3: save, bytes on disk, then memory in a fresh process.
        system.save(workdir)
        disk = {"disk_mib": round(directory_bytes(workdir) / 2**20, 2)}
        system.close()
        memory = _memory(name, system, ds, cfg, workdir, rows[-1]["params"]) if rows else {}
        # Pass 4: the build-memory row, in its own directory and fresh processes.
        if rows and cfg.measure_memory and system.measures_build_memory:
            if sys_cfg.get("build_memory", True):
                memory.update(_build_memory(name, system, ds, cfg, workdir / "build-memory"))
    finally:
        system.close()
    for row in rows:
        row.update(build)
        row.update(disk)
        row.update(memory)
        row["system_seconds"] = round(time.perf_counter() - t_start, 1)
    return rows


def measure_setting(
    system: System, ds: Dataset, cfg: RunConfig, params: Params, share_s: float | None
) -> dict[str, Any]:
    """All per-setting numbers: recall, I/O, batch QPS and latency on 1 thread, then batch QPS
    on all threads (last, so a system that restarts to change threads restarts once)."""
    budget = 20.0 if share_s is None else max(0.5, share_s / 3)
    load_before = load_average()
    system.set_params(params)
    system.set_threads(1)
    warm: list[npt.NDArray[np.int64]] = []
    io = system.measure_io(lambda: warm.append(system.search(ds.queries, K)), len(ds.queries))
    found = warm[0]  # the warm-up call's result gives the recall
    row: dict[str, Any] = {
        "system": system.name,
        "is_ours": system.is_ours,
        "build_params": system.build_params,
        "params": params,
        "recall_at_1": round(
            metrics.recall_at_k(ds.base, ds.queries, ds.metric, ds.gt_ids, found, 1), 5
        ),
        "recall_at_10": round(
            metrics.recall_at_k(ds.base, ds.queries, ds.metric, ds.gt_ids, found, K), 5
        ),
        "posting_reads_per_query": None,
        "bytes_read_per_query": None,
    }
    if io is not None:
        row["posting_reads_per_query"] = None if np.isnan(io[0]) else round(io[0], 3)
        row["bytes_read_per_query"] = None if np.isnan(io[1]) else round(io[1], 1)
    row.update(time_setting(system, ds, cfg, budget))
    row["load_avg_before"] = load_before
    return row


def timed_build(system: System, ds: Dataset, threads: int, workdir: Path) -> dict[str, Any]:
    """Build `system` on `threads` threads: the build_s / build_cpu_s / build_threads columns.
    Its libraries are imported and its kernels warmed first, timed apart (`warmup_s`): numba
    compiles vecdb's kernels once per install (then loads them from its cache), as the
    peers' code is compiled when installed; a build timed from a cold numba cache included
    ~35 s of compiling (MiniLM-384 "bits": 106.8 s in the bench, 73.4 s in a fresh process)."""
    system.set_threads(threads)
    w0 = time.perf_counter()
    system.import_libraries()
    warmup_s = round(time.perf_counter() - w0, 3)
    c0, w0 = system.cpu_seconds(), time.perf_counter()
    system.build(ds.base, workdir)
    return {
        "build_s": round(time.perf_counter() - w0, 3),
        "build_cpu_s": round(system.cpu_seconds() - c0, 3),
        "build_threads": threads,
        "warmup_s": warmup_s,
    }


def time_setting(system: System, ds: Dataset, cfg: RunConfig, budget: float) -> dict[str, Any]:
    """The timed part of a setting, after its warm-up call on 1 thread: batch QPS and latency on
    1 thread, then batch QPS on all threads (last, so a system that restarts to change threads
    restarts once)."""
    out: dict[str, Any] = {}
    clock = system.cpu_seconds
    timing = metrics.time_batch(system.search, ds.queries, K, cfg.repeats, budget, clock)
    out.update(timing.as_dict("qps_1t"))
    out.update(metrics.time_latency(system.search, ds.queries[: cfg.latency_queries], K, budget))
    if cfg.threads > 1:
        system.set_threads(cfg.threads)
        if system.restarts_on_thread_change:
            system.search(ds.queries, K)  # warm the restarted system up
        timing = metrics.time_batch(
            system.search, ds.queries, K, cfg.repeats_all, budget / 2, clock
        )
    out.update(timing.as_dict("qps_all"))
    return out


def _system_spec(name: str, system: System, ds: Dataset, cfg: RunConfig) -> dict[str, Any]:
    """What a child process needs to make `system` again: metric, dim, n, build params, base."""
    return {
        "metric": ds.metric,
        "dim": int(ds.base.shape[1]),
        "n": len(ds.base),
        "build_params": system.build_params,
        "base": cfg.systems_config.get(name, {}).get("base"),
    }


def _memory(
    name: str,
    system: System,
    ds: Dataset,
    cfg: RunConfig,
    workdir: Path,
    params: Params,
) -> dict[str, Any]:
    if not cfg.measure_memory:
        return {}
    spec = {
        **_system_spec(name, system, ds, cfg),
        "params": params,
        "index_dir": str(workdir),
        "queries_path": str(ds.directory / "queries.npy"),
        "k": K,
    }
    try:
        return measure_in_subprocess(name, spec, cfg.threads)
    except Exception as exc:  # memory is one column; keep the rest of the row
        return {"memory_error": f"{type(exc).__name__}: {exc}"}


def _build_memory(
    name: str, system: System, ds: Dataset, cfg: RunConfig, workdir: Path
) -> dict[str, Any]:
    spec = {
        **_system_spec(name, system, ds, cfg),
        "base_path": str(ds.directory / "base.npy"),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return measure_build_memory(name, spec, cfg.threads, workdir)
    except Exception as exc:  # one more column group; keep the rest of the row
        return {"build_mem_error": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
