"""Multi-tenant documents: one shared collection against a private collection per tenant.

`python -m vecdb.bench.multivector.tenants --tier t2 --json FILE` owns this comparison on one
tier's documents. Each document gets an owner drawn by `--shares` (tenant i holds share i of
the documents, the rest go to a last tenant), and `--grant-share` of them are granted to one
more tenant. Built through the engine (`vecdb.engine.Database`, default index parameters,
`optimize` so both are trained): (1) the shared collection, `multi_tenant=True`, every
document stored once; (2) per tenant, a plain collection of the documents it may see (owned
and granted: a granted document is stored twice). Every tier query is asked of every tenant
in both, the two calls in a fresh random order per query, at one thread (numba, BLAS and
OpenMP held to one). Per tenant: documents, recall@10 of each against exact MaxSim over the
tenant's own documents (tie-aware), latency p50 / p95 (ms, wall) and the share of searches the
engine answered exactly (a set no larger than the default pipeline's full scoring); in all:
stored tokens, the index's bytes besides the raw store (`index_bytes`) and the bytes on disk
of both layouts, and the build + optimize seconds. Writes the JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.multivector import metrics
from vecdb.bench.multivector.embed import MVData, load_tier
from vecdb.bench.multivector.run import limited_threads
from vecdb.bench.multivector.truth import exact_scores
from vecdb.engine.doc_rules import MAX_TOKENS_PER_REQUEST

K = metrics.K
SHARES = (0.4, 0.2, 0.1, 0.05, 0.02, 0.01)  # of the documents; the rest to a last tenant
GRANT_SHARE = 0.05  # documents also granted to one other tenant
SEED = 20261205
SHARED = "shared"
I64 = npt.NDArray[np.int64]


def synthetic(spec: str, directory: Path, n_queries: int, seed: int = SEED) -> MVData:
    """A seeded tier of `spec` = "DOCS:TOKENS:DIM" documents of about TOKENS unit tokens
    each (4-2x TOKENS), drawn around a few of many topic directions, and queries made of
    noisy tokens of random documents: the size and width a real corpus has, without one."""
    n_docs, tokens, dim = (int(x) for x in spec.split(":"))
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(64, n_docs // 20), dim)).astype(np.float32)
    sizes = rng.integers(max(1, tokens // 4), 2 * tokens + 1, size=n_docs)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    toks = np.empty((int(offsets[-1]), dim), np.float32)
    for d in range(n_docs):
        pick = rng.choice(len(centres), size=int(rng.integers(2, 6)), replace=False)
        n = int(sizes[d])
        toks[offsets[d] : offsets[d + 1]] = centres[
            rng.choice(pick, size=n)
        ] + 0.6 * rng.standard_normal((n, dim))
    toks /= np.linalg.norm(toks, axis=1, keepdims=True)
    m = 8
    src = rng.integers(n_docs, size=n_queries)
    q = np.concatenate([toks[offsets[d] + rng.integers(sizes[d], size=m)] for d in src])
    q += (0.5 / np.sqrt(dim)) * rng.standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return MVData(tier=f"synthetic:{spec}", tokens=toks, offsets=offsets, weights=None,
                  queries=q.astype(np.float32),
                  q_offsets=np.arange(0, m * (n_queries + 1), m, dtype=np.int64),
                  labels=src.astype(np.int64), directory=directory,
                  meta={"checksum": f"synthetic:{spec}:{n_queries}:{seed}"})  # fmt: skip


def assign(n_docs: int, shares: tuple[float, ...], grant_share: float, seed: int = SEED
           ) -> tuple[I64, dict[int, int]]:  # fmt: skip
    """(owner tenant number of each document, {document: the tenant it is also granted to})."""
    if any(s <= 0 for s in shares) or sum(shares) >= 1:
        raise ValueError(f"shares must be positive and sum below 1, got {shares}")
    rng = np.random.default_rng(seed)
    p = np.asarray([*shares, 1 - sum(shares)])
    owner = rng.choice(len(p), size=n_docs, p=p).astype(np.int64)
    grants: dict[int, int] = {}
    for d in rng.choice(n_docs, size=int(grant_share * n_docs), replace=False).tolist():
        other = int(rng.integers(len(p) - 1))
        grants[d] = other + (other >= owner[d])  # any tenant but the owner
    return owner, grants


def visible_docs(owner: I64, grants: dict[int, int], t: int) -> I64:
    """Sorted documents tenant `t` may see."""
    granted = [d for d, g in grants.items() if g == t]
    return np.unique(np.concatenate([np.flatnonzero(owner == t), np.asarray(granted, np.int64)]))


def _chunks(data: MVData, docs: list[int]) -> list[list[int]]:
    """`docs` in consecutive runs holding at most MAX_TOKENS_PER_REQUEST tokens each."""
    out: list[list[int]] = [[]]
    tokens = 0
    for d in docs:
        n = int(data.offsets[d + 1] - data.offsets[d])
        if out[-1] and tokens + n > MAX_TOKENS_PER_REQUEST:
            out.append([])
            tokens = 0
        out[-1].append(d)
        tokens += n
    return [c for c in out if c]


def _load(db: Any, name: str, data: MVData, docs: list[int], **tenant: Any) -> None:
    for part in _chunks(data, docs):
        db.upsert_documents(name, part, [data.doc(d) for d in part], **tenant)


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def index_bytes(db: Any, name: str) -> int:
    """What search reads of a document index besides the raw store: the codebook (float32,
    and the bfloat16 copy queries are scored against), every encoded token's codes,
    residuals and sign bits (`bytes_per_token`), and the postings."""
    st = db.stats(name)["index"]
    per = st.get("bytes_per_token", {})
    tokens = int(st.get("encoded_tokens", 0))
    coded = sum(float(per.get(t, 0.0)) for t in ("codes", "residuals", "signs", "tier"))
    return int(6 * st.get("K", 0) * st["dim"] + tokens * coded + st.get("postings_bytes", 0))


def build(data: MVData, owner: I64, grants: dict[int, int], work: Path) -> dict[str, Any]:
    """The shared database (one multi-tenant collection) and the private one (a collection
    per tenant), both optimized; returns them open with their build seconds."""
    from vecdb.engine import Database

    n_t = int(owner.max()) + 1
    shared = Database(work / "shared")
    t0 = time.perf_counter()
    shared.create_collection(SHARED, data.dim, "cosine", kind="multivector", multi_tenant=True)
    for t in range(n_t):
        shared.create_tenant(SHARED, f"t{t}")
    for t in range(n_t):
        own = np.flatnonzero(owner == t).tolist()
        by_grantee: dict[int | None, list[int]] = {}
        for d in own:
            by_grantee.setdefault(grants.get(d), []).append(d)
        for g, docs in by_grantee.items():
            extra = {} if g is None else {"grant_to": [f"t{g}"]}
            _load(shared, SHARED, data, docs, tenant=f"t{t}", **extra)
    shared.optimize(SHARED)
    shared_s = time.perf_counter() - t0
    private = Database(work / "private")
    t0 = time.perf_counter()
    for t in range(n_t):
        name = f"t{t}"
        private.create_collection(name, data.dim, "cosine", kind="multivector")
        _load(private, name, data, visible_docs(owner, grants, t).tolist())
        private.optimize(name)
    private_s = time.perf_counter() - t0
    return {"shared": shared, "private": private, "shared_build_s": shared_s,
            "private_build_s": private_s, "shared_index_bytes": index_bytes(shared, SHARED),
            "private_index_bytes": sum(index_bytes(private, f"t{t}") for t in range(n_t))}  # fmt: skip


def measure(
    data: MVData, owner: I64, grants: dict[int, int], dbs: dict[str, Any], n_queries: int,
    rounds: int = 1,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per tenant: recall@10 vs exact within its documents and latency, both layouts, the
    two calls alternated in a fresh random order per query."""
    truth = exact_scores(data)
    n = min(n_queries, data.n_queries)
    rng = np.random.default_rng(SEED)
    rows = []
    with limited_threads(1):
        for t in range(int(owner.max()) + 1):
            vis = visible_docs(owner, grants, t)
            name = f"t{t}"
            calls: dict[str, Callable[[Any], Any]] = {
                "shared": partial(dbs["shared"].search_documents, SHARED, k=K, tenant=name),
                "private": partial(dbs["private"].search_documents, name, k=K),
            }
            ms: dict[str, list[list[float]]] = {s: [[] for _ in range(n)] for s in calls}
            recall: dict[str, list[float]] = {s: [] for s in calls}
            exact: dict[str, list[float]] = {s: [] for s in calls}
            for j in range(min(3, n)):  # warm-up
                for call in calls.values():
                    call(data.query(j))
            for r in range(max(1, rounds)):
                for j in range(n):
                    q = data.query(j)
                    for s in rng.permutation(list(calls)).tolist():
                        t0 = time.perf_counter()
                        res = calls[s](q)
                        ms[s][j].append((time.perf_counter() - t0) * 1e3)
                        if r == 0:
                            found = np.searchsorted(vis, res.ids[0][res.ids[0] >= 0])
                            recall[s].append(  # a tenant of fewer than K documents: all
                                metrics.recall_vs_exact(truth[j, vis], found, min(K, len(vis)))
                            )
                            exact[s].append(float(res.stats.get("exact", 0.0)))
            row: dict[str, Any] = {"tenant": f"t{t}", "docs": len(vis),
                                   "share": round(len(vis) / data.n_docs, 4)}  # fmt: skip
            for s in calls:
                lat = [float(np.median(x)) for x in ms[s]]
                row[s] = {"recall": float(np.mean(recall[s])), "p50_ms": float(np.median(lat)),
                          "p95_ms": float(np.percentile(lat, 95)),
                          "exact_share": float(np.mean(exact[s]))}  # fmt: skip
            rows.append(row)
    return rows


