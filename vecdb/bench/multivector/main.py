"""`vecdb bench --multivector TIERS`: the run over several tiers and their report sections.

Owns resolving the command's options against the config (`queries`, `latency_queries`,
`latency_rounds`, `threads` from the config unless given on the command line), running each tier in turn
(`run.run_tier`) and writing its RESULTS.md section (`report.write_mv_report`, label
`mv-<tier>` or `--section`-<tier>). Knows nothing of click: the CLI turns `VecdbError` into
its own error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vecdb.bench.datasets import DEFAULT_CACHE_DIR
from vecdb.bench.environment import load_average
from vecdb.bench.multivector.configs import load_config, parse_entries
from vecdb.bench.multivector.embed import parse_tier
from vecdb.bench.multivector.report import write_mv_report
from vecdb.bench.multivector.run import MVOptions, run_tier
from vecdb.errors import InvalidArgument

DEFAULT_QUERIES, DEFAULT_LATENCY_QUERIES, DEFAULT_THREADS = 300, 100, (1, 2)
DEFAULT_LATENCY_ROUNDS = 3  # timings per query and setting, alternated (run.latency)


def _pick(o: dict[str, Any], cfg: dict[str, Any], name: str, cfg_name: str, default: Any) -> Any:
    """The command line's value when given there, else the config's, else `default`."""
    if name in o.get("explicit", set()) and o.get(name) is not None:
        return o[name]
    return cfg.get(cfg_name, default)


def run_multivector(
    command: str,
    tiers: str,
    config_path: Path | None,
    o: dict[str, Any],
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Run every tier of the comma list `tiers`; returns (all rows, [first JSONL, files...])."""
    specs = [t.strip() for t in tiers.split(",") if t.strip()]
    if not specs:
        raise InvalidArgument("--multivector: give at least one tier (t1-static, t1-ctx, t2)")
    for spec in specs:
        parse_tier(spec)
    cfg = load_config(config_path)
    entries = parse_entries(cfg)
    threads = _pick(o, cfg, "threads", "threads", DEFAULT_THREADS)
    threads = tuple(range(1, threads + 1)) if isinstance(threads, int) else tuple(threads)
    rows: list[dict[str, Any]] = []
    written: list[Path] = []
    for spec in specs:
        t0, load_start = time.perf_counter(), load_average()
        opts = MVOptions(
            out_dir=o["out_dir"],
            cache_dir=o.get("cache_dir") or DEFAULT_CACHE_DIR,
            n_queries=int(_pick(o, cfg, "n_queries", "queries", DEFAULT_QUERIES)),
            latency_queries=int(
                _pick(o, cfg, "latency_queries", "latency_queries", DEFAULT_LATENCY_QUERIES)
            ),
            latency_rounds=int(cfg.get("latency_rounds", DEFAULT_LATENCY_ROUNDS)),
            threads=threads,
            time_limit_s=o.get("time_limit"),
        )
        log(f"multivector {spec}: {len(entries)} systems, threads {threads}")
        tier_rows, jsonl = run_tier(spec, entries, opts, log=log)
        label = f"{o['section']}-{spec}" if o.get("section") else f"mv-{spec}"
        header = {
            "dataset": spec,
            "label": label,
            "command": command,
            "seconds": time.perf_counter() - t0,
            "load_start": load_start,
            "load_end": load_average(),
        }
        md = o.get("results_md") or o["out_dir"] / "RESULTS.md"
        written += [jsonl, *write_mv_report(tier_rows, md, o["out_dir"] / "plots", header)]
        rows += tier_rows
    return rows, written
