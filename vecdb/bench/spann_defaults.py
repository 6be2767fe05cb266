"""Issue 12: candidate default SPANN builds against today's default, side by side at one recall.

    python -m vecdb.bench.spann_defaults --dataset glove-50 --queries 2000 --cold --out FILE

Builds the same data once per configuration at the index level (`SpannIndex`, no engine;
every build parameter spelled out, so the run means the same after a default changes):
today's default ("f16": float16 postings, head_fraction 0.045, posting_vectors 200, no rerank
store) and int8 postings with a float16 rerank store at three posting sizes ("i8-200",
"i8-300", "i8-400": head_fraction 0.045 / 0.03 / 0.0225 with posting_vectors 200 / 300 / 400,
the same vectors per head budget), plus "i8-200-r1.9" (int8 + rerank trimmed by max_disk_ratio
to about float16's replicas per vector on MiniLM-384). Then, for each configuration, the smallest `max_postings`
whose recall@10 reaches `--target` (a bisection over whole batches; recall is deterministic
for a fixed index), and at that setting, in `--rounds` rounds alternating the configurations:
warm (mmap, pages cached) 1-thread batch QPS by CPU time, all-thread batch QPS by wall time,
single-query p50 / p99; cold (reopened io=direct) single queries 16 and 1 in flight: KB read
per query, QPS, p50 / p99, and the device's reads per query from /proc/diskstats. The medians
over the rounds and each config's ratio to "f16" per round (median) are reported. Sizes
(posting file and rerank store x raw float32), build seconds and the index's RssAnon in a
fresh process (after compiling the kernels on a throwaway index; growth over open plus 200
queries) complete the row. Owns only this experiment; every number comes from this run.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from vecdb.bench.spann_rerank import K, _cold, _recall, add_data_arguments, prepared
from vecdb.index.spann.index import SpannIndex

_F16 = {"vector_dtype": "float16", "rerank": "none"}
_I8 = {"vector_dtype": "int8", "rerank": "float16"}
CONFIGS: dict[str, dict[str, Any]] = {
    "f16": _F16 | {"head_fraction": 0.045, "posting_vectors": 200},
    "i8-200": _I8 | {"head_fraction": 0.045, "posting_vectors": 200},
    "i8-300": _I8 | {"head_fraction": 0.03, "posting_vectors": 300},
    "i8-400": _I8 | {"head_fraction": 0.0225, "posting_vectors": 400},
    # int8 + rerank trimmed to about float16's replicas (~5.5 on MiniLM-384: its postings take
    # 2.78x raw at 2 bytes a component, so 1.4x at 1 byte, plus the 0.5x store)
    "i8-200-r1.9": _I8 | {"head_fraction": 0.045, "posting_vectors": 200, "max_disk_ratio": 1.9},
}


def _open(directory: Path, dim: int, metric: str, params: dict[str, Any]) -> SpannIndex:
    idx, _ = SpannIndex.open(dim, metric, params, directory)
    return idx


def _search_params(name: str, m: int, rerank_k: int) -> dict[str, Any]:
    return {"max_postings": m} | ({"rerank_k": rerank_k} if name != "f16" else {})


def _calibrate(
    idx: SpannIndex,
    name: str,
    q: npt.NDArray[np.float32],
    truth: Any,
    target: float,
    rk: int,
    max_m: int,
) -> tuple[int, dict[int, float]]:
    """Smallest max_postings in [1, max_m] whose batch recall@10 reaches `target` (bisection;
    recall grows with the postings read) and every recall measured on the way."""
    seen: dict[int, float] = {}

    def rec(m: int) -> float:
        if m not in seen:
            seen[m] = _recall(idx.search(q, K, _search_params(name, m, rk)).slots, truth)
        return seen[m]

    lo, hi = 1, max_m
    if rec(hi) < target:
        return hi, seen
    while lo < hi:
        mid = (lo + hi) // 2
        if rec(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    rec(lo)
    return lo, seen


def _warm(
    idx: SpannIndex, q: npt.NDArray[np.float32], truth: Any, p: dict[str, Any], threads: int
) -> dict[str, float]:
    numba.set_num_threads(1)
    t, c = time.perf_counter(), time.process_time()
    got = idx.search(q, K, p)
    cpu = time.process_time() - c
    numba.set_num_threads(threads)
    t = time.perf_counter()
    idx.search(q, K, p)
    wall_all = time.perf_counter() - t
    numba.set_num_threads(1)
    lat = []
    for i in range(min(len(q), 1000)):
        t0 = time.perf_counter()
        idx.search(q[i : i + 1], K, p)
        lat.append(time.perf_counter() - t0)
    numba.set_num_threads(threads)  # the caller's count again
    ms = np.array(lat) * 1e3
    return {
        "recall@10": _recall(got.slots, truth),
        "kb_per_query": got.stats.bytes_read / len(q) / 1e3,
        # the reads the index asks for per query: posting blocks plus rerank rows
        "blocks_per_query": got.stats.blocks_read / len(q),
        "rerank_rows_per_query": got.stats.extra.get("rerank_rows", 0) / len(q),
        "qps_cpu_1t": len(q) / max(cpu, 1e-9),
        "qps_wall_all": len(q) / wall_all,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def _rss_child(directory: str, dim: int, metric: str, params: dict[str, Any], qpath: str) -> None:
    """Fresh-process RssAnon growth of opening `directory` and answering 200 queries. The
    kernels are compiled first on a throwaway 2,000-vector index with the same parameters, so
    JIT code is in the baseline, not the index."""
    from vecdb.bench.sampler import status_kib

    q = np.load(qpath)[:200]
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="rss-"))
    small = _open(tmp / "i", dim, metric, params)
    small.build(np.arange(2000), rng.standard_normal((2000, dim)).astype(np.float32))
    small.search(q, K, {"max_postings": 8})
    small.search(q[:1], K, {"max_postings": 8})
    small.close()
    del small
    shutil.rmtree(tmp, ignore_errors=True)
    gc.collect()
    before = status_kib("self", ("RssAnon",))["RssAnon"]
    idx = _open(Path(directory), dim, metric, params)
    idx.search(q, K, {"max_postings": 32})
    for i in range(len(q)):
        idx.search(q[i : i + 1], K, {"max_postings": 32})
    after = status_kib("self", ("RssAnon",))["RssAnon"]
    print(json.dumps({"rss_anon_mib": (after - before) / 1024}), flush=True)


def _rss(directory: Path, dim: int, metric: str, params: dict[str, Any], qpath: Path) -> float:
    arg = json.dumps([str(directory), dim, metric, params, str(qpath)])
    out = subprocess.run(
        [sys.executable, "-m", "vecdb.bench.spann_defaults", "--rss-child", arg],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_anon_mib"])


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {f: float(np.median([r[f] for r in rows])) for f in rows[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds, base, q, truth = prepared(args.dataset, args.n, args.queries)
    raw, dim = base.nbytes, base.shape[1]
    threads = numba.get_num_threads()
    names = args.configs
    if args.work is not None:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    reuse = args.reuse is not None  # a kept directory: what it holds is not built again
    work = Path(args.reuse) if reuse else Path(tempfile.mkdtemp(prefix="defaults-", dir=args.work))
    work.mkdir(parents=True, exist_ok=True)
    qpath = work / "q.npy"
    np.save(qpath, q)
    out: dict[str, Any] = {
        "dataset": args.dataset,
        "n": len(base),
        "queries": len(q),
        "target": args.target,
        "rerank_k": args.rerank_k,
        "threads": threads,
        "configs": {n: CONFIGS[n] for n in names},
    }
    idx: dict[str, SpannIndex] = {}
    try:
        for name in names:
            t = time.perf_counter()
            idx[name] = _open(work / name, dim, ds.metric, CONFIGS[name] | {"io": "mmap"})
            built = idx[name].stats()["vectors"] > 0  # kept from an earlier run (--reuse)
            if not built:
                idx[name].build(np.arange(len(base)), base)
                idx[name].checkpoint(1)
            build_s = float("nan") if built else time.perf_counter() - t
            st = idx[name].stats()
            out[f"{name}:build"] = {
                "build_s": build_s,
                "heads": st["heads"],
                "posting_size_mean": st["posting_size_mean"],
                "replicas_per_vector": st["replicas_per_vector"],
                "posting_file_x_raw": st["posting_file_bytes"] / raw,
                "store_x_raw": st.get("vector_store_bytes", 0) / raw,
                "resident_estimate_mib": st["resident_bytes_estimate"] / 2**20,
            }
            print(name, out[f"{name}:build"], flush=True)
        for name in names if not args.no_rss else ():
            idx[name].close()
            rss = _rss(work / name, dim, ds.metric, CONFIGS[name] | {"io": "mmap"}, qpath)
            out[f"{name}:build"] |= {"rss_anon_mib": rss, "rss_anon_x_raw": rss * 2**20 / raw}
            idx[name] = _open(work / name, dim, ds.metric, CONFIGS[name] | {"io": "mmap"})
            print(name, "rss", rss, flush=True)
        numba.set_num_threads(threads)
        m_at: dict[str, int] = {}
        for name in names:
            m_at[name], seen = _calibrate(
                idx[name], name, q, truth, args.target, args.rerank_k, args.max_m
            )
            out[f"{name}:recall_by_m"] = dict(sorted(seen.items()))
            print(name, "m", m_at[name], out[f"{name}:recall_by_m"], flush=True)
        out["max_postings"] = m_at
        for name in names:  # warm-up: compile, touch the pages
            _warm(idx[name], q[:200], truth[:200], _search_params(name, m_at[name], 16), threads)
        rows: dict[str, list[dict[str, float]]] = {}
        for rnd in range(args.rounds):
            for name in names if rnd % 2 == 0 else names[::-1]:
                p = _search_params(name, m_at[name], args.rerank_k)
                row = _warm(idx[name], q, truth, p, threads)
                rows.setdefault(f"warm:{name}", []).append(row)
                print("warm", rnd, name, json.dumps(row), flush=True)
        if args.cold:
            for name in names:
                idx[name].close()
                idx[name] = _open(work / name, dim, ds.metric, CONFIGS[name] | {"io": "direct"})
                p = _search_params(name, m_at[name], args.rerank_k)  # warm-up: compile
                _cold(idx[name], q[:64], truth[:64], p, 16, work)
            for rnd in range(args.rounds):
                for name in names if rnd % 2 == 0 else names[::-1]:
                    p = _search_params(name, m_at[name], args.rerank_k)
                    for conc in (16, 1):
                        qq = q if conc > 1 else q[: len(q) // 4]
                        row = _cold(idx[name], qq, truth[: len(qq)], p, conc, work)
                        rows.setdefault(f"cold{conc}:{name}", []).append(row)
                        print(f"cold{conc}", rnd, name, json.dumps(row), flush=True)
        out["rounds"] = rows
        out["median"] = {key: _median(r) for key, r in rows.items()}
        ratio: dict[str, dict[str, float]] = {}
        for key, r in rows.items():
            kind, name = key.split(":")
            if name == "f16":
                continue
            ref = rows[f"{kind}:f16"]
            ratio[key] = {
                f: float(np.median([b[f] / a[f] for a, b in zip(ref, r, strict=True)]))
                for f in r[0]
                if all(a[f] for a in ref)  # (rerank rows: none in f16)
            }
        out["ratio_to_f16"] = ratio
    finally:
        numba.set_num_threads(threads)  # as found (a run in a test process leaves it so)
        for i in idx.values():
            i.close()
        if not reuse:
            shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(ap)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--target", type=float, default=0.95, help="recall@10 to compare at")
    ap.add_argument("--max-m", type=int, default=256, help="largest max_postings tried")
    ap.add_argument("--rerank-k", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--work", default=None, help="directory for the indexes (default: tmp)")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--reuse",
        default=None,
        help="a work directory to keep; configs built there before are reused",
    )
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process RssAnon")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        _rss_child(*json.loads(args.rss_child))
        return
    if "f16" not in args.configs:
        args.configs.insert(0, "f16")
    res = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