def run(data: MVData, shares: tuple[float, ...], grant_share: float, n_queries: int,
        rounds: int, work: Path) -> dict[str, Any]:  # fmt: skip
    owner, grants = assign(data.n_docs, shares, grant_share)
    dbs = build(data, owner, grants, work)
    try:
        tenants = measure(data, owner, grants, dbs, n_queries, rounds)
        private_tokens = sum(
            int(np.diff(data.offsets)[visible_docs(owner, grants, t)].sum())
            for t in range(int(owner.max()) + 1)
        )
        out: dict[str, Any] = {
            "tier": data.tier, "docs": data.n_docs, "tokens": int(len(data.tokens)),
            "dim": data.dim, "queries": min(n_queries, data.n_queries), "rounds": rounds,
            "shares": list(shares), "grant_share": grant_share, "granted": len(grants),
            "tenants": tenants,
            "shared": {"stored_tokens": int(len(data.tokens)), "build_s": dbs["shared_build_s"],
                       "index_bytes": dbs["shared_index_bytes"]},
            "private": {"stored_tokens": private_tokens, "build_s": dbs["private_build_s"],
                        "index_bytes": dbs["private_index_bytes"]},
        }  # fmt: skip
    finally:
        dbs["shared"].close()
        dbs["private"].close()
    out["shared"]["disk_bytes"] = _disk(work / "shared")
    out["private"]["disk_bytes"] = _disk(work / "private")
    return out


