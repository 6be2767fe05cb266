"""`vecdb ingest FILE`: bulk-load a vector file into a collection, resumably.

Reads the file batch by batch (`vecdb.cli.ingest_formats`), sends each batch through the SDK
(over gRPC the streaming upsert with acknowledgements and a credit window; embedded, one
durable upsert per batch) and, after each acknowledgement, records the rows done in a small
progress file next to the input (`vecdb.cli.ingest_progress`). With `--resume` a later run
continues after the last acknowledged batch, also once rows from there on were fixed; since ids
default to the row number, a batch sent twice overwrites itself instead of duplicating. A
malformed row stops the load before its batch is sent and is reported with file, row and
reason. Every check of the options against the file and the collection (dimension, metric,
index, id type, tenants) is made before anything is created. Document files go to
`vecdb.cli.ingest_documents`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

import vecdb
from vecdb import config as caps
from vecdb.cli.ingest_formats import Batch, MalformedInput, Source, open_source
from vecdb.cli.ingest_progress import Progress, ProgressError, RowDigest, progress_path
from vecdb.client import _is_remote
from vecdb.client.backpressure import Patience, buffer_full
from vecdb.client.channel import DEFAULT_TIMEOUT
from vecdb.errors import InvalidArgument, NotFound, ResourceExhausted, VecdbError
from vecdb.rpc.status import REQUEST_TOO_LARGE
from vecdb.types import CollectionInfo, IndexKind, Metric

METRICS = tuple(m.value for m in Metric)
INDEXES = tuple(k.value for k in IndexKind if k is not IndexKind.MULTIVECTOR)  # dense indexes
# A server error about one row of a batch: "vectors[12][3] ...", "documents[7]: ..."
_ROW_IN_MESSAGE = re.compile(
    r"^(?:batch seq=\d+: )?(ids|vectors|payloads|documents|weights)\[(\d+)\]"
)


class IngestError(Exception):
    """A failure to report to the user as one line (exit code 1)."""


def ensure_collection(
    client: vecdb.Client, name: str, source: Source, first: Batch | None, dim: int | None,
    metric: str | None, index: str | None, tenant: str | None = None,
    grant_to: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """Check the collection fits the input and the options, creating it when --dim or
    --metric is given (multi-tenant with --tenant). Options that contradict an existing
    collection are refused (they would otherwise be silently ignored); every check is made
    before anything is created."""
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
        if not (dim or source.dim):
            raise IngestError(
                f"{source.path} holds no vectors to tell the dimension of collection {name!r}; "
                "pass --dim to create it"
            ) from None
        check_tenants(client, name, None, tenant, grant_to)
        client.create_collection(name, dim or source.dim, metric or "cosine",
                                 id_type="str" if str_ids else "int", index=index,
                                 multi_tenant=tenant is not None)  # fmt: skip
        return
    if info.kind.value != "dense":
        raise IngestError(f"collection {name!r} holds documents (kind={info.kind.value!r}), "
                          f"and {source.path} holds vectors")  # fmt: skip
    refuse_contradictions(name, info, {"dim": dim, "metric": metric, "index": index})
    if source.dim and info.dim != source.dim:
        raise IngestError(f"collection {name!r} has dim {info.dim}, {source.path} has {source.dim}")
    if first is not None and first.ids and str_ids != (info.id_type.value == "str"):
        kind = "string" if str_ids else "integer"
        raise IngestError(
            f"collection {name!r} has {info.id_type.value} ids but {source.path} gives {kind} ids"
        )
    check_tenants(client, name, info, tenant, grant_to)


def refuse_contradictions(name: str, info: CollectionInfo, asked: dict[str, Any]) -> None:
    """--dim / --metric / --index values that differ from the existing collection's."""
    have = {"dim": info.dim, "metric": info.metric.value, "index": info.index.value}
    for option, value in asked.items():
        if isinstance(value, str):
            value = value.lower()
        if value is not None and value != have[option]:
            raise IngestError(
                f"--{option} {value} contradicts collection {name!r}, which has {option} "
                f"{have[option]}; drop the option or load into another collection"
            )


def check_tenants(
    client: vecdb.Client, name: str, info: CollectionInfo | None, tenant: str | None,
    grant_to: tuple[str, ...],
) -> None:  # fmt: skip
    """--tenant fits the collection (`info`; None: about to be created, multi-tenant if
    --tenant is given) and every --grant-to tenant exists, before anything is created."""
    if info is not None and tenant is not None and not info.multi_tenant:
        raise IngestError(f"collection {name!r} is not multi-tenant: --tenant {tenant} does not "
                          "apply; drop it")  # fmt: skip
    if info is not None and tenant is None and info.multi_tenant:
        raise IngestError(f"collection {name!r} is multi-tenant: pass --tenant OWNER")
    for grantee in grant_to:
        if grantee == tenant:
            continue
        if info is None:
            raise IngestError(
                f"--grant-to {grantee}: collection {name!r} does not exist yet, so it has no "
                f"tenant {grantee!r}; create the collection and that tenant first"
            )
        try:
            client.get_tenant(name, grantee)
        except NotFound:
            raise IngestError(f"--grant-to {grantee}: collection {name!r} has no tenant "
                              f"{grantee!r}; create it first") from None  # fmt: skip


