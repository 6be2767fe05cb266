"""`vecdb ingest FILE`: bulk-load a vector file into a collection, resumably.

Reads the file batch by batch (`vecdb.cli.ingest_formats`), sends each batch through the SDK
(over gRPC the streaming upsert with acknowledgements and a credit window; embedded, one
durable upsert per batch) and, after each acknowledgement, records the rows done in a small
progress file next to the input (`FILE.vecdb-progress.json`, or `--resume-file PATH`). With
`--resume` a later run continues after the last acknowledged batch; since ids default to the
row number, a batch sent twice overwrites itself instead of duplicating. A malformed row stops
the load before its batch is sent and is reported with file, row and reason.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

import vecdb
from vecdb import config as caps
from vecdb.cli.ingest_formats import Batch, MalformedInput, Source, open_source
from vecdb.client import _is_remote
from vecdb.errors import InvalidArgument, NotFound, VecdbError
from vecdb.types import IndexKind, Metric

PROGRESS_FORMAT = "vecdb-ingest-progress"
PROGRESS_VERSION = 1
METRICS = tuple(m.value for m in Metric)
INDEXES = tuple(k.value for k in IndexKind if k is not IndexKind.MULTIVECTOR)  # dense indexes
_ROW_IN_MESSAGE = re.compile(r"^(?:batch seq=\d+: )?(ids|vectors|payloads)\[(\d+)\]")


class IngestError(Exception):
    """A failure to report to the user as one line (exit code 1)."""


def progress_path(file: Path, explicit: str | None) -> Path:
    return Path(explicit) if explicit else file.with_name(file.name + ".vecdb-progress.json")


def _fingerprint(file: Path, collection: str, target: str) -> dict[str, Any]:
    st = file.stat()
    return {"file": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "collection": collection, "target": target}  # fmt: skip


def load_progress(path: Path, expected: dict[str, Any]) -> tuple[int, bool]:
    """(rows done, complete) from a progress file written for the same input and target."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return 0, False
    except (OSError, ValueError) as exc:
        raise IngestError(
            f"progress file {path}: unreadable ({exc}); delete it to start over"
        ) from None
    if state.get("format") != PROGRESS_FORMAT or state.get("version") != PROGRESS_VERSION:
        raise IngestError(f"progress file {path}: unknown format {state.get('format')!r} "
                          f"version {state.get('version')!r} (supported: {PROGRESS_VERSION})")  # fmt: skip
    for key, value in expected.items():
        if state.get(key) != value:
            raise IngestError(
                f"progress file {path} is for {key}={state.get(key)!r}, not {value!r}: the input "
                "or target changed since the interrupted run; delete it to start over"
            )
    return int(state["rows_done"]), bool(state.get("complete"))


def save_progress(path: Path, fingerprint: dict[str, Any], rows_done: int, complete: bool) -> None:
    """Publish by rename so an interruption leaves the old or the new state, never half."""
    body = {"format": PROGRESS_FORMAT, "version": PROGRESS_VERSION, **fingerprint,
            "rows_done": rows_done, "complete": complete}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def ensure_collection(
    client: vecdb.Client, name: str, source: Source, first: Batch | None,
    dim: int | None, metric: str | None, index: str | None, multi_tenant: bool = False,
) -> None:  # fmt: skip
    """Check the collection fits the input and the options, creating it when --dim or
    --metric is given. Options that contradict an existing collection are refused (they
    would otherwise be silently ignored)."""
    if dim is not None and source.dim and dim != source.dim:
        raise IngestError(f"--dim {dim} but {source.path} holds {source.dim}-dimensional vectors")
    str_ids = first is not None and bool(first.ids) and isinstance(first.ids[0], str)
    try:
        info = client.get_collection(name)
    except NotFound:
        if dim is None and metric is None:
            raise IngestError(
                f"collection {name!r} does not exist; pass --dim and/or --metric to create it"
            ) from None
        client.create_collection(name, dim or source.dim, metric or "cosine",
                                 id_type="str" if str_ids else "int", index=index,
                                 multi_tenant=multi_tenant)  # fmt: skip
        return
    have = {"dim": info.dim, "metric": info.metric.value, "index": info.index.value}
    asked = {"dim": dim, "metric": None if metric is None else metric.lower(), "index": index}
    for option, value in asked.items():
        if value is not None and value != have[option]:
            raise IngestError(
                f"--{option} {value} contradicts collection {name!r}, which has {option} "
                f"{have[option]}; drop the option or load into another collection"
            )
    if source.dim and info.dim != source.dim:
        raise IngestError(f"collection {name!r} has dim {info.dim}, {source.path} has {source.dim}")
    if first is not None and first.ids and str_ids != (info.id_type.value == "str"):
        kind = "string" if str_ids else "integer"
        raise IngestError(
            f"collection {name!r} has {info.id_type.value} ids but {source.path} gives {kind} ids"
        )


