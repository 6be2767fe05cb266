"""Issue 12: compact posting codes with an exact rerank, side by side with today's default.

    python -m vecdb.bench.spann_rerank --dataset glove-50 --queries 2000 --out rerank.json

Builds the same data twice at the index level (`SpannIndex`, no engine): "default" (float16
postings) and "int8+rerank" (int8 postings, a float16 rerank store, `rerank_k` candidates),
both at the default `max_disk_ratio`. For each `max_postings` it measures, alternating the
two indexes: recall@10 against the exact neighbours, KB read per query (postings plus
rerank rows), 1-thread batch QPS (wall and CPU time) and single-query p50 / p99 (warm, mmap;
`--rounds` alternating rounds, the best figure of each kept, and every round and the median
of each figure beside it). With `--cold` both are
reopened with io=direct and single queries run 16 at a time (bytes, QPS, p50 / p99), then
one at a time on a quarter of the queries; each cold row also has the process's CPU per
query and the device's reads per query, KB per read, requests in flight and ms per read
(/proc/diskstats). Sizes: posting file, rerank store, directory, as multiples of the raw
float32 bytes. Owns only this experiment; every number comes from this
run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import load_dataset
from vecdb.index.spann.index import SpannIndex

K = 10
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "int8+rerank": {"vector_dtype": "int8", "rerank": "float16"},
}


def _recall(found: npt.NDArray[Any], truth: npt.NDArray[np.int64]) -> float:
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / K


def _open(directory: Path, dim: int, metric: str, params: dict[str, Any]) -> SpannIndex:
    idx, _ = SpannIndex.open(dim, metric, params, directory)
    return idx


def _sizes(idx: SpannIndex, raw: int) -> dict[str, float]:
    st = idx.stats()
    return {
        "posting_file_x_raw": st["posting_file_bytes"] / raw,
        "store_x_raw": st.get("vector_store_bytes", 0) / raw,
        "bytes_on_disk_x_raw": st["bytes_on_disk"] / raw,
        "replicas_per_vector": st["replicas_per_vector"],
    }


def _warm(
    idx: SpannIndex, q: npt.NDArray[np.float32], truth: Any, p: dict[str, Any]
) -> dict[str, float]:
    numba.set_num_threads(1)
    t, c = time.perf_counter(), time.process_time()
    got = idx.search(q, K, p)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    lat = []
    n1 = min(len(q), 1000)
    for i in range(n1):
        t0 = time.perf_counter()
        idx.search(q[i : i + 1], K, p)
        lat.append(time.perf_counter() - t0)
    ms = np.array(lat) * 1e3
    return {
        "recall@10": _recall(got.slots, truth),
        "kb_per_query": got.stats.bytes_read / len(q) / 1e3,
        "qps_wall_1t": len(q) / wall,
        "qps_cpu_1t": len(q) / max(cpu, 1e-9),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def _best(old: dict[str, float] | None, new: dict[str, float]) -> dict[str, float]:
    """The better of two rounds per figure (the machine is shared: noise only slows)."""
    if old is None:
        return new
    out = dict(new)
    for key in ("qps_wall_1t", "qps_cpu_1t", "qps", "mb_per_s"):
        if key in new:
            out[key] = max(old[key], new[key])
    for key in ("p50_ms", "p99_ms"):
        out[key] = min(old[key], new[key])
    return out


def _keep(out: dict[str, Any], key: str, row: dict[str, float]) -> None:
    """Record one round's row: the best per figure under `key` (as before), every round under
    `key:rounds` and the median per figure under `key:median` (the machine is shared; the
    median is the figure to compare when the rounds disagree)."""
    out[key] = _best(out.get(key), row)
    rounds = out.setdefault(f"{key}:rounds", [])
    rounds.append(row)
    out[f"{key}:median"] = {f: float(np.median([r[f] for r in rounds])) for f in row}


def _disk(directory: Path) -> list[int] | None:
    """The /proc/diskstats counters of the device holding `directory` (None where there are
    none: not Linux, or a filesystem on no one device)."""
    dev = directory.stat().st_dev
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                v = line.split()
                if int(v[0]) == os.major(dev) and int(v[1]) == os.minor(dev):
                    return [int(x) for x in v[3:14]]
    except OSError:
        pass
    return None


def _cold(
    idx: SpannIndex,
    q: npt.NDArray[np.float32],
    truth: Any,
    p: dict[str, Any],
    conc: int,
    directory: Path,
) -> dict[str, float]:
    """Single-query calls, `conc` in flight. Beside what the index counts, the device's own
    view from /proc/diskstats over the run (the whole device: other processes' reads count
    too): reads and KB per query, KB per read, mean in-flight requests, ms per read."""

    def one(i: int) -> tuple[npt.NDArray[Any], float, int]:
        t0 = time.perf_counter()
        got = idx.search(q[i : i + 1], K, p)
        return got.slots[0], time.perf_counter() - t0, got.stats.bytes_read

    d0, c0 = _disk(directory), time.process_time()
    t = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        res = list(pool.map(one, range(len(q))))
    wall = time.perf_counter() - t
    cpu, d1 = time.process_time() - c0, _disk(directory)
    ms = np.array([r[1] for r in res]) * 1e3
    nbytes = sum(r[2] for r in res) / len(q)
    out = {
        "recall@10": _recall(np.stack([r[0] for r in res]), truth),
        "kb_per_query": nbytes / 1e3,
        "qps": len(q) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mb_per_s": nbytes * len(q) / wall / 1e6,
        "cpu_us_per_query": cpu / len(q) * 1e6,
    }
    if d0 is not None and d1 is not None:  # fields: reads, merged, sectors, ms reading, ...
        d = [b - a for a, b in zip(d0, d1, strict=True)]
        out |= {
            "dev_reads_per_query": d[0] / len(q),
            "dev_kb_per_read": d[2] * 512 / max(d[0], 1) / 1e3,
            "dev_ms_per_read": d[3] / max(d[0], 1),
            "dev_in_flight": d[10] / 1e3 / wall,  # weighted ms doing I/O per ms
        }
    return out


def add_data_arguments(ap: argparse.ArgumentParser) -> None:
    """--dataset, --n, --queries: the arguments of `prepared`."""
    ap.add_argument("--dataset", default="glove-50")
    ap.add_argument("--n", type=int, default=0, help="first n base vectors (0: all)")
    ap.add_argument("--queries", type=int, default=2000)


def prepared(
    dataset: str, n: int, queries: int
) -> tuple[Any, npt.NDArray[np.float32], npt.NDArray[np.float32], Any]:
    """(dataset, base, queries, exact top-K ids): the first `n` base vectors (0: all; their
    neighbours then recomputed exactly), unit-normalised for cosine, as float32."""
    ds = load_dataset(dataset)
    base = ds.base[:n] if n else ds.base
    q = np.ascontiguousarray(ds.queries[:queries], np.float32)
    if n:  # the dataset's neighbours are for the whole base: recompute exactly
        from vecdb.kernels.scan import exact_topk

        truth = exact_topk(q, base, ds.metric, K)[0]
    else:
        truth = ds.gt_ids[:queries, :K]
    if ds.metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return ds, np.ascontiguousarray(base, np.float32), q, truth


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds, base, q, truth = prepared(args.dataset, args.n, args.queries)
    raw = base.nbytes
    if args.work is not None:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rerank-", dir=args.work))
    out: dict[str, Any] = {"dataset": args.dataset, "n": len(base), "queries": len(q)}
    idx: dict[str, SpannIndex] = {}
    try:
        for name, params in CONFIGS.items():
            t = time.perf_counter()
            idx[name] = _open(work / name, base.shape[1], ds.metric, dict(params, io="mmap"))
            idx[name].build(np.arange(len(base)), base)
            idx[name].checkpoint(1)
            out[f"{name}:build_s"] = time.perf_counter() - t
            out[f"{name}:sizes"] = _sizes(idx[name], raw)
            print(name, out[f"{name}:build_s"], out[f"{name}:sizes"], flush=True)
        for name in CONFIGS if args.postings else ():  # warm-up: compile, touch the maps
            _warm(idx[name], q[:200], truth[:200], {"max_postings": args.postings[0]})
        for m in args.postings:
            for rnd in range(args.rounds):  # alternating rounds; the best of each kept
                for name in CONFIGS:
                    for rk in [0] if name == "default" else args.rerank_k:
                        p = {"max_postings": m} | ({"rerank_k": rk} if name != "default" else {})
                        row = _warm(idx[name], q, truth, p)
                        _keep(out, f"warm:{name}:m={m}:rerank_k={rk}", row)
                        print("warm", rnd, name, m, rk, row, flush=True)
        if args.cold:
            for name, params in CONFIGS.items():
                idx[name].close()
                idx[name] = _open(work / name, base.shape[1], ds.metric, dict(params, io="direct"))
            for m in args.cold_postings:
                for rnd in range(args.rounds):
                    for name in CONFIGS:
                        for rk in [0] if name == "default" else args.rerank_k:
                            p = {"max_postings": m} | (
                                {"rerank_k": rk} if name != "default" else {}
                            )
                            for conc in (16, 1):
                                qq = q if conc > 1 else q[: len(q) // 4]
                                row = _cold(idx[name], qq, truth[: len(qq)], p, conc, work)
                                _keep(out, f"cold{conc}:{name}:m={m}:rerank_k={rk}", row)
                                print(f"cold{conc}", rnd, name, m, rk, row, flush=True)
    finally:
        for i in idx.values():
            i.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(ap)
    ap.add_argument("--postings", type=int, nargs="*", default=[24, 32, 48, 64, 80])
    ap.add_argument("--rerank-k", type=int, nargs="+", default=[16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--cold-postings", type=int, nargs="+", default=[48, 64])
    ap.add_argument("--work", default=None, help="directory for the indexes (default: tmp)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