def ensure_tenant(client: vecdb.Client, name: str, tenant: str) -> None:
    """The owner tenant of an ingest exists (created if absent)."""
    try:
        client.get_tenant(name, tenant)
    except NotFound:
        client.create_tenant(name, tenant)


def locate(exc: VecdbError, start: int | None, file: Path, target: str) -> str:
    """A row error ("vectors[12][3] ...") of the batch starting at row `start` becomes
    "FILE: row START+12: ..."; any other error (collection, key, server, ...) is about the
    load's configuration and names the target, not the rows that happened to be in flight."""
    m = _ROW_IN_MESSAGE.match(exc.message)
    if start is not None and m and isinstance(exc, InvalidArgument):
        return f"{file}: row {start + int(m.group(2))}: {exc.message}"
    return f"{target}: {type(exc).__name__}: {exc.message}"


def stored(rows_done: int, what: str = "rows") -> str:
    return f"{what} before {rows_done} are stored" if rows_done else f"no {what} are stored"


def connect(target: str, api_key: str | None, tls_ca: str | None,
            timeout: float | None = None) -> vecdb.Client:  # fmt: skip
    """A client of the target: a data directory (embedded) or HOST:PORT (each call under
    `timeout` seconds, retries included; None: the SDK's default)."""
    try:
        if _is_remote(target):
            return vecdb.connect(target, api_key=api_key, tls=tls_ca, timeout=timeout)
        return vecdb.connect(target)
    except VecdbError as exc:
        raise IngestError(f"cannot open {target}: {exc}") from None


def _dense_digest(source: Source, batch_size: int) -> Callable[[int, int], str]:
    """digest_of(lo, hi) for the progress file: rows lo..hi-1 as they read now."""

    def digest_of(lo: int, hi: int) -> str:
        digest = RowDigest()
        for b in source.batches(lo, batch_size, stop=hi):
            digest.add(b.ids, b.payloads, b.vectors)
        return digest.hexdigest()

    return digest_of


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--collection", required=True, help="Collection to load into.")
@click.option(
    "--target",
    default="./vecdb-data",
    show_default=True,
    help="A data directory (embedded) or HOST:PORT of a vecdb server.",
)
@click.option(
    "--dim",
    type=int,
    default=None,
    help="Create the collection with this dimension (must match the file and an existing "
    "collection).",
)
@click.option(
    "--metric",
    type=click.Choice(METRICS, case_sensitive=False),
    default=None,
    help="Metric when creating the collection (must match an existing one; documents: cosine "
    "or ip).",
)
@click.option(
    "--index",
    type=click.Choice(INDEXES),
    default=None,
    help="Index kind when creating a collection of vectors [spann] (must match an existing "
    "one; documents have their own index, so it is refused for them).",
)
@click.option(
    "--ids-from",
    default=None,
    help="Parquet column / JSON key / .npz array holding the ids [the `id` column or key, an "
    ".npz's `ids`, when present; else the row number].",
)
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
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help=f"Seconds each call to a server may take, retries included (an unreachable server is "
    f"reported after it) [{DEFAULT_TIMEOUT:g}].",
)
@click.option(
    "--window",
    type=click.IntRange(1),
    default=None,
    help="Vectors to a server: batches in flight on the one upsert stream [server's choice]. "
    "Documents go one batch per call, so it is refused for them.",
)
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
    help="Also grant the points or documents to this tenant, which must exist (repeatable; "
    "needs --tenant).",
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
    tenant: str | None, grant_to: tuple[str, ...], timeout: float | None,
) -> None:  # fmt: skip
    """Load FILE (vectors: .npy .fvecs .bvecs .fbin .parquet .jsonl .ndjson; documents: .npz,
    Parquet lists of token vectors) into a collection."""
    try:
        code = run_ingest(file, collection, target, dim, metric, index, ids_from, vector_column,
                          batch_size, resume, progress_file, api_key, tls_ca, window, optimize,
                          quiet, stop_after, tenant, grant_to, timeout)  # fmt: skip
    except (IngestError, MalformedInput, ProgressError) as exc:
        click.echo(f"vecdb ingest: error: {exc}", err=True)
        code = 1
    sys.exit(code)


