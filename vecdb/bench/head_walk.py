"""The head walk alone, per form of the head vectors (issue 12): int8, float16, float32.

A single SPANN query starts with a walk of the head graph (`HeadGraph.knn_query`), which
reads a few head vectors per step from scattered rows; with cold caches those reads are what
the query waits for. This bench takes `--heads` rows of a dataset's base as heads (a uniform
sample: the walk's cost depends on the rows' width and count, not on how they were chosen),
builds hnswlib's graph over them once (`assign.hnswlib_graph`) and copies that very graph
into a `HeadGraph` per form, so the forms differ in their vectors only, and reports for
each: the graph's bytes, its head recall (the share of each query's exact `--k` nearest
heads it returns, by the float32 rows), and the median time of one query's
`knn_query` (k = ef = `--k`, as a search asks for its postings) warm (queries back to back)
and cold (before each query `--flush-mib` MiB of other memory written, pushing the graph out
of the CPU caches). The forms are timed in turns, the order changing every round, so a slow
spell of the machine falls on all of them.

Usage: `python -m vecdb.bench.head_walk --dataset minilm-384 --heads 4400 --k 22 --rounds 5
--out FILE`. Writes one JSON; prints a markdown table. Owns no engine code.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import load_dataset
from vecdb.bench.options import at_least, finish
from vecdb.index.params import HEAD_DTYPES, BuildParams
from vecdb.index.spann.assign import hnswlib_graph
from vecdb.index.spann.headgraph import HeadGraph
from vecdb.index.spann.state import head_space

F32 = npt.NDArray[np.float32]


def graphs(heads: F32, metric: str, forms: list[str], threads: int) -> dict[str, HeadGraph]:
    """One hnswlib graph over the rows (the default build parameters), as a `HeadGraph` of
    each form."""
    p = BuildParams.parse(None)
    raw = hnswlib_graph(heads, metric, p, threads)
    space, dim, efc = head_space(metric), heads.shape[1], p.head_ef_construction
    return {form: HeadGraph.from_hnswlib(raw, space, dim, efc, form) for form in forms}


def exact_heads(heads: F32, queries: F32, metric: str, k: int) -> npt.NDArray[np.int64]:
    """Each query's k nearest heads by the float32 rows (the metric's order)."""
    if metric in ("ip", "cosine"):
        score = -(queries @ heads.T)
    else:
        score = (queries**2).sum(1)[:, None] - 2 * queries @ heads.T + (heads**2).sum(1)[None]
    out: npt.NDArray[np.int64] = np.argsort(score, axis=1, kind="stable")[:, :k]
    return out


def head_recall(g: HeadGraph, queries: F32, truth: npt.NDArray[np.int64], k: int) -> float:
    found, _ = g.knn_query(queries, k=k)
    hits = [len(set(found[i].tolist()) & set(truth[i].tolist())) for i in range(len(queries))]
    return float(np.mean(hits)) / k


def time_walks(
    gs: dict[str, HeadGraph], queries: F32, k: int, rounds: int, flush_mib: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Per form, per round: the median us of one query's walk warm and cold."""
    junk = np.ones(max(1, flush_mib) << 18, np.float32)  # flush_mib MiB
    half = len(queries) // 2
    order = list(gs)
    rng = random.Random(seed)
    out: dict[str, dict[str, list[float]]] = {f: {"warm": [], "cold": []} for f in gs}
    for _ in range(rounds):
        rng.shuffle(order)
        for form in order:
            g = gs[form]
            g.knn_query(queries[:1], k=k)  # this form's scratch and pages
            t = []
            for i in range(half):
                t0 = time.perf_counter()
                g.knn_query(queries[i : i + 1], k=k)
                t.append(time.perf_counter() - t0)
            out[form]["warm"].append(float(np.median(t)) * 1e6)
            t = []
            for i in range(half, len(queries)):
                junk += 1.0
                t0 = time.perf_counter()
                g.knn_query(queries[i : i + 1], k=k)
                t.append(time.perf_counter() - t0)
            out[form]["cold"].append(float(np.median(t)) * 1e6)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.dataset)
    rng = np.random.default_rng(args.seed)
    n = min(args.heads, len(ds.base))
    heads = np.ascontiguousarray(ds.base[rng.choice(len(ds.base), n, replace=False)], np.float32)
    queries = np.ascontiguousarray(ds.queries[: args.queries], np.float32)
    forms = [f for f in args.forms.split(",") if f]
    gs = graphs(heads, ds.metric, forms, args.threads)
    truth = exact_heads(heads, queries, ds.metric, args.k)
    times = time_walks(gs, queries, args.k, args.rounds, args.flush_mib, args.seed)
    rows = {
        form: {
            "graph_bytes": g.nbytes(),
            "head_recall": head_recall(g, queries, truth, args.k),
            "warm_us": times[form]["warm"],
            "cold_us": times[form]["cold"],
        }
        for form, g in gs.items()
    }
    return {
        "dataset": args.dataset,
        "dim": int(heads.shape[1]),
        "heads": n,
        "k": args.k,
        "queries": len(queries),
        "rounds": args.rounds,
        "flush_mib": args.flush_mib,
        "forms": rows,
    }


def table(out: dict[str, Any]) -> str:
    lines = [
        f"{out['dataset']} ({out['dim']}-d), {out['heads']:,} heads, k = ef = {out['k']}, "
        f"{out['queries']} queries, {out['rounds']} rounds (medians; cold: "
        f"{out['flush_mib']} MiB written before each query)",
        "",
        "| form | graph bytes | head recall | warm us (median, min-max) | cold us (median, min-max) |",
        "|---|---|---|---|---|",
    ]
    for form, r in out["forms"].items():
        w, c = r["warm_us"], r["cold_us"]
        lines.append(
            f"| {form} | {r['graph_bytes']:,} | {r['head_recall']:.4f} | "
            f"{np.median(w):.1f} ({min(w):.1f}-{max(w):.1f}) | "
            f"{np.median(c):.1f} ({min(c):.1f}-{max(c):.1f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="minilm-384")
    ap.add_argument("--heads", type=at_least(2), default=4400)
    ap.add_argument("--k", type=at_least(1), default=22)
    ap.add_argument("--forms", default=",".join(HEAD_DTYPES))
    ap.add_argument("--queries", type=at_least(2), default=600)
    ap.add_argument("--rounds", type=at_least(1), default=5)
    ap.add_argument("--flush-mib", type=at_least(1), default=32)
    ap.add_argument("--threads", type=at_least(1), default=2, help="hnswlib's build threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.forms.split(",")) - set(HEAD_DTYPES))
    if unknown:
        ap.error(f"unknown form(s) {unknown}: choose from {', '.join(HEAD_DTYPES)}")
    finish(run(args), args.out, table)


if __name__ == "__main__":
    main()