def ensure_tenant(client: vecdb.Client, name: str, tenant: str) -> None:
    """The owner tenant of an ingest exists (created if absent)."""
    try:
        client.get_tenant(name, tenant)
    except NotFound:
        client.create_tenant(name, tenant)


def _locate(exc: VecdbError, batch: Batch | None, file: Path, target: str) -> str:
    """A row error ("vectors[12][3] ...") becomes "FILE: row START+12: ..."; any other error
    (collection, key, server, ...) is about the load's configuration and names the target, not
    the rows that happened to be in flight."""
    m = _ROW_IN_MESSAGE.match(exc.message)
    if batch is not None and m and isinstance(exc, InvalidArgument):
        return f"{file}: row {batch.start + int(m.group(2))}: {exc.message}"
    return f"{target}: {type(exc).__name__}: {exc.message}"


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--collection", required=True, help="Collection to load into.")
@click.option(
    "--target",
    default="./vecdb-data",
    show_default=True,
    help="A data directory (embedded) or HOST:PORT of a vecdb server.",
)
@click.option("--dim", type=int, default=None, help="Create the collection with this dimension.")
@click.option(
    "--metric",
    type=click.Choice(METRICS, case_sensitive=False),
    default=None,
    help="Metric when creating the collection (must match an existing one).",
)
@click.option(
    "--index",
    type=click.Choice(INDEXES),
    default=None,
    help="Index kind when creating the collection [spann] (must match an existing one).",
)
@click.option("--ids-from", default=None, help="Parquet column / JSON key holding the ids.")
@click.option("--vector-column", default=None, help="Parquet column holding the vectors.")
@click.option(
    "--batch-size", type=click.IntRange(1, caps.MAX_BATCH), default=10_000, show_default=True
)
@click.option("--resume", is_flag=True, help="Continue after the last acknowledged batch.")
@click.option(
    "--resume-file",
    "--progress-file",
    "progress_file",
    default=None,
    help="Where to keep the resume state [FILE.vecdb-progress.json].",
)
@click.option("--api-key", default=None, envvar="VECDB_API_KEY", help="API key (remote targets).")
@click.option("--tls-ca", default=None, help="CA file to verify the server (enables TLS).")
@click.option("--window", type=int, default=None, help="Batches in flight [server's choice].")
@click.option("--optimize", is_flag=True, help="Run optimize on the collection after loading.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--tenant",
    default=None,
    help="Owner tenant of the points or documents (multi-tenant collections; created if "
    "absent, and so is the collection, as multi-tenant, when --dim/--metric create it).",
)
@click.option(
    "--grant-to",
    "grant_to",
    multiple=True,
    help="Also grant the points or documents to this tenant (repeatable; needs --tenant).",
)
@click.option(
    "--stop-after",
    type=int,
    default=None,
    hidden=True,
    help="Testing: stop as if interrupted after this many acknowledged batches.",
)
def ingest(
    file: Path, collection: str, target: str, dim: int | None, metric: str | None,
    index: str | None, ids_from: str | None, vector_column: str | None, batch_size: int,
    resume: bool, progress_file: str | None, api_key: str | None, tls_ca: str | None,
    window: int | None, optimize: bool, quiet: bool, stop_after: int | None,
    tenant: str | None, grant_to: tuple[str, ...],
) -> None:  # fmt: skip
    """Load FILE (.npy .fvecs .bvecs .fbin .parquet .jsonl; documents: .npz, Parquet lists of
    token vectors) into a collection."""
    try:
        code = run_ingest(file, collection, target, dim, metric, index, ids_from, vector_column,
                          batch_size, resume, progress_file, api_key, tls_ca, window, optimize,
                          quiet, stop_after, tenant, grant_to)  # fmt: skip
    except (IngestError, MalformedInput) as exc:
        click.echo(f"vecdb ingest: error: {exc}", err=True)
        code = 1
    sys.exit(code)


