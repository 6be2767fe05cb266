"""The filtered-search benchmark orchestrator (`vecdb bench --filter-selectivity ...`).

Owns the order of work and the time budget of a filtered run: the payload columns and filtered
ground truth come from `vecdb.bench.filtered`; per system one build (vecdb with the payload on
every point, optionally with payload indexes), then per selectivity its one filter for every
query, and per sweep setting: a warm-up batch that gives recall@1/@10 against the exact
filtered ground truth (a returned id that does not match the filter never counts and is
counted apart), timed batches on 1 thread (process CPU) and on all threads (wall), and
single-query latency. A sweep is ordered by effort, so it stops after the first setting that
reaches `stop_recall`. Each system gets an even share of the time left, each selectivity an
even share of its system's. Rows go to `results-<label>.jsonl` as each system finishes. Memory
is not measured here (the unfiltered run does that). Must not format results (see
`vecdb.bench.filtered_report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from vecdb.bench import metrics
from vecdb.bench.datasets import Dataset, slugify
from vecdb.bench.environment import environment, load_average
from vecdb.bench.filtered import DEFAULT_PAYLOAD_SEED, FilterCase, filter_cases
from vecdb.bench.run import RunConfig, RunResult, run_systems, time_setting, timed_build
from vecdb.bench.systems import Params, System, expand_sweep, make_system
from vecdb.errors import InvalidArgument

K = 10  # neighbours asked for; recall@1 and recall@10 come from the same result
TARGET_RECALL = 0.95  # the report's "QPS at recall@10 >= this"
DEFAULT_STOP_RECALL = 0.999  # a sweep stops after the first setting reaching this recall@10
MIN_RECALL, MAX_RECALL = 0.5, 1.0  # bounds of stop_recall


@runtime_checkable
class Filterable(Protocol):
    """A system that can restrict its search to the points matching a filter: vecdb takes the
    payload filter, the peers the boolean mask of matching rows."""

    def set_filter(
        self, flt: Mapping[str, Any] | None, mask: npt.NDArray[np.bool_] | None
    ) -> None: ...


@dataclass
class FilterOptions:
    """The filtered run's settings besides RunConfig; from the config's "filter" object."""

    selectivities: list[float]  # e.g. [0.5, 0.1, 0.01, 0.001]
    seed: int = DEFAULT_PAYLOAD_SEED  # payload permutations
    payload_index: bool = False  # vecdb: create_payload_index(key, "int") per payload field
    stop_recall: float = DEFAULT_STOP_RECALL  # see the module docstring

    @classmethod
    def from_config(cls, selectivities: list[float], cfg: Mapping[str, Any]) -> FilterOptions:
        """Validate the config's "filter" object: {"seed", "payload_index", "stop_recall"}."""
        if not isinstance(cfg, Mapping):
            raise InvalidArgument(f"config filter must be an object, got {cfg!r}")
        unknown = sorted(set(cfg) - {"seed", "payload_index", "stop_recall"})
        if unknown:
            raise InvalidArgument(
                f"config filter.{unknown[0]}: unknown key; known: seed, payload_index, stop_recall"
            )
        seed, index = cfg.get("seed", DEFAULT_PAYLOAD_SEED), cfg.get("payload_index", False)
        stop = cfg.get("stop_recall", DEFAULT_STOP_RECALL)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"config filter.seed must be an int >= 0, got {seed!r}")
        if not isinstance(index, bool):
            raise InvalidArgument(f"config filter.payload_index must be a bool, got {index!r}")
        if isinstance(stop, bool) or not isinstance(stop, int | float):
            raise InvalidArgument(f"config filter.stop_recall must be a number, got {stop!r}")
        if not MIN_RECALL <= stop <= MAX_RECALL:
            raise InvalidArgument(
                f"config filter.stop_recall must be in [{MIN_RECALL}, {MAX_RECALL}], got {stop}"
            )
        return cls(list(selectivities), seed, index, float(stop))


def run_filtered(
    ds: Dataset, cfg: RunConfig, opts: FilterOptions, log: Callable[[str], None] = print
) -> RunResult:
    """Measure every system of `cfg` at every selectivity of `opts`; write the JSONL rows."""
    start = time.perf_counter()
    env = environment(cfg.threads)
    run_id = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    columns, cases = filter_cases(ds, opts.selectivities, opts.seed)
    gt_s = round(time.perf_counter() - start, 3)
    log(f"filtered ground truth for {len(cases)} selectivities in {gt_s:.1f} s")
    deadline = None if cfg.time_limit_s is None else start + cfg.time_limit_s
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = cfg.out_dir / f"results-{slugify(cfg.label or ds.name + '-filtered')}.jsonl"
    jsonl.write_text("")
    common = {
        "run_id": run_id,
        "dataset": ds.name,
        "metric": ds.metric,
        "n": len(ds.base),
        "d": int(ds.base.shape[1]),
        "n_queries": len(ds.queries),
        "k": K,
        "filter_seed": opts.seed,
        "payload_index": opts.payload_index,
        "stop_recall": opts.stop_recall,
        "filtered_gt_s": gt_s,
        **env,
    }
    rows = run_systems(
        cfg,
        common,
        jsonl,
        lambda name, budget, workdir: bench_filtered_system(
            name, ds, columns, cases, cfg, opts, budget, workdir, log
        ),
        deadline,
        "vecdb-bench-filtered-",
        log,
    )
    return RunResult(rows, jsonl, env, time.perf_counter() - start)


