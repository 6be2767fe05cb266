"""The scale row: a large synthetic set built and searched through the embedded SDK, with faiss
IVF-Flat on the same data beside it.

    python -m vecdb.bench.scale_row --n 10000000 --dim 96 --out bench/scale_row.json

Owns this protocol, and nothing else (it formats no tables):

1. Data: the rows of `vecdb bench`'s `synthetic:N:D:SEED` set (the same generator, the same
   random stream, so the values are identical), written chunk by chunk into base.npy and
   queries.npy (1,000 held-out queries) in a work directory; never the whole set in RAM.
   Free disk space is checked first (raw + an estimate of the index); too little aborts.
2. Exact top-10 of every query by a chunked exact search (BLAS on a chunk, exact float64
   distances of each chunk's 2k best, a running top-k).
3. Build (fresh process): create a SPANN collection (io="mmap"), upsert in batches read from
   the memory-mapped base, `optimize(wait=True)`; ingest and optimize timed apart; RssAnon
   of this process and every child it starts (a bulk build's child) sampled (peak growth
   over the baseline) and the bytes of the data directory (peak).
4. Warm (fresh process, kernels warmed on a tiny collection first): open, answer every query
   once per max_postings (to load the touched postings), then recall@10, 1-thread CPU-time
   QPS and all-thread wall QPS; RssAnon growth = index-resident anonymous memory.
5. Cold (fresh process): before each run the posting file's pages are dropped from the page
   cache (posix_fadvise DONTNEED), then single-query calls 1 and 16 in flight: QPS, p50/p99,
   the index's own bytes read per query and the page-cache bytes of the posting file the run
   brought in per query (mincore before and after: what came from the device, readahead
   included; /proc/self/io missed most of these page faults here).
6. faiss IndexIVFFlat (fresh process): nlist ~ 4 sqrt(n) as `vecdb bench` picks it, trained
   on a sample, vectors added in chunks; build time, peak RssAnon, index memory, a nprobe
   sweep with the same QPS measures; QPS at vecdb's recalls interpolated.

Every step runs under a deadline (`--timeout`): a step that would overrun is killed and the
results so far are written with the step marked. The work directory is deleted at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.options import add_engine_option, engine_settings
from vecdb.bench.scale_row_data import MAX_POSTINGS, K, compare, exact_truth, generate, recall
from vecdb.storage.disk import du

BATCH = 20_000  # rows per upsert call
INDEX_X_RAW = 4.0  # disk estimate: postings (~3.6x raw) and the stored vectors, over raw
COLD_POSTINGS = (16, 32)
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128)
TRAIN_PER_LIST = 40  # faiss training points per list (faiss warns below 39)
F32 = npt.NDArray[np.float32]


def _set_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(n, int(getattr(numba.config, "NUMBA_NUM_THREADS", n)))))


def _warm_kernels(work: Path, q: F32) -> None:
    """Compile the build and search kernels on a tiny collection (not part of any number)."""
    import vecdb

    with vecdb.connect(work / "warm") as w:
        w.create_collection("t", dim=q.shape[1], metric="l2", index="spann")
        x = q.repeat(20, 0)[:20_000] + np.float32(0.01)
        w.upsert("t", list(range(len(x))), x)
        w.optimize("t")
        w.search("t", q[:10], k=K)
        for i in range(10):  # the single-query kernels too (the cold steps' calls)
            w.search("t", q[i], k=K, params={"max_postings": COLD_POSTINGS[0]}, with_stats=True)
    shutil.rmtree(work / "warm", ignore_errors=True)


def step_build(work: Path, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """(Fresh process) upsert in batches from the memory-mapped base, then optimize; `engine`
    are the embedded database's engine settings (defaults when None)."""
    import vecdb
    from vecdb.bench.build_memory import children_anon_probe
    from vecdb.bench.sampler import Sampler, fs_growth_probe, rss_anon_probe, status_kib
    from vecdb.client.backpressure import Patience, upsert_patiently

    base = np.load(work / "base.npy", mmap_mode="r")
    _warm_kernels(work, np.load(work / "queries.npy"))
    db = work / "db"
    before = status_kib()
    own, children = rss_anon_probe(), children_anon_probe()  # (a bulk build's child counts)
    # "disk" walks the data directory; "fs" also counts unnamed files (`fs_growth_probe`)
    probes = {"anon": lambda: own() + children(), "children": children,
              "disk": lambda: float(du(db)[0]), "fs": fs_growth_probe(work)}  # fmt: skip
    with Sampler(probes, interval_s=0.1) as sampler, vecdb.connect(db, engine=engine) as c:
        c.create_collection("s", dim=base.shape[1], metric="l2", index="spann",
                            index_params={"io": "mmap"})  # fmt: skip
        t0, patience = time.perf_counter(), Patience()
        for lo in range(0, len(base), BATCH):
            hi = min(lo + BATCH, len(base))
            x = np.ascontiguousarray(base[lo:hi])  # a full write buffer is waited out
            upsert_patiently(c, "s", list(range(lo, hi)), x, patience=patience)
        t1 = time.perf_counter()
        c.optimize("s", wait=True)
        t2 = time.perf_counter()
        st = c.stats("s")["index"]
    after = status_kib()
    return {
        "ingest_s": t1 - t0,
        "upserts_rejected_buffer_full": patience.waits,
        "retry_sleep_s": patience.waited,
        "optimize_s": t2 - t1,
        "build_s": t2 - t0,
        "build_peak_anon_mib": (sampler.max("anon") - before["RssAnon"]) / 1024,
        "build_child_peak_anon_mib": sampler.max("children") / 1024,
        "build_vmhwm_mib": after["VmHWM"] / 1024,
        "disk_peak_mib": sampler.max("disk") / 2**20,
        "fs_growth_peak_mib": sampler.max("fs") / 2**20,
        "sampler_samples": len(sampler.times),
        "sampler_max_gap_ms": round(1000 * sampler.max_gap_s(), 1),
        "heads": st.get("heads"),
    }


