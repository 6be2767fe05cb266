"""The ingest benchmark: a dataset streamed into a real `vecdb serve` over gRPC.

    python -m vecdb.bench.ingest --dataset random:70000:1024 --variants bulk,online,churn \\
        --out bench --results-md bench/RESULTS.md

Owns this protocol. Per variant, a fresh `vecdb serve` child on 127.0.0.1 (ephemeral port, temp
data directory, pinned threads; `vecdb.bench.server_process`) gets one collection, and the base
vectors go through the SDK's streaming upsert (`upsert_stream`, the path `vecdb ingest` takes to
a server) in batches of about 4 MiB. Measured per streamed phase: end-to-end vectors/s (first
batch sent to last acknowledgement), every gap between consecutive acknowledgements (the first
one from the start), its maximum and p99, and that every batch and vector was acknowledged.
Throughout the variant a background sampler reads, every 50 ms, the server's RssAnon and the
total size of its posting files (`postings*.bin` under the data directory); every sample is kept
in the JSONL row, so the bound "posting files <= 4x raw vector bytes at every moment" can be
checked, and the server's VmHWM (peak RSS) is read at the end. Variants:

- `bulk`: stream all, then optimize (waiting for the end).
- `online`: stream half, optimize, stream the other half (the measured phase), optimize.
- `churn`: stream all, optimize, delete a seeded 20% of the ids, re-upsert them (measured),
  optimize.

A watchdog kills the server if the posting files pass `--abort-posting-x` times the raw bytes
(to protect the disk) or the variant passes `--time-limit`; the row then says so. Must not
import the engine or the server: the server is a separate process, as in production.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import Dataset, load_dataset, slugify
from vecdb.bench.engine_features import index_state, optimize_and_wait
from vecdb.bench.environment import environment, load_average
from vecdb.bench.ingest_report import cell, section_text
from vecdb.bench.sampler import Sampler, files_bytes_probe, rss_anon_probe
from vecdb.bench.server_process import ServerProcess

VARIANTS = ("bulk", "online", "churn")
COLLECTION = "ingest"
BATCH_BYTES = 4 << 20  # rows per streamed batch: about 4 MiB of float32 ...
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 256, 10_000  # ... within these bounds
DELETE_BATCH = 10_000
CHURN_FRACTION = 0.2
CHURN_SEED = 5
SAMPLE_INTERVAL_S = 0.05
POSTING_GLOB = "postings*.bin"
STORE_GLOB = "vectors.bin"  # a SPANN rerank store (bits postings: the default from 256-d)
DEFAULT_ABORT_POSTING_X = 20.0
ABORT_POSTING_FLOOR_BYTES = 1 << 30  # never abort below 1 GiB (small sets, preallocation)
DEFAULT_TIME_LIMIT_S = 1800.0
F32 = npt.NDArray[np.float32]


@dataclass
class IngestConfig:
    """One invocation: which variants, how the server runs, how batches are cut."""

    variants: list[str]  # subset of VARIANTS, in order
    index: str = "spann"  # index kind of the collection
    threads: int = 2  # the server's thread count
    batch_rows: int | None = None  # rows per streamed batch (default: ~BATCH_BYTES)
    window: int | None = None  # batches in flight (default: the server's choice)
    interval_s: float = SAMPLE_INTERVAL_S
    posting_glob: str = POSTING_GLOB
    abort_posting_x: float = DEFAULT_ABORT_POSTING_X
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    work_dir: Path | None = None  # where the temp data directories go


def batch_rows_for(dim: int) -> int:
    """Rows per batch: about BATCH_BYTES of float32, within [MIN_BATCH_ROWS, MAX_BATCH_ROWS]."""
    return int(min(MAX_BATCH_ROWS, max(MIN_BATCH_ROWS, BATCH_BYTES // (4 * max(1, dim)))))


class _Watchdog:
    """Kills the server when the posting files grow past a bound or time runs out."""

    def __init__(
        self, server: ServerProcess, sampler: Sampler, limit_bytes: float, deadline: float
    ) -> None:
        self.server = server  # stopped on a breach
        self.sampler = sampler  # read, never written
        self.limit_bytes = limit_bytes  # posting bytes that abort the variant
        self.deadline = deadline  # monotonic time that aborts the variant
        self.reason: str | None = None  # why it stopped the server, if it did
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vecdb-bench-watchdog", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.25):
            posting = self.sampler.values["posting_bytes"]
            store = self.sampler.values.get("store_bytes") or [0.0]
            if posting and posting[-1] + store[-1] > self.limit_bytes:
                total = (posting[-1] + store[-1]) / 2**20
                self.reason = f"posting files and rerank store reached {total:,.0f} MiB"
            elif time.monotonic() > self.deadline:
                self.reason = "time limit reached"
            if self.reason:
                self.server.kill()  # at once: a graceful stop may wait for a whole build
                return

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def stream_phase(
    client: Any,
    name: str,
    ids: npt.NDArray[np.int64],
    vectors: F32,
    batch_rows: int,
    window: int | None,
    t_origin: float,
) -> dict[str, Any]:
    """Stream `vectors` with `ids` through `upsert_stream`; timings of every acknowledgement."""
    n_batches = (len(ids) + batch_rows - 1) // batch_rows

    def batches() -> Iterator[tuple[Any, Any, Any]]:
        for lo in range(0, len(ids), batch_rows):
            yield ids[lo : lo + batch_rows], vectors[lo : lo + batch_rows], None

    t0 = time.monotonic()
    ack_times: list[float] = []
    acked = 0
    for ack in client.upsert_stream(name, batches(), window=window):
        ack_times.append(time.monotonic())
        acked += int(ack.upserted)
    end = ack_times[-1] if ack_times else time.monotonic()
    gaps = np.diff(np.array([t0, *ack_times]))
    seconds = end - t0
    return {
        "start_s": round(t0 - t_origin, 3),
        "end_s": round(end - t_origin, 3),
        "seconds": round(seconds, 6),
        "vectors": len(ids),
        "batches": n_batches,
        "acks": len(ack_times),
        "acked_vectors": acked,
        "vectors_per_s": round(len(ids) / seconds, 1) if seconds > 0 else None,
        "max_gap_s": round(float(gaps.max()), 4) if len(gaps) else None,
        "p99_gap_s": round(float(np.percentile(gaps, 99)), 4) if len(gaps) else None,
        "p50_gap_s": round(float(np.percentile(gaps, 50)), 4) if len(gaps) else None,
    }


def _timed(t_origin: float, fn: Any, *args: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    fn(*args)
    end = time.monotonic()
    return {
        "start_s": round(t0 - t_origin, 3),
        "end_s": round(end - t_origin, 3),
        "seconds": round(end - t0, 3),
    }


def _delete(client: Any, name: str, ids: npt.NDArray[np.int64]) -> None:
    for lo in range(0, len(ids), DELETE_BATCH):
        client.delete(name, ids[lo : lo + DELETE_BATCH])


MEASURED = {"bulk": "load", "online": "load_second_half", "churn": "reupsert"}


def _phases(
    variant: str,
    client: Any,
    base: F32,
    batch_rows: int,
    window: int | None,
    t_origin: float,
    phases: dict[str, dict[str, Any]],
) -> None:
    """Run the variant's phases, adding each to `phases` as it ends (so a failure keeps the
    ones before it)."""
    n = len(base)
    ids = np.arange(n, dtype=np.int64)

    def stream(sel: slice | npt.NDArray[np.int64]) -> dict[str, Any]:
        return stream_phase(client, COLLECTION, ids[sel], base[sel], batch_rows, window, t_origin)

    def optimize() -> dict[str, Any]:
        return _timed(t_origin, optimize_and_wait, client, COLLECTION)

    if variant == "bulk":
        phases["load"] = stream(slice(0, n))
        phases["optimize"] = optimize()
    elif variant == "online":
        half = n // 2
        phases["load_first_half"] = stream(slice(0, half))
        phases["optimize_first_half"] = optimize()
        phases["load_second_half"] = stream(slice(half, n))
        phases["optimize_end"] = optimize()
    elif variant == "churn":
        phases["load"] = stream(slice(0, n))
        phases["optimize"] = optimize()
        rng = np.random.default_rng(CHURN_SEED)
        churned = np.sort(rng.choice(n, int(CHURN_FRACTION * n), replace=False)).astype(np.int64)
        phases["delete"] = {
            **_timed(t_origin, _delete, client, COLLECTION, churned),
            "vectors": len(churned),
        }
        phases["reupsert"] = stream(churned)
        phases["optimize_end"] = optimize()
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


def run_variant(ds: Dataset, variant: str, cfg: IngestConfig) -> dict[str, Any]:
    """One variant on a fresh server and data directory; one result row."""
    import vecdb

    base = ds.base
    n, dim = base.shape
    raw = n * dim * 4
    batch_rows = cfg.batch_rows or batch_rows_for(dim)
    row: dict[str, Any] = {
        "variant": variant,
        "index": cfg.index,
        "server_threads": cfg.threads,
        "batch_rows": batch_rows,
        "window": cfg.window,
        "raw_mib": round(raw / 2**20, 2),
        "load_avg_before": load_average(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="vecdb-bench-ingest-", dir=cfg.work_dir))
    data_dir = tmp / "data"
    try:
        server = ServerProcess(data_dir, cfg.threads)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return {**row, "error": f"vecdb serve: {type(exc).__name__}: {exc}", "phases": {}}
    client = vecdb.connect(server.address)
    sampler = Sampler(
        {
            "posting_bytes": files_bytes_probe(data_dir, cfg.posting_glob),
            "store_bytes": files_bytes_probe(data_dir, STORE_GLOB, allocated=True),
            "server_anon_kib": rss_anon_probe(server.pid),
        },
        cfg.interval_s,
    )
    limit = max(cfg.abort_posting_x * raw, ABORT_POSTING_FLOOR_BYTES)
    watchdog = _Watchdog(server, sampler, limit, time.monotonic() + cfg.time_limit_s)
    phases: dict[str, dict[str, Any]] = {}
    measured = MEASURED[variant]
    try:
        client.create_collection(COLLECTION, dim=dim, metric=ds.metric, index=cfg.index)
        sampler.start()
        try:
            with watchdog:
                _phases(variant, client, base, batch_rows, cfg.window, sampler.t0, phases)
        finally:
            sampler.stop()
        row["count"] = int(client.count(COLLECTION))
        row["index_state"] = index_state(client, COLLECTION)
        row["server_vmhwm_mib"] = round(server.status_kib()["VmHWM"] / 1024, 1)
    except Exception as exc:
        row["error"] = watchdog.reason or f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    row["count_ok"] = row.get("count") == n
    times = np.array(sampler.times)
    posting = np.array(sampler.values["posting_bytes"])
    store = np.array(sampler.values["store_bytes"])
    both = posting + store
    anon = np.array(sampler.values["server_anon_kib"])
    for phase in phases.values():
        inside = (times >= phase["start_s"]) & (times <= phase["end_s"])
        if inside.any():
            phase["posting_max_x_raw"] = round(float(posting[inside].max()) / raw, 3)
            phase["disk_max_x_raw"] = round(float(both[inside].max()) / raw, 3)
    stream = phases.get(measured, {})
    row.update(
        {
            "measured_phase": measured,
            "vectors_per_s": stream.get("vectors_per_s"),
            "max_gap_s": stream.get("max_gap_s"),
            "p99_gap_s": stream.get("p99_gap_s"),
            "acks_ok": bool(stream)
            and stream["acks"] == stream["batches"]
            and stream["acked_vectors"] == stream["vectors"],
            "optimize_s": round(sum(p["seconds"] for k, p in phases.items() if "optimize" in k), 3),
            "posting_max_mib": round(float(posting.max(initial=0)) / 2**20, 1),
            "posting_max_x_raw": round(float(posting.max(initial=0)) / raw, 3),
            "store_max_mib": round(float(store.max(initial=0)) / 2**20, 1),
            "disk_max_x_raw": round(float(both.max(initial=0)) / raw, 3),
            "server_anon_max_mib": round(float(anon.max(initial=0)) / 1024, 1),
            "samples": len(times),
            "sample_max_gap_ms": round(1000 * sampler.max_gap_s(), 1),
            "phases": phases,
            "series": {
                "t_s": [round(float(t), 3) for t in times],
                "posting_bytes": [int(p) for p in posting],
                "store_bytes": [int(s) for s in store],
                "server_anon_kib": [int(a) for a in anon],
            },
        }
    )
    return row


def run_ingest_benchmark(ds: Dataset, cfg: IngestConfig, log: Any = print) -> list[dict[str, Any]]:
    """Every variant of `cfg` on `ds`; rows with the run's provenance."""
    common = {
        "run_id": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": ds.name,
        "metric": ds.metric,
        "n": len(ds.base),
        "d": int(ds.base.shape[1]),
        **environment(cfg.threads),
    }
    rows = []
    for variant in cfg.variants:
        log(f"ingest {ds.name}: {variant} ...")
        row = {**common, **run_variant(ds, variant, cfg)}
        log(
            f"ingest {ds.name}: {variant}: {cell(row.get('vectors_per_s'))} vectors/s, "
            f"longest gap {cell(row.get('max_gap_s'), 3)} s, posting max "
            f"{cell(row.get('posting_max_x_raw'), 2)}x raw"
            + (f"; error: {row['error']}" if "error" in row else "")
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from vecdb.bench.report import replace_section

    ap = argparse.ArgumentParser(
        prog="python -m vecdb.bench.ingest", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--dataset", default="random:70000:1024", help="any `vecdb bench` dataset")
    ap.add_argument("--variants", default="bulk", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--index", default="spann")
    ap.add_argument("--threads", type=int, default=2, help="the server's threads")
    ap.add_argument("--batch-rows", type=int, default=None, help="[about 4 MiB per batch]")
    ap.add_argument("--window", type=int, default=None, help="batches in flight [server's]")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N base vectors")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--work-dir", type=Path, default=None, help="for the temp data directories")
    ap.add_argument("--abort-posting-x", type=float, default=DEFAULT_ABORT_POSTING_X)
    ap.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, help="per variant")
    ap.add_argument("--out", type=Path, default=None, help="write ingest-<dataset>.jsonl here")
    ap.add_argument("--results-md", type=Path, default=None, help="update this RESULTS.md")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        ap.error(f"--variants: unknown {bad}; known: {', '.join(VARIANTS)}")
    ds = load_dataset(args.dataset, args.cache_dir)
    if args.limit is not None:
        from dataclasses import replace

        ds = replace(ds, base=ds.base[: args.limit])
    cfg = IngestConfig(
        variants=variants,
        index=args.index,
        threads=args.threads,
        batch_rows=args.batch_rows,
        window=args.window,
        abort_posting_x=args.abort_posting_x,
        time_limit_s=args.time_limit,
        work_dir=args.work_dir,
    )
    rows = run_ingest_benchmark(ds, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    command = "python -m vecdb.bench.ingest " + " ".join(sys.argv[1:] if argv is None else argv)
    text = section_text(rows, command, SAMPLE_INTERVAL_S)
    label = slugify(f"ingest-{args.dataset}" + (f"-{args.limit}" if args.limit else ""))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"results-{label}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {path}", file=sys.stderr)
    if args.results_md is not None:
        old = args.results_md.read_text() if args.results_md.is_file() else ""
        args.results_md.write_text(replace_section(old, label, text))
        print(f"wrote {args.results_md}", file=sys.stderr)
    print(text)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
