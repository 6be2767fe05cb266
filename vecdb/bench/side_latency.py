"""Single-query latency of several systems side by side, at one recall (issue 12).

`vecdb bench` times each system's single-query latency right after its own sweep, minutes
apart from the peers'. On a shared machine the same peer setting moved 20% between two
such runs (hnswlib ef 100 p50 0.269 -> 0.327 ms on GloVe-50), more than the gap a target
compares. Here every system is built (or loaded from a kept directory), its recall is
measured over its sweep on the query set, the two settings bracketing the target recall
are kept, and then all kept (system, setting) pairs are timed in the same process, in
blocks of consecutive queries: each block runs every pair once, in a fresh random order,
so a slow spell of the machine falls on all of them alike. A pair's p50 and p99 are taken
per round over its queries, then the median over rounds; a system's figure at the target
is interpolated linearly in recall between its two settings (or is its one setting's, when
that one reaches the target exactly or the sweep has nothing below it: then it is an upper
bound, and says so). Ratios are ours / peer on those interpolated figures.

Usage: `python -m vecdb.bench.side_latency --dataset glove-50 --systems vecdb-spann,hnswlib
--config bench/glove50_speed.json --target 0.95 --rounds 5 --reuse DIR --out FILE`.
Writes one JSON; prints a markdown table. Owns no engine code; uses the bench's systems.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench import metrics
from vecdb.bench.datasets import load_dataset
from vecdb.bench.options import at_least, finish
from vecdb.bench.systems import Params, System, expand_sweep, make_system

K = 10
F32 = npt.NDArray[np.float32]


def bracket(points: Sequence[tuple[float, Params]], target: float) -> list[tuple[float, Params]]:
    """Of (recall, params) points, the ones to time for `target`: the lowest recall at or
    above it and the highest below it (recall order); only the one at or above when none
    is below; none when nothing reaches it."""
    above = [p for p in points if p[0] >= target]
    below = [p for p in points if p[0] < target]
    if not above:
        return []
    out = [min(above, key=lambda p: p[0])]
    if below and out[0][0] > target:
        out.insert(0, max(below, key=lambda p: p[0]))
    return out


def at_target(points: Sequence[tuple[float, float]], target: float) -> float:
    """The value at `target` recall from one or two (recall, value) points: linear between
    two, the point's own with one."""
    if len(points) == 1:
        return points[0][1]
    (r0, v0), (r1, v1) = sorted(points)
    if r1 == r0:
        return min(v0, v1)
    return v0 + (v1 - v0) * (target - r0) / (r1 - r0)


