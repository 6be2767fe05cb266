"""Issue 12: the device's ceiling for cold SPANN queries, beside the queries themselves.

    python -m vecdb.bench.cold_ceiling --dataset glove-50 --queries 2000 --out ceiling.json

Answers "is a cold query bound by the device or by the search?" with three measurements in
one run, on the same posting files: (1) fio-like: O_DIRECT random reads of one size (512 B
to 64 KiB) through the project's own native-AIO module, T threads each keeping B reads in
flight, for `--seconds` each: the device's requests and bytes per second at that depth;
(2) replay: every read each cold query made (recorded once, through the index's own reader
and rerank store), replayed with no search work, `conc` queries in flight, each query's
read calls in their order: what the device gives this exact request pattern; (3) the search
itself, `conc` single-query calls in flight, alternated with (2) over `--rounds` rounds.
Search QPS / replay QPS near 1 means the device bounds the search. The indexes are built as
in `spann_rerank` ("default" float16 postings, "int8+rerank"), or reused from `--work` when
a previous run left them there (`--keep`). Every row also has the device's own counters
(/proc/diskstats: reads and KB per query, requests in flight, ms per read) and the
process's CPU per query. Owns only this experiment; every number comes from this run.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import mmap
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import load_dataset
from vecdb.bench.spann_rerank import CONFIGS, K, _disk, _open
from vecdb.index.spann import aio
from vecdb.index.spann.index import SpannIndex

Read = tuple[str, npt.NDArray[np.int64], npt.NDArray[np.int64]]  # path, sizes, offsets
SIZES = (512, 4096, 8192, 16384, 65536)  # fio-like request sizes
DEPTHS = ((1, 16), (16, 16))  # (threads, reads in flight per thread)


def _device(directory: Path, before: list[int] | None, wall: float, n: int) -> dict[str, float]:
    """The device's counters since `before`, per query (n) and per second of `wall`."""
    after = _disk(directory)
    if before is None or after is None:
        return {}
    d = [b - a for a, b in zip(before, after, strict=True)]
    return {
        "dev_reads_per_query": d[0] / n,
        "dev_kb_per_query": d[2] * 512 / n / 1e3,
        "dev_kb_per_read": d[2] * 512 / max(d[0], 1) / 1e3,
        "dev_ms_per_read": d[3] / max(d[0], 1),
        "dev_in_flight": d[10] / 1e3 / wall,
        "dev_reads_per_s": d[0] / wall,
    }


def _timed(directory: Path, n: int, run: Callable[[], None]) -> dict[str, float]:
    """Run, and report QPS over n queries, CPU per query and the device's counters."""
    d0, c0, t0 = _disk(directory), time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"qps": n / wall, "cpu_us_per_query": cpu / n * 1e6} | _device(directory, d0, wall, n)


