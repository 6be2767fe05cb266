"""`vecdb bench --filter-selectivity ...`: from the command's options to the written report.

Owns the filtered run's order: selectivities and filter options (the config's "filter"
object), dataset, systems, run, report. The command line itself is `vecdb.cli.bench`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vecdb.bench.datasets import load_dataset
from vecdb.bench.environment import load_average
from vecdb.bench.filtered import parse_selectivities
from vecdb.bench.filtered_report import write_filtered_report
from vecdb.bench.filtered_run import FilterOptions, run_filtered
from vecdb.bench.run import RunConfig, RunResult, run_header
from vecdb.bench.systems import parse_systems, variants_of


def bench_filtered(
    command: str,
    dataset: str,
    systems: str,
    selectivity: str,
    config: Mapping[str, Any],
    o: Mapping[str, Any],
    log: Callable[[str], None],
) -> tuple[RunResult, list[Path]]:
    """Run the filtered benchmark as the options `o` of `vecdb bench` say; write the report."""
    load_start = load_average()
    t0 = time.perf_counter()
    opts = FilterOptions.from_config(parse_selectivities(selectivity), config.get("filter", {}))
    names = parse_systems(systems, variants_of(config.get("systems", {})))
    log(f"preparing dataset {dataset} ...")
    ds = load_dataset(dataset, o["cache_dir"], o["metric"]).head(o["n_queries"])
    label = o["section"] or f"{ds.name}-filtered"
    log(
        f"{ds.name}: {len(ds.base):,} x {ds.base.shape[1]} base, {len(ds.queries):,} queries;"
        f" selectivities {', '.join(f'{s:g}' for s in opts.selectivities)};"
        f" systems: {', '.join(names)}"
    )
    cfg = RunConfig.from_options(
        o, names, config, label, t0, latency_queries=o["latency_queries"],
        repeats=o["repeats"], measure_memory=False,
    )  # fmt: skip
    result = run_filtered(ds, cfg, opts, log=log)
    header = run_header(ds.name, label, command, t0, load_start)
    md = o["results_md"] or o["out_dir"] / "RESULTS.md"
    return result, write_filtered_report(result.rows, md, o["out_dir"] / "plots", header)