def _batch_search(c: Any, q: F32, m: int) -> npt.NDArray[Any]:
    return np.concatenate(
        [
            c.search("s", q[lo : lo + 1000], k=K, params={"max_postings": m}).ids
            for lo in range(0, len(q), 1000)
        ]
    )


def step_warm(work: Path) -> dict[str, Any]:
    """(Fresh process) open, then recall and warm QPS per max_postings; anonymous growth."""
    import vecdb
    from vecdb.bench.sampler import status_kib

    q, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    _warm_kernels(work, q)
    threads = os.cpu_count() or 1
    before = status_kib()
    out: dict[str, Any] = {"all_threads": threads}
    with vecdb.connect(work / "db") as c:
        c.search("s", q[:1], k=K)
        out["open_anon_mib"] = (status_kib()["RssAnon"] - before["RssAnon"]) / 1024
        for m in MAX_POSTINGS:
            found = _batch_search(c, q, m)  # loads the postings these queries touch
            _set_threads(1)
            t = time.process_time()
            _batch_search(c, q, m)
            cpu = time.process_time() - t
            _set_threads(threads)
            t = time.perf_counter()
            _batch_search(c, q, m)
            wall = time.perf_counter() - t
            out[f"max_postings={m}"] = {
                "recall@10": recall(found, truth),
                "qps_1thread_cpu": len(q) / cpu,
                "qps_all_threads_wall": len(q) / wall,
            }
        after = status_kib()
        st = c.stats("s")["index"]
        out["index_anon_mib"] = (after["RssAnon"] - before["RssAnon"]) / 1024
        out["rssfile_growth_mib"] = (after["RssFile"] - before["RssFile"]) / 1024
        out["io"] = st.get("io")
        out["posting_file_mib"] = st.get("posting_file_bytes", 0) / 2**20
        out["index_bytes_on_disk_mib"] = st.get("bytes_on_disk", 0) / 2**20
    out["data_dir_mib"] = du(work / "db")[0] / 2**20
    return out


