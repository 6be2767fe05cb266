"""`vecdb bench`: the ANN benchmark command (recall vs QPS against faiss and hnswlib).

Owns the command line only: option parsing, the optional JSON config (per-system build
parameters and sweeps, reference anchors), the time limit, and turning `VecdbError` into a
clean CLI error. The work is done by `vecdb.bench` (datasets, run, report; with
`--filter-selectivity`, the filtered run: filtered_main and the filtered* modules; with
`--tenants`, the multi-tenant run: tenants_main and the tenants* modules; with
`--multivector`, `vecdb.bench.multivector`; with `--shards`, `vecdb.bench.shards_main`).
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

DEFAULT_SYSTEMS = "all"
FILTERED_SYSTEMS = "vecdb-spann,exact,faiss-ivf,hnswlib"  # --filter-selectivity's default


def _command_line(ctx: click.Context) -> str:
    """The command as typed, rebuilt from the options given on the command line."""
    parts = ["vecdb", "bench"]
    for param in ctx.command.params:
        name = param.name or ""
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        opt = param.opts[0] if param.opts else f"--{name}"
        value = ctx.params[name]
        if isinstance(value, bool):
            parts.append(opt if value else next(iter(param.secondary_opts), opt))
        else:
            parts += [opt, str(value)]
    return shlex.join(parts)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so work directories and servers are cleaned up


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # above the progress bars, not through them


def _load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--config") from exc
    if not isinstance(cfg, dict):
        raise click.BadParameter(f"{path}: expected a JSON object", param_hint="--config")
    return cfg


@click.command("bench")
@click.option(
    "--dataset",
    default="glove-50",
    show_default=True,
    help=(
        "glove-50 | minilm-384 | synthetic:N:D[:seed] (clustered) | random:N:D[:seed]"
        " (no structure) | FILE | BASE,QUERIES[,GT] | FILE.hdf5"
    ),
)
@click.option(
    "--systems",
    default=DEFAULT_SYSTEMS,
    show_default=True,
    help="Comma list of systems or groups: vecdb-flat, vecdb-spann, exact, faiss-ivf, "
    "faiss-hnsw, faiss-ivfpq, hnswlib, vecdb-flat-grpc, vecdb-spann-grpc; groups vecdb, "
    "vecdb-grpc, faiss, peers, all (all = embedded vecdb + peers).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("bench-out"),
    show_default=True,
    help="Directory for results-<dataset>.jsonl and plots/.",
)
@click.option(
    "--results-md",
    type=click.Path(path_type=Path),
    default=None,
    help="RESULTS.md to update (default: OUT/RESULTS.md).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Prepared datasets and ground truth [default: ~/.cache/vecdb-bench].",
)
@click.option(
    "--metric",
    type=click.Choice(["l2", "ip", "cosine"]),
    default=None,
    help="Metric for file and synthetic datasets (glove-50 is cosine).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for builds and the all-threads QPS [default: all CPUs].",
)
@click.option(
    "--queries",
    "n_queries",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N queries (quick runs).",
)
@click.option(
    "--latency-queries",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Queries timed one by one for p50/p99/p99.9 latency.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed batch calls per setting on 1 thread.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0),
    default=None,
    help="Soft limit in seconds for the whole run; sweeps are cut short to meet it.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="JSON: {systems: {NAME: {build, sweep}}, anchors, anchor_source}.",
)
@click.option(
    "--section",
    default=None,
    help="Name of this run's RESULTS.md section, JSONL and plots [default: the dataset].",
)
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Measure index memory in a fresh subprocess per system.",
)
@click.option(
    "--filter-selectivity",
    "filter_selectivity",
    default=None,
    help="Filtered search instead: comma list of selectivities 1/X (e.g. 0.5,0.1,0.01,0.001),"
    " each an equality filter on a synthetic payload field; recall@10 against the exact"
    " filtered top-10. Systems default to vecdb-spann,exact,faiss-ivf,hnswlib; the config's"
    ' "filter" object may set seed, payload_index, stop_recall.',
)
@click.option(
    "--tenants",
    "tenants",
    default=None,
    help="Multi-tenant run instead: zipf:T[:s] tenants of Zipf sizes over the dataset; "
    "systems default to all tenant systems (vecdb-tenants, vecdb-spann-per-tenant, "
    "vecdb-spann-filter, hnswlib-per-tenant, hnswlib-filter, faiss-ivf-filter, exact); the "
    'config\'s "tenants" object sets locality, sharing, sampling and the ops/memory passes.',
)
@click.option(
    "--multivector",
    "multivector",
    default=None,
    help="Multi-vector (MaxSim) benchmark instead: comma list of tiers t1-static, t1-ctx, t2"
    " (each optionally :N documents, e.g. t1-ctx:400); --config is a bench/multivector*.json"
    " matrix, --queries the sampled queries (default 300), --latency-queries those timed"
    " (default 100). See bench/README.md.",
)
@click.option("--shards", default=None, help="Scale-out run instead: shard counts, e.g. 1,2,3: "
              "a router over N loopback shards vs one node (bench/shards.json).")  # fmt: skip
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def bench(
    ctx: click.Context,
    dataset: str,
    systems: str,
    out_dir: Path,
    results_md: Path | None,
    cache_dir: Path | None,
    metric: str | None,
    threads: int | None,
    n_queries: int | None,
    latency_queries: int,
    repeats: int,
    time_limit: float | None,
    config_path: Path | None,
    section: str | None,
    memory: bool,
    filter_selectivity: str | None,
    tenants: str | None,
    multivector: str | None,
    shards: str | None,
    progress: bool,
) -> None:
    """Measure recall, QPS, latency, build time and memory of vecdb and its peers."""
    from vecdb.bench.datasets import load_dataset
    from vecdb.bench.environment import load_average
    from vecdb.bench.report import write_report
    from vecdb.bench.run import RunConfig, run_benchmark, run_header
    from vecdb.bench.systems import parse_systems, variants_of
    from vecdb.errors import VecdbError

    previous = signal.signal(signal.SIGTERM, _interrupt)
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))
    command = _command_line(ctx)
    config = _load_config(config_path)
    load_start = load_average()
    t0 = time.perf_counter()
    if multivector is not None:
        from vecdb.bench.multivector.main import run_multivector
        from vecdb.errors import VecdbError as _VecdbError

        explicit = {
            name
            for name in ("n_queries", "latency_queries", "threads")
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        }
        try:
            mv_rows, mv_written = run_multivector(command, multivector, config_path, {
                "out_dir": out_dir, "results_md": results_md, "cache_dir": cache_dir,
                "threads": threads, "n_queries": n_queries, "latency_queries": latency_queries,
                "time_limit": time_limit, "section": section, "explicit": explicit,
            }, log=_log)  # fmt: skip
        except _VecdbError as exc:
            raise click.ClickException(str(exc)) from exc
        _finish(mv_rows, mv_written[0], mv_written[1:])
        return
    options = {
        "out_dir": out_dir, "results_md": results_md, "cache_dir": cache_dir,
        "metric": metric, "threads": threads, "n_queries": n_queries,
        "latency_queries": latency_queries, "repeats": repeats, "time_limit": time_limit,
        "section": section, "progress": progress,
    }  # fmt: skip
    if shards is not None:
        _bench_shards(ctx, command, dataset, shards, config, options)
        return
    if tenants is not None:
        options["memory"] = memory  # --no-memory skips vecdb-tenants' fresh-process memory
        _bench_tenants(ctx, command, dataset, systems, tenants, config, options)
        return
    if filter_selectivity is not None:
        if ctx.get_parameter_source("systems") != click.core.ParameterSource.COMMANDLINE:
            systems = FILTERED_SYSTEMS
        _bench_filtered(command, dataset, systems, filter_selectivity, config, options)
        return
    try:
        names = parse_systems(systems, variants_of(config.get("systems", {})))
        click.echo(f"preparing dataset {dataset} ...", err=True)
        ds = load_dataset(dataset, cache_dir, metric).head(n_queries)
        click.echo(
            f"{ds.name}: {len(ds.base):,} x {ds.base.shape[1]} base, {len(ds.queries):,} queries, "
            f"metric {ds.metric}; systems: {', '.join(names)}",
            err=True,
        )
        cfg = RunConfig.from_options(
            options, names, config, section, t0, latency_queries=latency_queries,
            repeats=repeats, measure_memory=memory,
        )  # fmt: skip
        result = run_benchmark(ds, cfg, log=_log)
        header = run_header(ds.name, section, command, t0, load_start, cfg.threads)
        header["latency_queries"] = latency_queries
        header["anchor_source"] = config.get("anchor_source", "config")
        md = results_md or out_dir / "RESULTS.md"
        written = write_report(result.rows, md, out_dir / "plots", header, config.get("anchors"))
    except VecdbError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(result.rows, result.jsonl_path, written)


def _bench_filtered(
    command: str,
    dataset: str,
    systems: str,
    selectivity: str,
    config: dict[str, Any],
    o: dict[str, Any],
) -> None:
    """`vecdb bench --filter-selectivity ...`: the filtered-search run and its section."""
    from vecdb.bench.filtered_main import bench_filtered
    from vecdb.errors import VecdbError

    try:
        result, written = bench_filtered(command, dataset, systems, selectivity, config, o, _log)
    except VecdbError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(result.rows, result.jsonl_path, written)


def _bench_tenants(
    ctx: click.Context,
    command: str,
    dataset: str,
    systems: str,
    tenants: str,
    config: dict[str, Any],
    o: dict[str, Any],
) -> None:
    """`vecdb bench --tenants zipf:T[:s]`: the multi-tenant run and its section."""
    from vecdb.bench.tenants_main import bench_tenants
    from vecdb.errors import VecdbError

    if ctx.get_parameter_source("systems") != click.core.ParameterSource.COMMANDLINE:
        systems = "all"
    try:
        result, written = bench_tenants(command, dataset, systems, tenants, config, o, _log)
    except VecdbError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(result.rows, result.jsonl_path, written)


def _bench_shards(ctx: click.Context, command: str, dataset: str, shards: str,
                  config: dict[str, Any], o: dict[str, Any]) -> None:  # fmt: skip
    """`vecdb bench --shards 1,2,3`: router vs one node (options given override the config)."""
    from vecdb.bench.shards_main import CLI_OPTIONS, bench_shards
    from vecdb.errors import VecdbError

    cli = click.core.ParameterSource.COMMANDLINE
    o["overrides"] = {k: ctx.params[k] for k in CLI_OPTIONS if ctx.get_parameter_source(k) == cli}
    try:
        _finish(*bench_shards(command, dataset, shards, config, o, _log))
    except VecdbError as exc:
        raise click.ClickException(str(exc)) from exc


def _finish(rows: list[dict[str, Any]], jsonl_path: Path, written: list[Path]) -> None:
    """Name the files a run wrote; fail the command if any system failed."""
    for path in [jsonl_path, *written]:
        click.echo(f"wrote {path}")
    failed = sorted({r["system"] for r in rows if "error" in r})
    if failed:
        raise click.ClickException(f"systems failed: {', '.join(failed)} (see {jsonl_path})")
