"""The multi-vector scale row: a large synthetic document collection (ColBERT / ColPali-style
token matrices) built and searched through the embedded SDK, against exact MaxSim.

    python -m vecdb.bench.multivector.scale_row --docs 20000 --tokens 128 --dim 128 \
        --queries 100 --out FILE.json --workdir /var/tmp [--timeout S] [--threads 1,2] \
        [--engine NAME=VALUE ...]

Run by hand, never in CI. Owns this protocol, and nothing else (the data generator, the exact
kernel, the recall definition and the thread pinning are the multi-vector bench's):

1. Data (fresh process): `tenants.synthetic("DOCS:TOKENS:DIM")` (documents of TOKENS/4 to
   2 x TOKENS unit tokens around topic directions, queries of 8 noisy tokens of random
   documents) written to .npy files in a work directory, so the later steps memory-map them
   instead of generating them again. Free disk space is checked first (raw and an estimate of
   the data directory); too little aborts before anything is written.
2. Exact (fresh process): MaxSim of every query against every document with the numba exact
   kernel of the bench's `exact-numba` system (`scoring.maxsim`, top-k by `scoring.top_k`);
   its scores are the ground truth, and its wall time per query at each thread count (p50 /
   p95) is the baseline the index is compared to ("x exact").
3. Build (fresh process, kernels warmed first on a tiny throwaway collection): create a
   kind="multivector" cosine collection, `upsert_documents` in batches (at most --batch-docs
   documents and MAX_TOKENS_PER_REQUEST tokens a call), then `optimize(wait=True)`; ingest and
   optimize timed apart, and each upsert call (p50 / p99 / max: a write held up by a
   background training shows in the tail), the codebooks published while the upserts ran and
   trained in all (the index's generation), under the database's `--engine` settings; RssAnon
   of this process and every child it starts sampled (peak growth over the baseline) and the
   bytes of the data directory (peak, and at rest after close); the index's own stats (K,
   bytes per token of each tier, postings).
4. Search (fresh process, kernels warmed the same way): open the data directory, then per
   thread count (numba, BLAS and OpenMP pinned together, as the bench's latency pass does) a
   few warm-up queries and one `search_documents(k=10)` per query: wall p50 / p95, tie-aware
   recall@10 against the exact scores, documents fully scored, bytes read and the share of
   searches the engine answered exactly; RssAnon growth of opening and searching (the
   index-resident memory).

Every step runs in a fresh process under one deadline for the whole run (`--timeout`): a step
that would overrun it is killed (its process group) and the JSON says so; the steps after a
failed one are skipped. The JSON is rewritten after every step. The work directory is deleted
at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.multivector import metrics
from vecdb.bench.multivector.embed import MVData
from vecdb.bench.options import add_engine_option, engine_settings
from vecdb.index.multivector.inputs import doc_steps
from vecdb.storage.disk import du

K = metrics.K
COLLECTION = "docs"
BATCH_DOCS = 200  # documents per upsert_documents call (fewer where the token cap binds)
WARMUP_QUERIES = 3  # untimed searches per thread count before the timed ones
WARM_SPEC = (200, 32)  # documents, tokens of the throwaway collection that warms the kernels
DB_X_RAW = 4.5  # data directory at its peak over the raw float32 bytes (4.2x measured at 5k docs)
MEAN_TOKENS_X = 1.125  # synthetic's documents hold TOKENS/4 .. 2 TOKENS tokens: mean ~1.125 x
STDERR_TAIL = 40  # lines of a failed step's stderr kept in the JSON
MODULE = "vecdb.bench.multivector.scale_row"
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Result = dict[str, Any]


# --- the data on disk -------------------------------------------------------------------------


def corpus(work: Path) -> MVData:
    """The work directory's documents and queries (tokens memory-mapped) as the bench's
    `MVData`."""
    return MVData(tier="scale-row", tokens=np.load(work / "tokens.npy", mmap_mode="r"),
                  offsets=np.load(work / "offsets.npy"), weights=None,
                  queries=np.load(work / "queries.npy"), q_offsets=np.load(work / "q_offsets.npy"),
                  labels=np.zeros(0, np.int64), directory=work, meta={})  # fmt: skip


def batches(offsets: I64, batch_docs: int, cap: int | None = None) -> list[tuple[int, int]]:
    """Consecutive document ranges [lo, hi) of at most `batch_docs` documents and `cap` tokens
    (default: the engine's MAX_TOKENS_PER_REQUEST) each; a range is never empty."""
    from vecdb.engine.doc_rules import MAX_TOKENS_PER_REQUEST

    cap = MAX_TOKENS_PER_REQUEST if cap is None else cap
    return doc_steps(np.diff(offsets), cap, max(1, batch_docs))


def step_data(work: Path, docs: int, tokens: int, dim: int, n_queries: int) -> Result:
    """(Fresh process) generate the synthetic set and write it to the work directory."""
    from vecdb.bench.multivector.tenants import synthetic

    t0 = time.perf_counter()
    data = synthetic(f"{docs}:{tokens}:{dim}", work, n_queries)
    gen_s = time.perf_counter() - t0
    np.save(work / "tokens.npy", data.tokens)
    np.save(work / "offsets.npy", data.offsets)
    np.save(work / "queries.npy", data.queries)
    np.save(work / "q_offsets.npy", data.q_offsets)
    sizes = np.diff(data.offsets)
    per_doc = {"mean": float(sizes.mean()), "min": int(sizes.min()), "max": int(sizes.max())}
    return {
        "docs": data.n_docs,
        "tokens": int(len(data.tokens)),
        "dim": data.dim,
        "raw_bytes": int(data.tokens.nbytes),
        "raw_mib": data.tokens.nbytes / 2**20,
        "tokens_per_doc": per_doc,
        "queries": data.n_queries,
        "tokens_per_query": float(np.diff(data.q_offsets).mean()),
        "generate_s": gen_s,
        "write_s": time.perf_counter() - t0 - gen_s,
    }


# --- exact MaxSim -----------------------------------------------------------------------------


def _effective_threads() -> int:
    import numba

    return int(numba.get_num_threads())


def step_exact(work: Path, threads: list[int]) -> Result:
    """(Fresh process) exact MaxSim of every query, timed per query at each thread count: the
    `exact-numba` system's work (kernel over every document, then the top-k). The scores of
    the first pass are saved as the ground truth (every pass computes the same ones)."""
    from vecdb.bench.multivector import scoring
    from vecdb.bench.multivector.run import limited_threads
    from vecdb.bench.multivector.truth import exact_ranking

    c = corpus(work)
    scores = np.empty((c.n_queries, c.n_docs), np.float64)
    out: Result = {}
    for i, n in enumerate(threads):
        with limited_threads(n):
            scoring.maxsim(c.query(0), c.tokens, c.offsets)  # pages the tokens in; compiles
            took = []
            for j in range(c.n_queries):
                t0 = time.perf_counter()
                s = scoring.maxsim(c.query(j), c.tokens, c.offsets)
                scoring.top_k(s, K)
                took.append(time.perf_counter() - t0)
                if i == 0:
                    scores[j] = s
            out[f"threads={n}"] = {**metrics.percentiles(took),
                                   "numba_threads": _effective_threads()}  # fmt: skip
    np.save(work / "exact_scores.npy", scores)
    np.save(work / "exact_top.npy", exact_ranking(scores, K))
    return out


# --- the engine -------------------------------------------------------------------------------


def _warm_kernels(work: Path, dim: int) -> None:
    """Compile / load the build and search kernels on a tiny trained collection, so neither
    the memory nor the time of the JIT counts as the index's (not part of any number)."""
    import vecdb
    from vecdb.bench.multivector.tenants import synthetic

    docs, tokens = WARM_SPEC
    tiny = synthetic(f"{docs}:{tokens}:{dim}", work / "warm", 4, seed=1)
    with vecdb.connect(work / "warm") as w:
        w.create_collection("t", dim=dim, metric="cosine", kind="multivector")
        w.upsert_documents("t", list(range(docs)), [tiny.doc(i) for i in range(docs)])
        w.optimize("t", wait=True)
        for j in range(tiny.n_queries):
            w.search_documents("t", tiny.query(j), k=K)
    shutil.rmtree(work / "warm", ignore_errors=True)


def _parts(db: Path) -> dict[str, float]:
    """MiB of each top-level entry of the data directory (the KV store, the collections)."""
    out: dict[str, float] = {}
    for p in sorted(db.iterdir()):
        size = du(p)[0] if p.is_dir() else p.stat().st_size
        out[p.name] = size / 2**20
    return out


def _index_stats(st: dict[str, Any]) -> Result:
    """The numbers of the index's `stats()` this row reports."""
    keep = ("docs", "tokens", "encoded_tokens", "trained", "generation", "K", "bytes_per_token",
            "raw_bytes", "postings_bytes", "cell_docs_p50", "cell_docs_p99")  # fmt: skip
    return {k: st[k] for k in keep if k in st}


def step_build(work: Path, batch_docs: int, engine: dict[str, Any] | None = None) -> Result:
    """(Fresh process) create the collection, upsert in batches from the memory-mapped tokens,
    then optimize; memory and disk sampled throughout; `engine`: the database's engine
    settings (defaults when None)."""
    import vecdb
    from vecdb.bench.build_memory import children_anon_probe
    from vecdb.bench.sampler import Sampler, rss_anon_probe, status_kib

    c = corpus(work)
    _warm_kernels(work, c.dim)
    db = work / "db"
    parts = batches(c.offsets, batch_docs)
    gc.collect()
    before = status_kib()
    own, children = rss_anon_probe(), children_anon_probe()
    probes = {"anon": lambda: own() + children(), "children": children,
              "disk": lambda: float(du(db)[0])}  # fmt: skip
    with Sampler(probes, interval_s=0.1) as sampler:
        with vecdb.connect(db, engine=engine) as client:
            client.create_collection(COLLECTION, dim=c.dim, metric="cosine", kind="multivector")
            t0 = time.perf_counter()
            waits = []  # seconds of each upsert call (a write stalled by a training shows)
            for n, (lo, hi) in enumerate(parts):
                batch = [c.doc(i) for i in range(lo, hi)]
                tb = time.perf_counter()
                client.upsert_documents(COLLECTION, list(range(lo, hi)), batch)
                waits.append(time.perf_counter() - tb)
                if (n + 1) % max(1, len(parts) // 10) == 0:
                    print(f"  build: {hi:,} / {c.n_docs:,} documents upserted, "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
            t1 = time.perf_counter()
            # codebooks published while the upserts ran (the generation counts each training;
            # one still running when the upserts end is counted by the final generation only)
            ingest_generation = client.stats(COLLECTION)["index"].get("generation", 0)
            client.optimize(COLLECTION, wait=True)
            t2 = time.perf_counter()
            st = client.stats(COLLECTION)
            info = client.get_collection(COLLECTION)
            open_anon = status_kib()["RssAnon"]
        t3 = time.perf_counter()
    after = status_kib()
    rest = du(db)[0]
    return {
        "batches": len(parts),
        "ingest_s": t1 - t0,
        "upsert_ms": {
            q: round(1000 * float(np.percentile(waits, v)), 2)
            for q, v in (("p50", 50), ("p99", 99), ("max", 100))
        },
        "optimize_s": t2 - t1,
        "build_s": t2 - t0,
        "trainings_during_ingest": ingest_generation,
        "close_s": t3 - t2,
        "docs_per_s": c.n_docs / max(t2 - t0, 1e-9),
        "index_state": info.index_state,
        "indexed": info.indexed,
        "count": info.count,
        "build_peak_anon_mib": (sampler.max("anon") - before["RssAnon"]) / 1024,
        "build_child_peak_anon_mib": sampler.max("children") / 1024,
        "anon_after_build_mib": (open_anon - before["RssAnon"]) / 1024,
        "build_vmhwm_mib": after["VmHWM"] / 1024,
        "disk_peak_mib": sampler.max("disk") / 2**20,
        "disk_at_rest_mib": rest / 2**20,
        "disk_at_rest_parts_mib": _parts(db),
        "disk_at_rest_x_raw": rest / max(1, c.tokens.nbytes),
        "sampler_samples": len(sampler.times),
        "sampler_max_gap_ms": round(1000 * sampler.max_gap_s(), 1),
        "index": _index_stats(st["index"]),
    }


def _search_pass(client: Any, c: MVData, scores: npt.NDArray[np.float64]) -> Result:
    """Warm-up, then one timed search per query at the current thread setting."""
    for j in range(min(WARMUP_QUERIES, c.n_queries)):
        client.search_documents(COLLECTION, c.query(j), k=K)
    took: list[float] = []
    acc: dict[str, list[float]] = {"recall": [], "docs_scored": [], "bytes_read": [],
                                   "exact": [], "candidates": []}  # fmt: skip
    for j in range(c.n_queries):
        q = c.query(j)
        t0 = time.perf_counter()
        res = client.search_documents(COLLECTION, q, k=K)
        took.append(time.perf_counter() - t0)
        stats = dict(res.stats or {})
        acc["recall"].append(metrics.recall_vs_exact(scores[j], np.asarray(res.ids[0], np.int64)))
        for key in ("docs_scored", "bytes_read", "exact", "candidates"):
            acc[key].append(float(stats.get(key, float("nan"))))
    return {
        **metrics.percentiles(took),
        "recall@10": float(np.mean(acc["recall"])),
        "recall@10_min": float(np.min(acc["recall"])),
        "docs_scored_per_query": float(np.mean(acc["docs_scored"])),
        "docs_scored_share": float(np.mean(acc["docs_scored"])) / c.n_docs,
        "candidates_per_query": float(np.mean(acc["candidates"])),
        "kb_read_per_query": float(np.mean(acc["bytes_read"])) / 1e3,
        "exact_share": float(np.mean(acc["exact"])),
        "numba_threads": _effective_threads(),
    }


def step_search(work: Path, threads: list[int]) -> Result:
    """(Fresh process) open the data directory and search every query at each thread count;
    RssAnon growth of opening and of searching over a baseline taken after the warm-up (no
    sampler thread here: its wake-ups would land in the timed calls)."""
    import vecdb
    from vecdb.bench.multivector.run import limited_threads
    from vecdb.bench.sampler import status_kib

    c = corpus(work)
    scores = np.load(work / "exact_scores.npy")
    _warm_kernels(work, c.dim)
    with limited_threads(threads[0]):  # imports faiss and threadpoolctl before the baseline
        pass
    gc.collect()
    before = status_kib()
    out: Result = {}
    t0 = time.perf_counter()
    with vecdb.connect(work / "db") as client:
        client.search_documents(COLLECTION, c.query(0), k=K)
        out["open_s"] = time.perf_counter() - t0  # connect and the first search
        out["open_anon_mib"] = (status_kib()["RssAnon"] - before["RssAnon"]) / 1024
        for n in threads:
            with limited_threads(n):
                out[f"threads={n}"] = _search_pass(client, c, scores)
        gc.collect()
        after = status_kib()
        io = client.stats(COLLECTION)["index"]
    out["index_anon_mib"] = (after["RssAnon"] - before["RssAnon"]) / 1024
    out["rssfile_growth_mib"] = (after["RssFile"] - before["RssFile"]) / 1024
    out["index_queries_counted"] = io.get("queries")
    return out


# --- the run ----------------------------------------------------------------------------------


def _slurp(stream: IO[str], into: list[str]) -> None:
    """Read a child's stdout to the end (a pipe left unread would block a chatty child)."""
    into.append(stream.read())


def _echo(stream: IO[str], tail: collections.deque[str]) -> None:
    """Copy a child's stderr to ours line by line, keeping its last lines."""
    for line in stream:
        tail.append(line)
        sys.stderr.write(line)
    sys.stderr.flush()


def _child(step: str, work: Path, deadline: float, extra: list[str]) -> Result:
    """Run one step in a fresh process (its own process group), killed at the deadline; its
    result is the last JSON line of its stdout."""
    left = deadline - time.time()
    if left <= 0:
        return {"skipped": "deadline passed"}
    cmd = [sys.executable, "-m", MODULE, "--step", step, "--work", str(work), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    assert proc.stderr is not None and proc.stdout is not None
    echo = threading.Thread(target=_echo, args=(proc.stderr, tail), daemon=True)
    echo.start()
    chunks: list[str] = []
    reader = threading.Thread(target=_slurp, args=(proc.stdout, chunks), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the step and anything it started
        proc.wait()
        return {"killed": f"did not finish within {left:.0f} s (the run's deadline)"}
    finally:
        reader.join(5)
        echo.join(5)
    lines = [ln for ln in "".join(chunks).splitlines() if ln.startswith("{")]
    if code != 0 or not lines:
        return {"failed": code, "stderr": "".join(tail)[-4000:]}
    return dict(json.loads(lines[-1]))


def _finished(value: Result) -> bool:
    return not any(k in value for k in ("killed", "failed", "skipped"))


def _compare(res: Result, threads: list[int]) -> Result:
    """Per thread count: exact-numba p50 over the index's p50 (wall, the same queries)."""
    out: Result = {}
    for n in threads:
        ours = res.get("search", {}).get(f"threads={n}", {})
        exact = res.get("exact", {}).get(f"threads={n}", {})
        if ours.get("p50_ms") and exact.get("p50_ms"):
            out[f"threads={n}"] = exact["p50_ms"] / ours["p50_ms"]
    return out


def _disk_check(args: argparse.Namespace, work: Path) -> Result:
    """The estimated bytes the run needs against the free space; SystemExit if too little."""
    raw = args.docs * args.tokens * MEAN_TOKENS_X * args.dim * 4
    free = shutil.disk_usage(work).free
    need = raw * (1 + DB_X_RAW)
    if free < need:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"need ~{need / 2**30:.1f} GiB free under {work}, have {free / 2**30:.1f}")
    return {"raw_mib_estimate": raw / 2**20, "free_disk_mib_at_start": free / 2**20}


def run(args: argparse.Namespace) -> Result:
    """All steps in order, each in a fresh process; the result (also written to --out)."""
    from vecdb.bench.multivector.tenants import SEED

    deadline = time.time() + args.timeout
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vecdb-mv-scale-row-", dir=args.workdir))
    threads = [str(n) for n in args.threads]
    res: Result = {
        "dataset": f"synthetic:{args.docs}:{args.tokens}:{args.dim} "
        f"(vecdb.bench.multivector.tenants.synthetic, seed {SEED})",
        "command": " ".join([f"python -m {MODULE}", *sys.argv[1:]]),
        "k": K,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "timeout_s": args.timeout,
        **_disk_check(args, work),
        "engine_settings": args.engine or "defaults",
    }

    def save(step: str, value: Result, seconds: float) -> None:
        res[step] = dict(value, seconds=seconds, load_average_at_end=list(os.getloadavg()))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(res, indent=1) + "\n")

    steps: list[tuple[str, list[str]]] = [
        ("data", ["--docs", str(args.docs), "--tokens", str(args.tokens), "--dim",
                  str(args.dim), "--queries", str(args.queries)]),
        ("exact", ["--threads", ",".join(threads)]),
        ("build", ["--batch-docs", str(args.batch_docs), *(f"--engine={e}" for e in args.engine)]),
        ("search", ["--threads", ",".join(threads)]),
    ]  # fmt: skip
    try:
        ok = True
        for step, extra in steps:
            if not ok:
                save(step, {"skipped": "an earlier step did not finish"}, 0.0)
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {step} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            save(step, _child(step, work, deadline, extra), time.perf_counter() - t)
            ok = _finished(res[step])
        res["x_exact"] = _compare(res, args.threads)
        if args.keep:
            res["workdir_kept"] = str(work)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return res


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def _ms(q: Any) -> str:
    return " / ".join(_fmt(q.get(k), ".1f") for k in ("p50", "p99", "max")) if q else "-"


def summary(res: Result) -> str:
    """A few plain lines of the result for a person (the JSON has every number)."""
    lines = [f"multi-vector scale row: {res['dataset']}"]
    for step in ("data", "exact", "build", "search"):
        bad = {k: v for k, v in res.get(step, {}).items() if k in ("killed", "failed", "skipped")}
        if bad:
            lines.append(f"  {step}: {bad}")
    d = res.get("data", {})
    if "tokens" in d:
        lines.append(
            f"  data: {d['docs']:,} documents, {d['tokens']:,} tokens x {d['dim']} "
            f"({d['raw_mib']:,.1f} MiB float32), {d['queries']} queries of "
            f"{d['tokens_per_query']:.0f} tokens; generated in {d['seconds']:.1f} s"
        )
    b = res.get("build", {})
    if "build_s" in b:
        ix = b.get("index", {})
        per = ix.get("bytes_per_token", {})
        tiers = ", ".join(f"{k} {v:g}" for k, v in per.items())
        lines += [
            f"  build: ingest {b['ingest_s']:.1f} s (upsert call p50 / p99 / max "
            f"{_ms(b.get('upsert_ms'))} ms) + optimize {b['optimize_s']:.1f} s "
            f"({b['docs_per_s']:,.0f} documents/s); peak RssAnon +{b['build_peak_anon_mib']:,.0f}"
            f" MiB (children {b['build_child_peak_anon_mib']:,.0f}); data directory peak "
            f"{b['disk_peak_mib']:,.0f} MiB, at rest {b['disk_at_rest_mib']:,.0f} MiB "
            f"({b['disk_at_rest_x_raw']:.2f}x raw)",
            f"  index: K={ix.get('K')}, trained={ix.get('trained')} (codebooks: "
            f"{_fmt(b.get('trainings_during_ingest'), 'd')} in use when the upserts ended, "
            f"{_fmt(ix.get('generation'), 'd')} trained in all), encoded tokens "
            f"{_fmt(ix.get('encoded_tokens'), ',')}, postings "
            f"{_fmt(ix.get('postings_bytes', 0) / 2**20, '.1f')} MiB; bytes per token: {tiers}",
        ]
    s, e = res.get("search", {}), res.get("exact", {})
    rows = [n for n in res.get("threads", []) if f"threads={n}" in s]
    if rows:
        lines.append("  threads | p50 ms | p95 ms | recall@10 | docs scored | KB read | "
                     "exact share | exact-numba p50 ms | x exact")  # fmt: skip
        for n in rows:
            r, x = s[f"threads={n}"], e.get(f"threads={n}", {})
            lines.append(
                f"  {n:>7} | {r['p50_ms']:6.2f} | {r['p95_ms']:6.2f} | {r['recall@10']:9.4f} | "
                f"{r['docs_scored_per_query']:11.1f} | {r['kb_read_per_query']:7.1f} | "
                f"{r['exact_share']:11.2f} | {_fmt(x.get('p50_ms'), '18.2f')} | "
                f"{_fmt(res.get('x_exact', {}).get(f'threads={n}'), '7.1f')}"
            )
        lines.append(
            f"  search process: open {s['open_s']:.2f} s, RssAnon +{s['open_anon_mib']:,.1f} MiB "
            f"after opening, +{s['index_anon_mib']:,.1f} MiB after searching, RssFile "
            f"+{s['rssfile_growth_mib']:,.1f} MiB"
        )
    return "\n".join(lines)


def _threads(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads expects e.g. 1,2; got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--threads expects positive counts; got {text!r}")
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--tokens", type=int, default=128, help="about this many tokens a document")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--timeout", type=float, default=6 * 3600.0, help="seconds for all steps")
    ap.add_argument("--batch-docs", type=int, default=BATCH_DOCS)
    ap.add_argument("--threads", type=_threads, default=[1, 2], help="e.g. 1,2")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    add_engine_option(ap)
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)  # a fresh child step
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    return ap


def _run_step(args: argparse.Namespace) -> Result:
    steps: dict[str, Callable[[], Result]] = {
        "data": lambda: step_data(args.work, args.docs, args.tokens, args.dim, args.queries),
        "exact": lambda: step_exact(args.work, args.threads),
        "build": lambda: step_build(args.work, args.batch_docs, engine_settings(args.engine)),
        "search": lambda: step_search(args.work, args.threads),
    }
    return steps[args.step]()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.step:
        print(json.dumps(_run_step(args)), flush=True)
        return 0
    from vecdb.engine.doc_rules import MAX_TOKENS_PER_DOC

    if 2 * args.tokens > MAX_TOKENS_PER_DOC or min(args.docs, args.tokens, args.dim) < 1:
        raise SystemExit(f"--tokens must be in [1, {MAX_TOKENS_PER_DOC // 2}] (documents hold "
                         "up to 2x that), --docs and --dim positive")  # fmt: skip
    if args.queries < 1 or args.batch_docs < 1:
        raise SystemExit("--queries and --batch-docs must be positive")
    res = run(args)
    print(summary(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
