"""`vecdb bench --tenants zipf:T[:s]`: from the command's options to the written report.

Owns the tenant run's configuration (the config's "tenants" object, validated here) and the
order: dataset, workload, systems, report. The command line itself is `vecdb.cli.bench`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vecdb.bench.datasets import load_dataset
from vecdb.bench.environment import load_average
from vecdb.bench.run import RunConfig, RunResult, run_header
from vecdb.bench.tenants import TenantSpec, make_workload, parse_tenant_spec
from vecdb.bench.tenants_ops import DEFAULTS as OPS_DEFAULTS
from vecdb.bench.tenants_report import write_tenant_report
from vecdb.bench.tenants_run import DEFAULT_STOP_RECALL, TenantOptions, run_tenants
from vecdb.bench.tenants_systems import parse_tenant_systems
from vecdb.errors import InvalidArgument

SPEC_KEYS = ("locality", "max_share", "share", "seed", "edges", "tenants_per_bucket",
             "queries_per_tenant")  # fmt: skip
RUN_KEYS = ("stop_recall", "ops", "memory")


def tenant_options(spec: str, cfg: Mapping[str, Any]) -> tuple[TenantSpec, TenantOptions]:
    """The workload spec and run options from `--tenants` and the config's "tenants" object."""
    if not isinstance(cfg, Mapping):
        raise InvalidArgument(f"config tenants must be an object, got {cfg!r}")
    known = (*SPEC_KEYS, *RUN_KEYS, *OPS_DEFAULTS)
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise InvalidArgument(
            f"config tenants.{unknown[0]}: unknown key; known: {', '.join(known)}"
        )
    given = {key: cfg[key] for key in SPEC_KEYS if key in cfg}
    if "edges" in given:
        given["edges"] = tuple(int(e) for e in given["edges"])
    ts = parse_tenant_spec(spec, **given)
    stop = float(cfg.get("stop_recall", DEFAULT_STOP_RECALL))
    if not 0.5 <= stop <= 1.0:
        raise InvalidArgument(f"config tenants.stop_recall must be in [0.5, 1], got {stop}")
    extra = {key: cfg[key] for key in OPS_DEFAULTS if key in cfg}
    opts = TenantOptions(stop, bool(cfg.get("ops", True)), bool(cfg.get("memory", True)), extra)
    return ts, opts


def bench_tenants(
    command: str,
    dataset: str,
    systems: str,
    spec: str,
    config: Mapping[str, Any],
    o: Mapping[str, Any],
    log: Callable[[str], None],
) -> tuple[RunResult, list[Path]]:
    """Run the tenant benchmark as the options `o` of `vecdb bench` say; write the report."""
    load_start = load_average()
    t0 = time.perf_counter()
    ts, opts = tenant_options(spec, config.get("tenants", {}))
    opts.memory = opts.memory and bool(o.get("memory", True))
    names = parse_tenant_systems(systems)
    log(f"preparing dataset {dataset} ...")
    ds = load_dataset(dataset, o["cache_dir"], o["metric"])
    w0 = time.perf_counter()
    wl = make_workload(ds, ts)
    workload_s = time.perf_counter() - w0
    label = o["section"] or f"{ds.name}-tenants-{ts.tenants}-{ts.locality}"
    log(f"{ds.name}: {len(ds.base):,} x {ds.base.shape[1]}; {ts.describe()}; "
        f"{len(wl.queries):,} queries over {len(wl.sampled_tenants())} tenants "
        f"(workload {workload_s:.1f} s); systems: {', '.join(names)}")  # fmt: skip
    cfg = RunConfig.from_options(o, names, config, label, t0, measure_memory=False)
    result = run_tenants(ds, wl, cfg, opts, log, workload_s)
    header = run_header(ds.name, label, command, t0, load_start)
    md = o["results_md"] or o["out_dir"] / "RESULTS.md"
    written = write_tenant_report(result.rows, md, o["out_dir"], header)
    return result, written
