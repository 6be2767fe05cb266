"""Tenant search paths side by side on one embedded SPANN collection (issue 10, T2).

Owns a quick, self-contained measurement of `engine.tenant_search` below the tenant API:
tenants are Zipf-sized slot sets (random or clustered), and each sampled tenant's queries run
through (1) the routed tenant search, (2) the sub-tree walk forced (no exact path), (3) the
global walk with the tenant's `visible` set (the shared-index filter of before), (4) the
exact scan of the stored vectors (RocksDB) and (5) numpy over vectors held in memory (the
floor). Reports recall@10 against exact search over exactly the tenant's vectors, p50
latency (one call per query, wall), postings and bytes read per query, per size bucket,
and the memory the tenant structures add. Run: `python -m vecdb.bench.subtree_eval --n
390000` (GloVe-50). The full harness with peers is `vecdb bench --tenants`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np

import vecdb
from vecdb.bench.datasets import load_dataset
from vecdb.engine import tenant_search as ts
from vecdb.engine import validate as v
from vecdb.engine.reader import search_slots
from vecdb.index.base import Visible
from vecdb.kernels.scan import exact_topk

METRICS = ("rec", "ms", "post", "bytes", "first", "leaves", "size")
BUCKETS = (
    (0, 100, "<=100"),
    (101, 1000, "<=1k"),
    (1001, 10_000, "<=10k"),
    (10_001, 1 << 62, ">10k"),
)


def zipf_sizes(n: int, tenants: int, s: float, top_share: float) -> list[int]:
    return [max(1, round(top_share * n / (i**s))) for i in range(1, tenants + 1)]


def make_tenant(rng: np.random.Generator, x: np.ndarray, size: int, kind: str) -> np.ndarray:
    if kind == "random":
        return np.sort(rng.choice(len(x), size, replace=False))
    balls = 3
    out: list[np.ndarray] = []
    for _ in range(balls):
        c = x[rng.integers(len(x))]
        d = x @ c
        out.append(np.argpartition(-d, min(len(x) - 1, size))[: -(-size // balls)])
    members = np.unique(np.concatenate(out))
    return np.sort(members[:size] if len(members) > size else members)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset("glove-50")
    x = ds.base[: args.n]
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="t2-eval-")
    client = vecdb.connect(tmp)
    client.create_collection("g", dim=x.shape[1], metric="cosine", index="spann")
    t0 = time.perf_counter()
    for lo in range(0, len(x), 20_000):
        client.upsert("g", np.arange(lo, min(len(x), lo + 20_000)), x[lo : lo + 20_000])
    client.optimize("g", wait=True)
    build_s = time.perf_counter() - t0
    coll = client._db._get("g").core  # type: ignore[attr-defined]
    slot_of = np.asarray(coll.points.lookup([v.encode_id(int(i)) for i in range(len(x))]))
    sizes = zipf_sizes(len(x), args.tenants, args.zipf, args.top_share)
    k = 10
    rows: list[dict[str, Any]] = []
    for lo, hi, name in BUCKETS:
        picks = [i for i, s in enumerate(sizes) if lo <= s <= hi][: args.per_bucket]
        for kind in args.kinds:
            agg: dict[str, dict[str, list[float]]] = {}
            for t in picks:
                members = make_tenant(rng, x, sizes[t], kind)
                slots = np.sort(slot_of[members]).astype(np.int64)
                vis = Visible.from_slots(slots)
                xs = x[members]
                if kind == "random":
                    qs = ds.queries[rng.choice(len(ds.queries), args.queries, replace=False)]
                else:  # queries near the tenant's data
                    near = np.argsort(-(ds.queries[:20_000] @ xs.mean(0)))[: args.queries]
                    qs = ds.queries[near]
                gt = np.argsort(-(qs @ xs.T), axis=1, kind="stable")[:, :k]
                gt_slots = slot_of[members][gt]
                fns = systems(coll, slots, vis, xs, slot_of[members], t, args.walk)
                for i in range(len(qs)):  # systems interleaved per query: load hits all alike
                    for sysname, fn in fns.items():
                        a = agg.setdefault(sysname, {m: [] for m in METRICS})
                        before = _io(coll)
                        t1 = time.perf_counter()
                        got, _ = fn(qs[i : i + 1], k)
                        ms = (time.perf_counter() - t1) * 1e3
                        after = _io(coll)
                        want = min(k, len(members))
                        hit = len(set(got[0].tolist()) & set(gt_slots[i][:want].tolist()))
                        a["first" if i == 0 else "ms"].append(ms)
                        a["rec"].append(hit / want)
                        a["post"].append(after[0] - before[0])
                        a["bytes"].append(after[1] - before[1])
                        a["leaves"].append(after[2] - before[2])
                        a["size"].append(len(members))
            for sysname, a in agg.items():
                rows.append(
                    {
                        "bucket": name,
                        "kind": kind,
                        "system": sysname,
                        "tenants": len(picks),
                        "recall@10": round(float(np.mean(a["rec"])), 4),
                        "p50_ms": round(float(np.median(a["ms"])), 4),
                        "first_ms": round(float(np.mean(a["first"])), 4),
                        "postings/q": round(float(np.mean(a["post"])), 1),
                        "members/leaf": round(
                            float(np.sum(a["size"]) / max(1.0, float(np.sum(a["leaves"])))), 2
                        ),
                        "KiB/q": round(float(np.mean(a["bytes"])) / 1024, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    st = coll.index.state
    mem = {
        "build_s": round(build_s, 1),
        "index_resident_estimate_MiB": round(
            coll.index.stats()["resident_bytes_estimate"] / 2**20, 2
        ),
        "directory_cache_MiB": round(st.subtrees.nbytes / 2**20, 2),
        "directories_cached": len(st.subtrees),
        "copies_MiB": round(ts.store_of(coll).live_bytes / 2**20, 2),
    }
    print(json.dumps(mem), flush=True)
    client.close()
    return {"rows": rows, "memory": mem}


def _io(coll: Any) -> tuple[int, int, float]:
    with coll.io_lock:
        return coll.io.postings_read, coll.io.bytes_read, coll.io.extra.get("tenant_leaves", 0.0)


def systems(
    coll: Any,
    slots: np.ndarray,
    vis: Visible,
    xs: np.ndarray,
    mslots: np.ndarray,
    t: int,
    walks: list[str],
) -> dict[str, Any]:
    def routed(q: np.ndarray, k: int) -> Any:
        return ts.search_tenants(coll, q, k, None, [t], slots, vis)

    def walker(extra: dict[str, Any]) -> Any:
        def walk(q: np.ndarray, k: int) -> Any:
            return ts.search_tenants(coll, q, k, {"tenant_copy": 0, **extra}, [t], slots, vis)

        return walk

    def global_(q: np.ndarray, k: int) -> Any:
        return search_slots(coll, q, k, None, vis)

    def exact_db(q: np.ndarray, k: int) -> Any:
        found, base = ts.stored_vectors(coll, slots)
        rows, dist = exact_topk(q, base, "cosine", k)
        return found[rows], dist

    def exact_mem(q: np.ndarray, k: int) -> Any:
        rows, dist = exact_topk(q, xs, "cosine", k)
        return mslots[rows], dist

    out = {"routed": routed, "global": global_, "exact-rocksdb": exact_db, "exact-mem": exact_mem}
    for w in walks:
        out["walk" + w] = walker(json.loads(w))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=390_000)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--top-share", type=float, default=0.05)
    p.add_argument("--per-bucket", type=int, default=8)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--kinds", nargs="+", default=["random", "clustered"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--walk", nargs="+", default=["{}"], help="tenant_* params of walks (JSON)")
    args = p.parse_args()
    res = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