def _resident_bytes(db: Path) -> int:
    """Bytes of the posting files in the page cache (mincore over a private map)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]  # fmt: skip
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page, total = os.sysconf("SC_PAGE_SIZE"), 0
    for p in db.rglob("postings.*.bin"):
        size = p.stat().st_size
        if size == 0:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            vec = ctypes.create_string_buffer((size + page - 1) // page)
            libc.mincore(addr, size, vec)
            total += page * sum(b & 1 for b in vec.raw)
            libc.munmap(addr, size)
        finally:
            os.close(fd)
    return total


def _drop_cache(db: Path) -> None:
    for p in db.rglob("postings.*.bin"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages (a file just written) cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def step_cold(work: Path, m: int, conc: int) -> dict[str, Any]:
    """(Fresh process) the posting file's pages dropped from the page cache before the
    database is opened, then one single-query call per query, `conc` in flight. A fresh
    process each time: a closed database's posting map can outlive `close()`, and mapped
    pages cannot be dropped."""
    import vecdb
    from vecdb.index.spann import prewarm

    # The background CRC pass after an open reads a posting file of up to prewarm.MAX_BYTES
    # whole (not the 10M row's, a small test row's): here it would fill the page cache ahead
    # of the queries it is to measure cold.
    prewarm.MAX_BYTES = 0
    q, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    _warm_kernels(work, q)
    _drop_cache(work / "db")
    res_drop = _resident_bytes(work / "db")
    t_open = time.perf_counter()
    with vecdb.connect(work / "db") as c:
        c.count("s")
        t_open = time.perf_counter() - t_open

        def one(i: int) -> tuple[npt.NDArray[Any], float, float]:
            t0 = time.perf_counter()
            got = c.search("s", q[i], k=K, params={"max_postings": m}, with_stats=True)
            took = time.perf_counter() - t0
            return got.ids[0], took, float((got.stats or {}).get("bytes_read", 0.0))

        # page-cache residency around the queries alone: `stats()` reads every posting's
        # header pages, which the last run counted as the queries' (6.8x what they asked)
        res0 = _resident_bytes(work / "db")
        t = time.perf_counter()
        with ThreadPoolExecutor(conc) as pool:
            res = list(pool.map(one, range(len(q))))
        wall = time.perf_counter() - t
        res1 = _resident_bytes(work / "db")
        logical = sum(r[2] for r in res) / len(q)  # each call's own reads
    lat = np.array([r[1] for r in res]) * 1e3
    return {
        "recall@10": recall(np.stack([r[0] for r in res]), truth),
        "qps": len(q) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "index_kb_read_per_query": logical / 1e3,
        "resident_mib_after_drop": res_drop / 2**20,
        "resident_kb_per_query": (res1 - res0) / len(q) / 1e3,
        "open_s": t_open,
    }


def step_faiss(work: Path, quantizer: str) -> dict[str, Any]:
    """(Fresh process) faiss IndexIVFFlat on the same base: build, memory, nprobe sweep."""
    import faiss

    from vecdb.bench.peers import default_nlist
    from vecdb.bench.sampler import Sampler, rss_anon_probe, status_kib

    base = np.load(work / "base.npy", mmap_mode="r")
    q, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    n, d = base.shape
    nlist = default_nlist(n)
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    before = status_kib()
    with Sampler({"anon": rss_anon_probe()}, interval_s=0.5) as sampler:
        t0 = time.perf_counter()
        coarse = faiss.IndexHNSWFlat(d, 32) if quantizer == "hnsw" else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(coarse, d, nlist, faiss.METRIC_L2)
        index.cp.niter = 10
        rows = np.sort(np.random.default_rng(0).choice(n, min(n, TRAIN_PER_LIST * nlist), False))
        index.train(np.ascontiguousarray(base[rows]))
        t1 = time.perf_counter()
        for lo in range(0, n, 500_000):
            index.add(np.ascontiguousarray(base[lo : lo + 500_000]))
        t2 = time.perf_counter()
    del base
    out: dict[str, Any] = {
        "nlist": nlist,
        "quantizer": quantizer,
        "kmeans_niter": 10,
        "train_rows": len(rows),
        "train_s": t1 - t0,
        "add_s": t2 - t1,
        "build_s": t2 - t0,
        "build_peak_anon_mib": (sampler.max("anon") - before["RssAnon"]) / 1024,
        "index_anon_mib": (status_kib()["RssAnon"] - before["RssAnon"]) / 1024,
    }
    for nprobe in NPROBE:
        index.nprobe = nprobe
        found = index.search(q, K)[1]
        faiss.omp_set_num_threads(1)
        t = time.process_time()
        index.search(q, K)
        cpu = time.process_time() - t
        faiss.omp_set_num_threads(threads)
        t = time.perf_counter()
        index.search(q, K)
        wall = time.perf_counter() - t
        out[f"nprobe={nprobe}"] = {
            "recall@10": recall(found, truth),
            "qps_1thread_cpu": len(q) / cpu,
            "qps_all_threads_wall": len(q) / wall,
        }
    return out


def _child(step: str, work: Path, deadline: float, extra: list[str]) -> dict[str, Any]:
    """Run one step in a fresh process, killed at the deadline."""
    cmd = [sys.executable, "-m", "vecdb.bench.scale_row", "--step", step, "--work", str(work)]
    left = deadline - time.time()
    if left <= 0:
        return {"skipped": "deadline passed"}
    try:
        proc = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return {"killed": f"did not finish within {left:.0f} s (deadline)"}
    if proc.returncode != 0:
        return {"failed": proc.returncode, "stderr": proc.stderr[-3000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.time() + args.timeout
    raw = args.n * args.dim * 4
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vecdb-scale-row-", dir=args.workdir))
    free = shutil.disk_usage(work).free
    res: dict[str, Any] = {
        "dataset": f"synthetic:{args.n}:{args.dim}:{args.seed} (vecdb bench's generator)",
        "raw_mib": raw / 2**20,
        "free_disk_mib_at_start": free / 2**20,
        "command": " ".join(["python -m vecdb.bench.scale_row", *sys.argv[1:]]),
    }
    need = raw * (1 + INDEX_X_RAW)
    if free < need:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"need ~{need / 2**30:.1f} GiB free under {work}, have {free / 2**30:.1f}")

    def save(step: str, value: dict[str, Any], seconds: float | None) -> None:
        res[step] = value if seconds is None else dict(value, seconds=seconds)
        if seconds is not None:  # a timed step: how quiet the machine was
            res[step]["load_average_at_end"] = list(os.getloadavg())
        print(json.dumps({step: res[step]}), flush=True)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")

    try:
        t = time.perf_counter()
        generate(work, args.n, args.dim, args.seed)
        save("generate", {}, time.perf_counter() - t)
        t = time.perf_counter()
        base = np.load(work / "base.npy", mmap_mode="r")
        np.save(work / "truth.npy", exact_truth(base, np.load(work / "queries.npy")))
        del base
        save("truth", {}, time.perf_counter() - t)
        settings = [f"--engine={e}" for e in args.engine]
        res["engine_settings"] = args.engine or "defaults"
        steps: list[tuple[str, list[str]]] = [("build", settings), ("warm", [])]
        steps += [(f"cold:{m}:{c}", []) for m in COLD_POSTINGS for c in (1, 16)]
        if not args.no_faiss:
            steps.append(("faiss", ["--faiss-quantizer", args.faiss_quantizer]))
        for step, extra in steps:
            t = time.perf_counter()
            save(step, _child(step, work, deadline, extra), time.perf_counter() - t)
            if step == "build" and "build_s" not in res["build"]:
                break
        if "warm" in res and "index_anon_mib" in res["warm"]:
            res["warm"]["index_anon_pct_of_raw"] = 100 * res["warm"]["index_anon_mib"] * 2**20 / raw
            res["warm"]["posting_file_x_raw"] = res["warm"]["posting_file_mib"] * 2**20 / raw
        save("vecdb_vs_faiss", compare(res), None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--timeout", type=float, default=6 * 3600.0, help="seconds for all steps")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--faiss-quantizer", choices=("flat", "hnsw"), default="flat")
    add_engine_option(ap)
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)  # a fresh child step
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        kind, *nums = args.step.split(":")
        if kind == "cold":
            result = step_cold(args.work, int(nums[0]), int(nums[1]))
        elif kind == "faiss":
            result = step_faiss(args.work, args.faiss_quantizer)
        else:
            result = (
                step_build(args.work, engine_settings(args.engine))
                if kind == "build"
                else step_warm(args.work)
            )
        print(json.dumps(result), flush=True)
        return
    run(args)


if __name__ == "__main__":
    main()
