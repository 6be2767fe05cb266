"""SPANN measurements the side-by-side sweep does not cover: online churn, cold reads under
concurrency with the device's own bandwidth, and a scaling row.

    python -m vecdb.bench.spann_extra --part churn,cold,scale --out bench/spann_extra.json

Owns only these three experiments. It drives vecdb through the SDK, except the device
measurement, which times the index's own O_DIRECT reader on its posting file. Every number
printed comes from this run; nothing is assumed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

import vecdb
from vecdb.bench.datasets import load_dataset
from vecdb.bench.memory import read_status_kib
from vecdb.kernels.scan import exact_topk

K = 10
BATCH = 10_000
F32 = npt.NDArray[np.float32]


def _recall(found: npt.NDArray[Any], truth: npt.NDArray[np.int64]) -> float:
    return float(
        np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, truth)])
    )


def _load(
    c: vecdb.Client,
    name: str,
    ids: npt.NDArray[np.int64],
    x: F32,
    metric: str,
    index_params: dict[str, Any] | None = None,
) -> float:
    c.create_collection(
        name, dim=x.shape[1], metric=metric, index="spann", index_params=index_params
    )
    t = time.perf_counter()
    for lo in range(0, len(ids), BATCH):
        c.upsert(name, ids[lo : lo + BATCH].tolist(), x[lo : lo + BATCH])
    c.optimize(name)
    return time.perf_counter() - t


def _search_all(c: vecdb.Client, name: str, q: F32, m: int) -> npt.NDArray[Any]:
    return np.concatenate(
        [
            c.search(name, q[lo : lo + 2000], k=K, params={"max_postings": m}).ids
            for lo in range(0, len(q), 2000)
        ]
    )


def churn(dataset: str, work: Path) -> dict[str, Any]:
    """Bulk-build 80% of the base; then, online, delete 20% of it and upsert the other 20%
    of the base as new points; compare recall with a fresh bulk build of the same live set."""
    ds = load_dataset(dataset)
    base, q = ds.base, ds.queries
    n0 = int(0.8 * len(base))
    rng = np.random.default_rng(5)
    gone = rng.choice(n0, int(0.2 * n0), replace=False)
    new = np.arange(n0, len(base))
    out: dict[str, Any] = {
        "dataset": dataset,
        "built": n0,
        "deleted": len(gone),
        "inserted": len(new),
    }
    with vecdb.connect(work / "churn") as c:
        out["build_s"] = _load(c, "online", np.arange(n0), base[:n0], ds.metric)
        t = time.perf_counter()
        step = 5000
        for i in range(0, max(len(gone), len(new)), step):
            if i < len(gone):
                c.delete("online", gone[i : i + step].tolist())
            if i < len(new):
                c.upsert("online", new[i : i + step].tolist(), base[new[i : i + step]])
        out["online_s"] = time.perf_counter() - t
        live = np.setdiff1d(np.arange(len(base)), gone)
        rows, _ = exact_topk(q, base[live], ds.metric, K)
        truth = live[rows]
        out["fresh_build_s"] = _load(c, "fresh", live, base[live], ds.metric)
        for m in (32, 48, 64):
            online = _recall(_search_all(c, "online", q, m), truth)
            fresh = _recall(_search_all(c, "fresh", q, m), truth)
            out[f"max_postings={m}"] = {"online": online, "fresh": fresh, "diff": online - fresh}
        out["online_stats"] = {k: v for k, v in c.stats("online")["index"].items() if k != "spec"}
    return out


def _device(posting_file: Path, threads: int, reads: int = 4000, nbytes: int = 24576) -> float:
    """MB/s of random page-aligned reads of `nbytes` with the index's own O_DIRECT reader."""
    from vecdb.index.spann.postings import PAGE, DirectReader, PostingFile

    reader = DirectReader(cast(PostingFile, SimpleNamespace(path=posting_file)), threads=threads)
    pages = posting_file.stat().st_size // PAGE
    rng = np.random.default_rng(threads)
    offs = (rng.integers(1, pages - nbytes // PAGE - 1, reads) * PAGE).astype(np.int64)
    lens = np.full(reads, nbytes, np.int64)
    t, total = time.perf_counter(), 0
    for i in range(0, reads, 50):
        total += reader.read(offs[i : i + 50], lens[i : i + 50])[2]
    rate = total / (time.perf_counter() - t) / 1e6
    reader.close()
    return rate


def cold(dataset: str, work: Path, n_queries: int = 2000) -> dict[str, Any]:
    """Single queries against an io=direct collection, 1 and 16 at a time."""
    ds = load_dataset(dataset)
    n_queries = min(n_queries, len(ds.queries))
    q, truth = ds.queries[:n_queries], ds.gt_ids[:n_queries, :K]
    out: dict[str, Any] = {"dataset": dataset, "queries": n_queries}
    with vecdb.connect(work / "cold") as c:
        _load(c, "g", np.arange(len(ds.base)), ds.base, ds.metric, {"io": "direct"})
        out["io"] = c.stats("g")["index"]["io"]
        for m in (32, 48, 64):
            for conc in (1, 16):

                def one(i: int, m: int = m) -> tuple[npt.NDArray[Any], float, float]:
                    t0 = time.perf_counter()
                    got = c.search("g", q[i], k=K, params={"max_postings": m}, with_stats=True)
                    took = time.perf_counter() - t0
                    return got.ids[0], took, float((got.stats or {}).get("bytes_read", 0.0))

                t = time.perf_counter()
                with ThreadPoolExecutor(conc) as pool:
                    res = list(pool.map(one, range(n_queries)))
                wall = time.perf_counter() - t
                lat = np.array([r[1] for r in res]) * 1e3
                nbytes = sum(r[2] for r in res) / n_queries  # each call's own reads
                out[f"max_postings={m},concurrency={conc}"] = {
                    "recall@10": _recall(np.stack([r[0] for r in res]), truth),
                    "qps": n_queries / wall,
                    "p50_ms": float(np.percentile(lat, 50)),
                    "p99_ms": float(np.percentile(lat, 99)),
                    "kb_read_per_query": nbytes / 1e3,
                    "mb_per_s": nbytes * n_queries / wall / 1e6,
                }
        posting = max((work / "cold").rglob("postings.*.bin"), key=lambda p: p.stat().st_size)
        out["device_mb_per_s_16_threads"] = _device(posting, 16)
        out["device_mb_per_s_1_thread"] = _device(posting, 1)
    return out


def scale(work: Path, n: int = 2_000_000, d: int = 64) -> dict[str, Any]:
    """A large synthetic set: build time here; memory, recall and QPS of the reopened index
    measured in a fresh process (freed build memory would otherwise hide the growth)."""
    spec = f"synthetic:{n}:{d}:7"
    ds = load_dataset(spec)
    np.save(work / "scale-q.npy", ds.queries[:1000])
    np.save(work / "scale-gt.npy", ds.gt_ids[:1000, :K])
    out: dict[str, Any] = {"dataset": spec, "raw_mib": ds.base.nbytes / 2**20}
    with vecdb.connect(work / "scale") as c:
        out["build_s"] = _load(c, "s", np.arange(n), ds.base, ds.metric)
    del ds
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "vecdb.bench.spann_extra",
            "--part",
            "scale-open",
            "--work",
            str(work),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    out.update(json.loads(child.stdout.strip().splitlines()[-1]))
    out["index_anon_pct_of_raw"] = 100 * out["index_anon_mib"] / out["raw_mib"]
    return out


def scale_open(work: Path) -> dict[str, Any]:
    """(Fresh process) warm the kernels on a tiny collection, then open and search."""
    q, truth = np.load(work / "scale-q.npy"), np.load(work / "scale-gt.npy")
    with vecdb.connect(work / "warm") as w:
        _load(w, "t", np.arange(20_000), q.repeat(20, 0)[:20_000], "l2")
        w.search("t", q[:10], k=K)
    before = read_status_kib()
    out: dict[str, Any] = {}
    with vecdb.connect(work / "scale") as c:
        for m in (16, 32, 64):
            t = time.process_time()
            found = c.search("s", q, k=K, params={"max_postings": m}).ids
            out[f"max_postings={m}"] = {
                "recall@10": _recall(found, truth),
                "qps_cpu": len(q) / (time.process_time() - t),
            }
        after = read_status_kib()
        st = c.stats("s")["index"]
        out["index_anon_mib"] = (after["RssAnon"] - before["RssAnon"]) / 1024
        out["page_cache_rssfile_mib"] = (after["RssFile"] - before["RssFile"]) / 1024
        out["posting_file_mib"] = st.get("posting_file_bytes", 0) / 2**20
        out["bytes_on_disk_mib"] = st.get("bytes_on_disk", 0) / 2**20
        out["heads"] = st.get("heads")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="glove-50")
    ap.add_argument("--part", default="churn,cold,scale")
    ap.add_argument("--scale-n", type=int, default=2_000_000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "scale-open":  # the fresh child process of `scale`
        print(json.dumps(scale_open(args.work)))
        return
    work = Path(tempfile.mkdtemp(prefix="vecdb-spann-extra-", dir="/var/tmp"))
    results: dict[str, Any] = {}
    try:
        for part in args.part.split(","):
            t = time.perf_counter()
            if part == "churn":
                results[part] = churn(args.dataset, work)
            elif part == "cold":
                results[part] = cold(args.dataset, work)
            elif part == "scale":
                results[part] = scale(work, n=args.scale_n)
            else:
                raise SystemExit(f"unknown part {part!r} (churn, cold, scale)")
            results[part]["seconds"] = time.perf_counter() - t
            print(json.dumps({part: results[part]}, indent=1), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