def run_ingest(
    file: Path, collection: str, target: str, dim: int | None, metric: str | None,
    index: str | None, ids_from: str | None, vector_column: str | None, batch_size: int,
    resume: bool, progress_file: str | None, api_key: str | None, tls_ca: str | None,
    window: int | None, optimize: bool, quiet: bool, stop_after: int | None,
    tenant: str | None = None, grant_to: tuple[str, ...] = (),
) -> int:  # fmt: skip
    """The body of `vecdb ingest`; returns the exit code."""
    if grant_to and tenant is None:
        raise IngestError("--grant-to needs --tenant (the owner of the points)")
    from vecdb.cli import ingest_documents as docs  # documents: .npz, Parquet token lists

    if docs.is_documents(file, vector_column):
        return docs.ingest_documents(file, collection, target, dim, metric, ids_from,
                                     vector_column, batch_size, resume, progress_file, api_key,
                                     tls_ca, optimize, quiet, tenant, grant_to)  # fmt: skip
    source = open_source(file, ids_from, vector_column)
    state_path = progress_path(file, progress_file)
    fingerprint = _fingerprint(file, collection, target)
    if tenant is not None:  # a resume must load into the same owner
        fingerprint["tenant"] = tenant
    start, complete = load_progress(state_path, fingerprint) if resume else (0, False)
    if complete:
        click.echo(f"{file}: already loaded into {collection!r} (progress file {state_path})")
        return 0
    try:
        remote = _is_remote(target)
        client = (
            vecdb.connect(target, api_key=api_key, tls=tls_ca) if remote else vecdb.connect(target)
        )
    except VecdbError as exc:
        raise IngestError(f"cannot open {target}: {exc}") from None
    batches = source.batches(start, batch_size)
    first: Batch | None = None
    sent: dict[int, Batch] = {}  # seq -> batch, until acknowledged

    def payload_stream() -> Iterator[tuple[Any, Any, Any]]:
        for seq, b in enumerate(_chain(first, batches)):
            sent[seq] = b
            yield b.ids, b.vectors, b.payloads

    rows_done, done_batches, t0 = start, 0, time.perf_counter()
    bar = tqdm(total=source.rows, initial=start, unit="vec", unit_scale=True, disable=quiet,
               desc=collection, dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    batch: Batch | None = None
    try:
        first = next(batches, None)
        ensure_collection(client, collection, source, first, dim, metric, index,
                          tenant is not None)  # fmt: skip
        tn: dict[str, Any] = {}
        if tenant is not None:
            ensure_tenant(client, collection, tenant)
            tn = {"tenant": tenant, "grant_to": list(grant_to) or None}
        if remote:
            acks: Iterator[Any] = client.upsert_stream(collection, payload_stream(), window=window,  # type: ignore[attr-defined]
                                                       **tn)  # fmt: skip
        else:
            acks = (
                (seq, client.upsert(collection, *item, **tn))
                for seq, item in enumerate(payload_stream())
            )
        for seq, _n in acks:
            batch = sent.pop(seq)
            rows_done = batch.start + len(batch.ids)
            save_progress(state_path, fingerprint, rows_done, complete=False)
            bar.update(len(batch.ids))
            done_batches += 1
            if stop_after is not None and done_batches >= stop_after:
                bar.close()
                click.echo(f"stopped after {done_batches} batches at row {rows_done}", err=True)
                return 3
        batch = None
        save_progress(state_path, fingerprint, rows_done, complete=True)
        if optimize:
            client.optimize(collection)
    except MalformedInput as exc:
        bar.close()
        raise IngestError(f"{exc}; rows before {rows_done} are stored; fix the file and rerun "
                          "with --resume") from None  # fmt: skip
    except VecdbError as exc:
        bar.close()
        failed = sent.get(min(sent)) if sent else batch
        raise IngestError(
            f"{_locate(exc, failed, file, target)}; rows before {rows_done} are stored"
        ) from None
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"interrupted at row {rows_done}; rerun with --resume to continue", err=True)
        return 130
    finally:
        bar.close()
        client.close()
    seconds = time.perf_counter() - t0
    loaded = rows_done - start
    click.echo(f"ingested {loaded:,} vectors into {collection!r} at {target} in {seconds:.2f} s "
               f"({loaded / max(seconds, 1e-9):,.0f} vectors/s)")  # fmt: skip
    return 0


def _chain(first: Batch | None, rest: Iterator[Batch]) -> Iterator[Batch]:
    if first is not None:
        yield first
        yield from rest