def fio(path: Path, size: int, threads: int, depth: int, seconds: float) -> dict[str, float]:
    """Random O_DIRECT reads of `size` bytes at `size`-aligned offsets of `path`."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    slots = max(1, (os.fstat(fd).st_size - size) // size)
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(t: int) -> None:
        ctx = aio.AioContext()
        buf = mmap.mmap(-1, depth * size)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        rng = np.random.default_rng(t)
        at = np.arange(depth, dtype=np.int64) * size
        nbytes = np.full(depth, size, np.int64)
        need = np.ones(depth, np.int64)
        try:
            while time.perf_counter() < stop:
                offs = rng.integers(0, slots, depth).astype(np.int64) * size
                ctx.read(fd, addr, at, nbytes, offs, need, str(path))
                done[t] += depth
        finally:
            ctx.close()
            del buf

    d0, t0 = _disk(path.parent), time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    wall = time.perf_counter() - t0
    os.close(fd)
    n = sum(done)
    return {
        "size": size,
        "in_flight": threads * depth,
        "reads_per_s": n / wall,
        "mb_per_s": n * size / wall / 1e6,
    } | _device(path.parent, d0, wall, max(n, 1))


def record(idx: SpannIndex, q: npt.NDArray[np.float32], p: dict[str, Any]) -> list[list[Read]]:
    """Every AIO read call each query makes, in order (one query at a time)."""
    calls: list[Read] = []
    real = aio.AioContext.read

    def spy(
        ctx: aio.AioContext,
        fd: int,
        base: int,
        at: aio.Ints,
        nbytes: aio.Ints,
        offsets: aio.Ints,
        need: aio.Ints,
        path: str,
    ) -> None:
        calls.append((path, np.array(nbytes, np.int64), np.array(offsets, np.int64)))
        real(ctx, fd, base, at, nbytes, offsets, need, path)

    out = []
    aio.AioContext.read = spy  # type: ignore[method-assign,assignment]
    try:
        for i in range(len(q)):
            calls.clear()
            idx.search(q[i : i + 1], K, p)
            out.append(list(calls))
    finally:
        aio.AioContext.read = real  # type: ignore[method-assign]
    return out


def replay(trace: list[list[Read]], conc: int) -> None:
    """Each query's read calls in order, `conc` queries at a time, no search work."""
    paths = {path for c in trace for path, _, _ in c}
    fds = {path: os.open(path, os.O_RDONLY | os.O_DIRECT) for path in paths}
    local = threading.local()
    biggest = max((int(nb.sum()) for c in trace for _, nb, _ in c), default=0) + 4096

    def one(calls: list[Read]) -> None:
        if not hasattr(local, "ctx"):
            local.ctx = aio.AioContext()
            local.buf = mmap.mmap(-1, -(-biggest // 4096) * 4096)
            local.addr = ctypes.addressof(ctypes.c_char.from_buffer(local.buf))
        for path, nb, off in calls:
            at = np.zeros(len(nb), np.int64)
            np.cumsum(nb[:-1], out=at[1:])
            ones = np.ones(len(nb), np.int64)
            local.ctx.read(fds[path], local.addr, at, nb, off, ones, path)

    try:
        with ThreadPoolExecutor(conc) as pool:
            list(pool.map(one, trace))
    finally:
        for fd in fds.values():
            os.close(fd)


def search(idx: SpannIndex, q: npt.NDArray[np.float32], p: dict[str, Any], conc: int) -> None:
    """`conc` single-query calls in flight over all of q."""
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(lambda i: idx.search(q[i : i + 1], K, p), range(len(q))))


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.dataset)
    q = np.ascontiguousarray(ds.queries[: args.queries], np.float32)
    if ds.metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ceiling-"))
    out: dict[str, Any] = {"dataset": args.dataset, "queries": len(q), "fio": []}
    idx: dict[str, SpannIndex] = {}
    params = {
        "default": {"max_postings": args.postings_default},
        "int8+rerank": {"max_postings": args.postings, "rerank_k": args.rerank_k},
    }
    try:
        for name, cfg in CONFIGS.items():
            if not (work / name / "built").exists():
                base = np.ascontiguousarray(ds.base, np.float32)
                if ds.metric == "cosine":
                    base = base / np.linalg.norm(base, axis=1, keepdims=True)
                built = _open(work / name, q.shape[1], ds.metric, dict(cfg, io="mmap"))
                built.build(np.arange(len(base)), base)
                built.checkpoint(1)
                built.close()
                (work / name / "built").write_text("1")
            idx[name] = _open(work / name, q.shape[1], ds.metric, dict(cfg, io="direct"))
        posting_file = max((work / "default").glob("postings.*.bin"))
        for size in SIZES:
            for threads, depth in DEPTHS:
                row = fio(posting_file, size, threads, depth, args.seconds)
                out["fio"].append(row)
                print("fio", json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
        traces = {name: record(idx[name], q, params[name]) for name in CONFIGS}
        for name in CONFIGS:
            search(idx[name], q[:200], params[name], args.conc)  # warm-up: compile
        for rnd in range(args.rounds):
            for name in CONFIGS:
                runs: dict[str, Callable[[], None]] = {
                    "search": functools.partial(search, idx[name], q, params[name], args.conc),
                    "replay": functools.partial(replay, traces[name], args.conc),
                }
                for what, fn in runs.items():
                    row = _timed(work, len(q), fn)
                    row["load1"] = os.getloadavg()[0]
                    out.setdefault(f"{what}:{name}:rounds", []).append(row)
                    print(what, rnd, name, json.dumps({k: round(v, 2) for k, v in row.items()}))
        for name in CONFIGS:
            for what in ("search", "replay"):
                rows = out[f"{what}:{name}:rounds"]
                out[f"{what}:{name}:median"] = {
                    f: float(np.median([r[f] for r in rows])) for f in rows[0]
                }
            ratios = [
                s["qps"] / r["qps"]
                for s, r in zip(out[f"search:{name}:rounds"], out[f"replay:{name}:rounds"])
            ]
            out[f"{name}:search_over_replay_median"] = float(np.median(ratios))
            print(name, "search / replay QPS (median of rounds):", round(np.median(ratios), 3))
    finally:
        for i in idx.values():
            i.close()
        if not args.work or not args.keep:
            shutil.rmtree(work / "default", ignore_errors=True)
            shutil.rmtree(work / "int8+rerank", ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="glove-50")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--postings", type=int, default=48, help="int8+rerank max_postings")
    ap.add_argument("--postings-default", type=int, default=64, help="default max_postings")
    ap.add_argument("--rerank-k", type=int, default=16)
    ap.add_argument("--conc", type=int, default=16, help="queries in flight")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="per fio-like row")
    ap.add_argument("--work", default=None, help="directory for the indexes (default: tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the indexes in --work")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