def run_ingest(
    file: Path, collection: str, target: str, dim: int | None, metric: str | None,
    index: str | None, ids_from: str | None, vector_column: str | None, batch_size: int,
    resume: bool, progress_file: str | None, api_key: str | None, tls_ca: str | None,
    window: int | None, optimize: bool, quiet: bool, stop_after: int | None,
    tenant: str | None = None, grant_to: tuple[str, ...] = (), timeout: float | None = None,
) -> int:  # fmt: skip
    """The body of `vecdb ingest`; returns the exit code."""
    if grant_to and tenant is None:
        raise IngestError("--grant-to needs --tenant (the owner of the points)")
    from vecdb.cli import ingest_documents as docs  # documents: .npz, Parquet token lists

    if docs.is_documents(file, vector_column):
        for option, value in (("--index", index), ("--window", window)):
            if value is not None:
                raise IngestError(f"{option} {value} does not apply to documents ({file}): "
                                  f"{docs.NOT_FOR_DOCUMENTS[option]}")  # fmt: skip
        return docs.ingest_documents(
            file, collection, target, dim, metric, ids_from, vector_column, batch_size, resume,
            progress_file, api_key, tls_ca, optimize, quiet, tenant, grant_to, stop_after, timeout,
        )  # fmt: skip
    source = open_source(file, ids_from, vector_column)
    progress = Progress(progress_path(file, progress_file), file, target, collection, tenant)
    start = progress.first_row(resume, _dense_digest(source, batch_size))
    if start is None:  # that load completed
        return 0
    client = connect(target, api_key, tls_ca, timeout)
    remote = _is_remote(target)
    batches = source.batches(start, batch_size)
    first: Batch | None = None
    sent: dict[int, Batch] = {}  # seq -> batch, until acknowledged

    def payload_stream() -> Iterator[tuple[Any, Any, Any]]:
        for seq, b in enumerate(_chain(first, batches)):
            sent[seq] = b
            yield b.ids, b.vectors, b.payloads

    rows_done, done_batches, t0 = start, 0, time.perf_counter()
    digest = RowDigest()  # of the rows this run stored, for a later --resume to check
    bar = tqdm(total=source.rows, initial=start, unit="vec", unit_scale=True, disable=quiet,
               desc=collection, dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    batch: Batch | None = None
    patience = Patience()  # a write buffer full ahead of its index build is waited out
    try:
        first = next(batches, None)
        ensure_collection(client, collection, source, first, dim, metric, index, tenant,
                          grant_to)  # fmt: skip
        tn: dict[str, Any] = {}
        if tenant is not None:
            ensure_tenant(client, collection, tenant)
            tn = {"tenant": tenant, "grant_to": list(grant_to) or None}
        refused = False  # a stream refused as over a server's lower message limit, once
        while True:
            if remote:
                acks: Iterator[Any] = client.upsert_stream(collection, payload_stream(),  # type: ignore[attr-defined]
                                                           window=window, **tn)  # fmt: skip
            else:
                acks = (
                    (seq, client.upsert(collection, *item, **tn))
                    for seq, item in enumerate(payload_stream())
                )
            try:
                for seq, _n in acks:
                    batch = sent.pop(seq)
                    rows_done = batch.start + len(batch.ids)
                    digest.add(batch.ids, batch.payloads, batch.vectors)
                    progress.save(start, rows_done, digest, complete=False)
                    bar.update(len(batch.ids))
                    if patience.progressed():  # after a wait: the bar's note goes
                        bar.set_postfix_str("")
                    done_batches += 1
                    if stop_after is not None and done_batches >= stop_after:
                        bar.close()
                        click.echo(f"stopped after {done_batches} batches at row {rows_done}",
                                   err=True)  # fmt: skip
                        return 3
                break
            except ResourceExhausted as exc:
                if buffer_full(exc):  # the index build is behind: wait (or raise, when spent)
                    bar.set_postfix_str("waiting for the index: write buffer full")
                    patience.wait(exc)
                elif refused or not remote or exc.reason != REQUEST_TOO_LARGE:
                    raise
                else:  # the SDK now knows the server's limit and splits batches at it
                    refused = True
                # go on from the last acknowledged row (on a new stream when remote)
                first = None
                sent.clear()
                batches = source.batches(rows_done, batch_size)
        batch = None
        progress.save(start, rows_done, digest, complete=True)
        if optimize:
            client.optimize(collection)
    except MalformedInput as exc:
        bar.close()
        raise IngestError(f"{exc}; {stored(rows_done)}; fix the file and rerun with --resume"
                          ) from None  # fmt: skip
    except VecdbError as exc:
        bar.close()
        failed = sent.get(min(sent)) if sent else batch
        where = locate(exc, None if failed is None else failed.start, file, target)
        raise IngestError(f"{where}; {stored(rows_done)}") from None
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
    if patience.waits:
        click.echo(f"waited {patience.waited:.0f} s for the index to catch up (write buffer "
                   f"full {patience.waits} times)")  # fmt: skip
    return 0


def _chain(first: Batch | None, rest: Iterator[Batch]) -> Iterator[Batch]:
    if first is not None:
        yield first
    yield from rest