def alternate(
    searchers: dict[Hashable, tuple[Callable[[], None], Callable[[int], object]]],
    n_queries: int,
    rounds: int,
    block: int,
    seed: int = 0,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[Hashable, list[tuple[float, float]]]:
    """Per round, the (p50, p99) ms of each searcher (prepare, run) over queries
    0..n_queries-1. The queries go in blocks of `block`; in each block every searcher is
    prepared (its parameters set) and runs once untimed on the block's first query, then
    times the block's queries, the searchers in a fresh seeded random order per block."""
    rng = random.Random(seed)
    keys = list(searchers)
    out: dict[Hashable, list[tuple[float, float]]] = {key: [] for key in keys}
    for _ in range(rounds):
        lat: dict[Hashable, list[float]] = {key: [] for key in keys}
        for lo in range(0, n_queries, block):
            hi = min(lo + block, n_queries)
            order = keys[:]
            rng.shuffle(order)
            for key in order:
                prepare, run = searchers[key]
                prepare()
                run(lo)  # its caches and pages, not the previous searcher's
                for i in range(lo, hi):
                    t0 = clock()
                    run(i)
                    lat[key].append((clock() - t0) / 1e6)
        for key in keys:
            p50, p99 = np.percentile(np.asarray(lat[key]), [50.0, 99.0])
            out[key].append((float(p50), float(p99)))
    return out


def _system(
    name: str, ds: Any, config: dict[str, Any], work: Path, log: Callable[[str], None]
) -> System:
    """`name` built on the dataset with all threads in work/name, or loaded from there when
    that directory holds a build with the same build parameters."""
    cfg = config.get("systems", {}).get(name, {})
    system = make_system(
        name, ds.metric, int(ds.base.shape[1]), len(ds.base), cfg.get("build", {}), cfg.get("base")
    )
    system.import_libraries()
    d = work / name
    marker = d / "built.json"  # the build parameters of what the directory holds
    wanted = json.dumps(system.build_params, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        system.load(d)
        log(f"{name}: loaded from {d}")
    else:  # nothing there, or a build with other parameters: built again
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        system.set_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        system.build(ds.base, d)
        system.save(d)
        system.load(d)
        marker.write_text(wanted)
        log(f"{name}: built in {time.perf_counter() - t:.1f} s")
    system.set_threads(1)
    return system


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    ds = load_dataset(args.dataset)
    q, gt = ds.queries[: args.queries], ds.gt_ids[: args.queries]
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    names = [s for s in args.systems.split(",") if s]
    keep = args.reuse is not None
    work = Path(args.reuse) if keep else Path(tempfile.mkdtemp(prefix="side-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "dataset": ds.name,
        "queries": len(q),
        "target": args.target,
        "rounds": args.rounds,
        "block": args.block,
        "systems": {},
    }
    systems: dict[str, System] = {}
    try:
        searchers: dict[Hashable, tuple[Callable[[], None], Callable[[int], object]]] = {}
        for name in names:
            system = systems[name] = _system(name, ds, config, work, log)
            sweep = expand_sweep(
                config.get("systems", {}).get(name, {}).get("sweep", system.default_sweep)
            )
            points = []
            for params in sweep:
                system.set_params(params)
                found = system.search(q, K)
                rec = metrics.recall_at_k(ds.base, q, ds.metric, gt, found, K)
                points.append((float(rec), dict(params)))
            chosen = bracket(points, args.target)
            out["systems"][name] = {
                "is_ours": system.is_ours,
                "sweep": [{"recall_at_10": r, "params": p} for r, p in points],
                "timed": [{"recall_at_10": r, "params": p} for r, p in chosen],
            }
            log(f"{name}: timing {[(round(r, 4), p) for r, p in chosen]}")
            for j, (_, params) in enumerate(chosen):
                searchers[(name, j)] = _searcher(system, params, q)
        per_round = alternate(searchers, len(q), args.rounds, args.block, args.seed)
        for name in names:
            entry = out["systems"][name]
            pts50, pts99 = [], []
            for j, row in enumerate(entry["timed"]):
                rounds = per_round[(name, j)]
                row["p50_ms"] = float(np.median([a for a, _ in rounds]))
                row["p99_ms"] = float(np.median([b for _, b in rounds]))
                row["rounds"] = rounds
                pts50.append((row["recall_at_10"], row["p50_ms"]))
                pts99.append((row["recall_at_10"], row["p99_ms"]))
            if pts50:
                entry["p50_at_target_ms"] = at_target(pts50, args.target)
                entry["p99_at_target_ms"] = at_target(pts99, args.target)
                # one setting above the target and none below: an upper bound
                entry["upper_bound"] = len(pts50) == 1 and pts50[0][0] > args.target
    finally:
        for system in systems.values():
            system.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _searcher(
    system: System, params: Params, q: F32
) -> tuple[Callable[[], None], Callable[[int], object]]:
    def prepare() -> None:
        system.set_params(params)

    def one(i: int) -> object:
        return system.search(q[i : i + 1], K)

    return prepare, one


def table(out: dict[str, Any]) -> str:
    """The markdown of a run: each system at the target, then ours / each peer."""
    target = out["target"]
    lines = [
        f"| system | settings timed (recall@10) | p50 ms @ {target} | p99 ms @ {target} |",
        "|---|---|---|---|",
    ]
    got = {n: e for n, e in out["systems"].items() if "p50_at_target_ms" in e}
    for name, e in out["systems"].items():
        timed = (
            "; ".join(
                f"{json.dumps(t['params'])} ({t['recall_at_10']:.4f}): {t['p50_ms']:.3f} / {t['p99_ms']:.3f}"
                for t in e["timed"]
            )
            or f"none reaches {target}"
        )
        bound = "<= " if e.get("upper_bound") else ""
        p50 = f"{bound}{e['p50_at_target_ms']:.3f}" if name in got else "-"
        p99 = f"{bound}{e['p99_at_target_ms']:.3f}" if name in got else "-"
        lines.append(f"| {name} | {timed} | {p50} | {p99} |")
    ours = [n for n in got if got[n]["is_ours"]]
    peers = [n for n in got if not got[n]["is_ours"]]
    if ours and peers:
        lines += ["", "| ours / peer | p50 | p99 |", "|---|---|---|"]
        for a in ours:
            for b in peers:
                r50 = got[a]["p50_at_target_ms"] / got[b]["p50_at_target_ms"]
                r99 = got[a]["p99_at_target_ms"] / got[b]["p99_at_target_ms"]
                lines.append(f"| {a} / {b} | {r50:.2f}x | {r99:.2f}x |")
    return "\n".join(lines)


def _recall(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a recall in (0, 1], got {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="glove-50")
    ap.add_argument("--systems", default="vecdb-spann,hnswlib")
    ap.add_argument("--config", default=None, help="a bench JSON config (build and sweep)")
    ap.add_argument("--queries", type=at_least(1), default=1000)
    ap.add_argument("--target", type=_recall, default=0.95)
    ap.add_argument("--rounds", type=at_least(1), default=5)
    ap.add_argument("--block", type=at_least(1), default=100, help="queries per alternation block")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", default=None, help="keep the built systems here (reused if there)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    finish(run(args), args.out, table)


if __name__ == "__main__":
    main()