def table(r: dict[str, Any]) -> str:
    """The report's markdown table and its totals line."""
    lines = [
        "| tenant | documents | share | recall@10 shared | private | p50 ms shared | private "
        "| p95 ms shared | private | exact searches shared | private |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r["tenants"]:
        s, p = t["shared"], t["private"]
        lines.append(
            f"| {t['tenant']} | {t['docs']:,} | {t['share']:.3f} | {s['recall']:.3f} | "
            f"{p['recall']:.3f} | {s['p50_ms']:.2f} | {p['p50_ms']:.2f} | {s['p95_ms']:.2f} | "
            f"{p['p95_ms']:.2f} | {s['exact_share']:.2f} | {p['exact_share']:.2f} |"
        )
    sh, pr = r["shared"], r["private"]
    lines += [
        "",
        f"Stored tokens: shared {sh['stored_tokens']:,}, private {pr['stored_tokens']:,} "
        f"({pr['stored_tokens'] / sh['stored_tokens']:.2f}x); disk: shared "
        f"{sh['disk_bytes'] / 2**20:.1f} MiB, private {pr['disk_bytes'] / 2**20:.1f} MiB "
        f"({pr['disk_bytes'] / sh['disk_bytes']:.2f}x); index (codebook, codes, residuals, "
        f"signs, postings): shared {sh['index_bytes'] / 2**20:.1f} MiB, private "
        f"{pr['index_bytes'] / 2**20:.1f} MiB ({pr['index_bytes'] / sh['index_bytes']:.2f}x); "
        "build + optimize: shared "
        f"{sh['build_s']:.1f} s, private {pr['build_s']:.1f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", default="t2", help="multivector tier (t1-static, t1-ctx, t2[:N]) "
                    "or synthetic:DOCS:TOKENS:DIM")  # fmt: skip
    ap.add_argument("--cache-dir", type=Path, default=Path("~/.cache/vecdb-bench"))
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds (median per query)")
    ap.add_argument("--shares", default=",".join(map(str, SHARES)))
    ap.add_argument("--grant-share", type=float, default=GRANT_SHARE)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    args = ap.parse_args(argv)
    if args.tier.startswith("synthetic:"):
        where = args.cache_dir.expanduser() / f"mv-{args.tier.replace(':', '-')}"
        data = synthetic(args.tier.removeprefix("synthetic:"), where, args.queries)
    else:
        data = load_tier(args.tier, args.cache_dir, progress=print)
    shares = tuple(float(x) for x in args.shares.split(","))
    work = Path(tempfile.mkdtemp(prefix="vecdb-mvtenants-"))
    try:
        r = run(data, shares, args.grant_share, args.queries, args.rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