def bench_filtered_system(
    name: str,
    ds: Dataset,
    columns: Mapping[str, npt.NDArray[np.int64]],
    cases: list[FilterCase],
    cfg: RunConfig,
    opts: FilterOptions,
    budget_s: float | None,
    workdir: Path,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Build once, then sweep every selectivity; one row per (selectivity, setting)."""
    t_start = time.perf_counter()
    sys_cfg = cfg.systems_config.get(name, {})
    dim = int(ds.base.shape[1])
    system = make_system(name, ds.metric, dim, len(ds.base), sys_cfg.get("build", {}),
                         sys_cfg.get("base"))  # fmt: skip
    if not isinstance(system, Filterable):
        raise InvalidArgument(f"system {name!r} cannot search with a filter")
    sweep = expand_sweep(sys_cfg.get("sweep", system.default_sweep))
    deadline = None if budget_s is None else t_start + budget_s
    rows: list[dict[str, Any]] = []
    try:
        # Pass 1: build with all threads (vecdb: with the payload, and its indexes if asked).
        set_columns = getattr(system, "set_payload_columns", None)
        if set_columns is not None:
            set_columns(columns, opts.payload_index)
        build = timed_build(system, ds, cfg.threads, workdir)
        log(f"{name}: built in {build['build_s']:.1f} s ({system.build_params})")
        # Pass 2: per selectivity, its filter and the sweep.
        for c, case in enumerate(cases):
            now = time.perf_counter()
            case_end = (
                None if deadline is None else now + max(0.0, deadline - now) / (len(cases) - c)
            )
            system.set_filter(case.filter, case.mask)
            rows += _sweep_case(system, ds, case, cfg, opts, sweep, case_end, log)
        system.set_filter(None, None)
    finally:
        system.close()
    for row in rows:
        row.update(build)
        row["system_seconds"] = round(time.perf_counter() - t_start, 1)
    return rows


def _sweep_case(
    system: System,
    ds: Dataset,
    case: FilterCase,
    cfg: RunConfig,
    opts: FilterOptions,
    sweep: list[Params],
    case_end: float | None,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for j, params in enumerate(sweep):
        now = time.perf_counter()
        if rows and case_end is not None and now > case_end:
            log(f"{system.name} @ {case.selectivity:g}: time budget spent; skipped "
                f"{len(sweep) - j} of {len(sweep)} settings")  # fmt: skip
            for row in rows:
                row["sweep_truncated"] = len(sweep) - j
            break
        share = None if case_end is None else max(1.0, (case_end - now) / (len(sweep) - j))
        rows.append(measure_filtered_setting(system, ds, case, cfg, params, share))
        if rows[-1]["recall_at_10"] >= opts.stop_recall and j + 1 < len(sweep):
            for row in rows:
                row["sweep_stopped"] = len(sweep) - j - 1  # settings left unmeasured
            break
    return rows


def filtered_recall(ds: Dataset, case: FilterCase, found: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Recall@1/@10 of `found` against the case's exact filtered ground truth; an id that does
    not match the filter never counts (it is reported as `non_matching`)."""
    found = np.asarray(found, dtype=np.int64)
    valid = (found >= 0) & (found < len(case.mask))
    matching = valid & case.mask[np.where(valid, found, 0)]
    kept = np.where(matching, found, -1)
    return {
        "recall_at_1": round(
            metrics.recall_at_k(ds.base, ds.queries, ds.metric, case.gt_ids, kept, 1), 5
        ),
        "recall_at_10": round(
            metrics.recall_at_k(ds.base, ds.queries, ds.metric, case.gt_ids, kept, K), 5
        ),
        "non_matching": int((valid & ~matching).sum()),
        "returned_per_query": round(float(valid.sum()) / max(1, len(found)), 3),
    }


def measure_filtered_setting(
    system: System,
    ds: Dataset,
    case: FilterCase,
    cfg: RunConfig,
    params: Params,
    share_s: float | None,
) -> dict[str, Any]:
    """Recall, batch QPS on 1 thread, latency, then batch QPS on all threads (as
    `vecdb.bench.run.measure_setting`, with the case's filter already set)."""
    budget = 20.0 if share_s is None else max(0.5, share_s / 3)
    load_before = load_average()
    system.set_params(params)
    system.set_threads(1)
    found = system.search(ds.queries, K)  # the warm-up call's result gives the recall
    row: dict[str, Any] = {
        "system": system.name,
        "is_ours": system.is_ours,
        "build_params": system.build_params,
        "params": params,
        "selectivity": case.selectivity,
        "filter": case.filter,
        "n_matching": case.n_matching,
        **filtered_recall(ds, case, found),
    }
    row.update(time_setting(system, ds, cfg, budget))
    row["load_avg_before"] = load_before
    return row
