"""The multi-vector benchmark run: one tier, every configured system, one JSONL row per setting.

Owns the order of work: prepare the tier and its exact truth, then per system and build
setting a build (all threads, timed), and per sweep setting a quality pass over every query
(all threads; fidelity vs exact MaxSim, effectiveness vs the labels, documents fully scored,
system counters). Every system stays open until one latency pass per thread count (numba,
BLAS/OpenMP and faiss limited together, a few warm-up queries first) times them all
alternated: for each query, one call of every setting in turn, in a fresh random order per
query (seeded), `latency_rounds` times over the first `latency_queries` queries; a setting's p50 / p95
are over queries of the per-query median across rounds, wall clock (`latency_*`) and process
CPU time (`latency_cpu_*`: at 1 thread the work without the time descheduled; at more
threads the sum over threads). The machine is shared, so a setting timed alone in one
sequential pass moved 2-10x with the load (bench/RESULTS.md, "Issue 11, a faster default pipeline
at one thread"); alternated, every setting sees the
same load. A system that fails gets an error row and the others go on; rows
are appended to `results-mv-<tier>.jsonl` once the latency pass is done. Must not format
results (see `report`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vecdb.bench.datasets import slugify
from vecdb.bench.environment import environment, package_versions
from vecdb.bench.multivector import metrics
from vecdb.bench.multivector.configs import Entry
from vecdb.bench.multivector.embed import MVData, load_tier
from vecdb.bench.multivector.systems import MVSystem, make_system
from vecdb.bench.multivector.truth import exact_ranking, exact_scores

K = metrics.K
WARMUP_QUERIES = 3
LATENCY_ORDER_SEED = 20261201  # the latency pass' per-query orders (reproducible)
EXTRA_PACKAGES = ("maxsim-cpu", "fast-plaid", "pyarrow", "threadpoolctl")
Row = dict[str, Any]


@dataclass
class MVOptions:
    """Everything a run needs besides the tier and the entries."""

    out_dir: Path
    cache_dir: Path
    n_queries: int = 300
    latency_queries: int = 100
    latency_rounds: int = 3  # each query timed this many times per setting (median taken)
    threads: tuple[int, ...] = (1, 2)
    time_limit_s: float | None = None  # per tier, soft: settings after it are skipped
    extra_env: dict[str, Any] = field(default_factory=dict)


@contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """numba, faiss and every BLAS / OpenMP pool threadpoolctl finds, at `n` threads."""
    import faiss
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, int(getattr(numba.config, "NUMBA_NUM_THREADS", n)))))
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        numba.set_num_threads(before)
        faiss.omp_set_num_threads(max(n, before))


def quality(
    system: MVSystem, data: MVData, scores: np.ndarray, exact_top: np.ndarray, params: Row
) -> Row:
    """Fidelity, effectiveness and work of one setting, averaged over every query."""
    acc: dict[str, list[float]] = {}

    def add(key: str, value: float | None) -> None:
        if value is not None:
            acc.setdefault(key, []).append(float(value))

    for j in range(data.n_queries):
        hits = system.search(data.query(j), K, params)
        s, top = scores[j], exact_top[j]
        add("recall_at_10", metrics.recall_vs_exact(s, hits.ids))
        add("ndcg_at_10_exact", metrics.ndcg_vs_exact(s, top, hits.ids))
        add("mass_ratio", metrics.mass_ratio(s, top, hits.ids))
        add("candidate_recall", metrics.candidate_recall(top, hits.candidates))
        mrr, ndcg, r10 = metrics.label_metrics(hits.ids, int(data.labels[j]))
        add("label_mrr_at_10", mrr)
        add("label_ndcg_at_10", ndcg)
        add("label_recall_at_10", r10)
        if hits.fully_scored >= 0:
            add("fully_scored_frac", hits.fully_scored / data.n_docs)
        if hits.candidates is not None:
            add("candidates", len(hits.candidates))
        for key in ("candidates", "maxsim_work_saved", "work_saved", "bytes_read"):
            if key in hits.stats and isinstance(hits.stats[key], int | float):
                add(key if key != "work_saved" else "maxsim_work_saved", hits.stats[key])
    return {k: float(np.mean(v)) for k, v in acc.items()}


@dataclass
class Setting:
    """One measured setting waiting for the latency pass: its system, search params, and
    its row so far."""

    system: MVSystem
    params: Row
    row: Row


def latency(
    settings: list[Setting], data: MVData, n: int, threads: int, rounds: int = 1
) -> list[Row]:
    """p50 / p95 ms of one search call per query at `threads`, every setting alternated per
    query (see the module docstring), one dict per setting (an error where a search failed:
    that setting leaves the pass, the others go on)."""
    n = min(n, data.n_queries)
    live = list(range(len(settings)))
    times = np.full((len(settings), max(1, rounds), n), np.nan)
    cpu = np.full_like(times, np.nan)
    failed: dict[int, str] = {}

    def call(i: int, q: np.ndarray) -> tuple[float, float]:
        s = settings[i]
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            s.system.search(q, K, s.params)
        except Exception as exc:  # one failing setting must not lose the others
            failed[i] = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - t0, time.process_time() - c0

    with limited_threads(threads):
        for j in range(min(WARMUP_QUERIES, n)):
            for i in live:
                if i not in failed:
                    call(i, data.query(j))
        rng = np.random.default_rng(LATENCY_ORDER_SEED)
        for r in range(max(1, rounds)):
            for j in range(n):
                q = data.query(j)
                # A fresh order per query: a rotation would keep each setting's predecessor,
                # and a predecessor that sweeps the caches (exact MaxSim over every token)
                # would slow the same setting every time.
                for i in rng.permutation(live).tolist():
                    if i not in failed:
                        times[i, r, j], cpu[i, r, j] = call(i, q)
    out: list[Row] = []
    for i in range(len(settings)):
        if i in failed:
            out.append({f"latency_error_{threads}t": failed[i]})
            continue
        row = {}
        for kind, t in (("", times[i]), ("cpu_", cpu[i])):
            p = metrics.percentiles(np.median(t, axis=0).tolist())
            row.update(
                {f"latency_{kind}{k.removesuffix('_ms')}_{threads}t_ms": v for k, v in p.items()}
            )
        out.append(row)
    return out


def exact_label_metrics(data: MVData, exact_top: np.ndarray) -> Row:
    """MRR@10 / nDCG@10 / recall@10 vs the labels of the exact MaxSim ranking itself."""
    m = [metrics.label_metrics(exact_top[j], int(data.labels[j])) for j in range(data.n_queries)]
    a = np.asarray(m, dtype=np.float64).mean(axis=0)
    return {"mrr_at_10": float(a[0]), "ndcg_at_10": float(a[1]), "recall_at_10": float(a[2])}


def run_tier(
    spec: str, entries: list[Entry], opts: MVOptions, log: Callable[[str], None] = print
) -> tuple[list[Row], Path]:
    """Measure every entry on the tier `spec`; returns the rows and the JSONL path."""
    start = time.perf_counter()
    deadline = None if opts.time_limit_s is None else start + opts.time_limit_s
    data = load_tier(spec, opts.cache_dir, opts.n_queries, progress=log)
    t0 = time.perf_counter()
    scores = exact_scores(data)
    truth_s = time.perf_counter() - t0
    exact_top = exact_ranking(scores, K)
    env = environment(max(opts.threads))
    env["packages"] = {**env["packages"], **package_versions(EXTRA_PACKAGES)}
    common: Row = {
        "run_id": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tier": spec,
        "n_docs": data.n_docs,
        "n_tokens": int(len(data.tokens)),
        "d": data.dim,
        "n_queries": data.n_queries,
        "mean_query_tokens": data.meta.get("mean_query_tokens"),
        "corpus_sha256": data.meta["inputs"]["corpus_sha256"],
        "exact_labels": exact_label_metrics(data, exact_top),
        "truth_seconds": round(truth_s, 2),
        "latency_queries": min(opts.latency_queries, data.n_queries),
        "latency_rounds": opts.latency_rounds,
        **env,
        **opts.extra_env,
    }
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = opts.out_dir / f"results-mv-{slugify(spec)}.jsonl"
    jsonl.write_text("")
    rows: list[Row] = []

    def emit(row: Row) -> None:
        full = {**common, **row}
        rows.append(full)
        with jsonl.open("a") as f:
            f.write(json.dumps(full) + "\n")

    settings: list[Setting] = []
    for entry in (e for e in entries if e.runs_on(spec)):
        for build in entry.builds:
            base = {"system": entry.label, "role": entry.role, "build_params": build}
            if deadline is not None and time.perf_counter() > deadline:
                emit({**base, "skipped": "time limit"})
                continue
            log(f"{spec}: {entry.label} build {build} ...")
            system = make_system(entry.system)
            try:
                t0 = time.perf_counter()
                with limited_threads(max(opts.threads)):
                    system.build(data, build)
                build_s = time.perf_counter() - t0
                extra = system.index_stats() if hasattr(system, "index_stats") else {}
                for params in entry.sweep:
                    if deadline is not None and time.perf_counter() > deadline:
                        emit({**base, "params": params, "skipped": "time limit"})
                        continue
                    with limited_threads(max(opts.threads)):
                        row = quality(system, data, scores, exact_top, params)
                    per_token = system.bytes_per_token(params)
                    if hasattr(system, "pruning_share"):
                        row["pruning_work_saved"] = 1.0 - float(system.pruning_share(params))
                    settings.append(Setting(system, params, {
                        **base, "params": params, "build_s": round(build_s, 3),
                        "bytes_per_token": per_token,
                        "bytes_per_token_total": float(sum(per_token.values())),
                        "index_stats": _jsonable(extra), "is_ours": system.is_ours, **row,
                    }))  # fmt: skip
            except Exception as exc:  # one failing system must not lose the others
                log(f"{spec}: {entry.label}: failed: {type(exc).__name__}: {exc}")
                emit({**base, "error": f"{type(exc).__name__}: {exc}"})
                system.close()
    try:
        for n in opts.threads:
            log(f"{spec}: latency at {n} thread(s), {len(settings)} settings alternated ...")
            for s, lat in zip(
                settings,
                latency(settings, data, opts.latency_queries, n, opts.latency_rounds),
                strict=True,
            ):
                s.row.update(lat)
        for s in settings:
            emit(s.row)
    finally:
        for system in {id(s.system): s.system for s in settings}.values():
            system.close()
    return rows, jsonl


def _jsonable(x: Any) -> Any:
    """`x` with numpy scalars and arrays turned into plain JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else f"array{list(x.shape)}"
    if isinstance(x, np.generic):
        return x.item()
    return x
