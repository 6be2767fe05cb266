"""`vecdb ingest` of multi-vector documents: the load loop into a kind="multivector" collection.

Owns the document side of `vecdb ingest` (the readers are `vecdb.cli.ingest_doc_formats`):
every check of the options against the file and the collection (dimension, metric, id type,
tenants and grantees) is made before anything is created; the collection is created (kind
"multivector", string ids if the file's are strings) when --dim or --metric is given. Documents
go out one batch per `upsert_documents` call (not on a stream: `--window` and `--index` do not
apply), and every acknowledged batch advances the same progress file as dense loads, so
`--resume` continues after the last one. A document the server refuses is reported as
`FILE: row N: reason`; any other error names the target.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import vecdb
from vecdb.cli.ingest import (
    IngestError,
    check_tenants,
    connect,
    ensure_tenant,
    locate,
    refuse_contradictions,
    stored,
)
from vecdb.cli.ingest_doc_formats import DocBatch, DocSource, is_documents, open_documents
from vecdb.cli.ingest_formats import MalformedInput
from vecdb.cli.ingest_progress import Progress, RowDigest, progress_path
from vecdb.errors import NotFound, VecdbError

__all__ = ["NOT_FOR_DOCUMENTS", "ingest_documents", "is_documents"]

NOT_FOR_DOCUMENTS = {  # options of dense loads, refused for documents, and why
    "--index": "a multivector collection has its own index",
    "--window": "documents go one batch per call, not on a stream",
}
DOC_METRICS = ("cosine", "ip")  # MaxSim needs a similarity


def ensure_documents_collection(
    client: vecdb.Client, name: str, source: DocSource, dim: int | None, metric: str | None,
    tenant: str | None, grant_to: tuple[str, ...],
) -> None:  # fmt: skip
    """Check the collection fits the file and the options, creating it (kind "multivector")
    when --dim or --metric is given; nothing is created unless every check passes."""
    path = source.path
    if dim is not None and source.dim and dim != source.dim:
        raise IngestError(f"--dim {dim} but {path} holds {source.dim}-dimensional tokens")
    try:
        info = client.get_collection(name)
    except NotFound:
        if dim is None and metric is None:
            raise IngestError(f"collection {name!r} does not exist; pass --dim and/or --metric "
                              "to create it") from None  # fmt: skip
        if not (dim or source.dim):
            raise IngestError(f"{path} holds no tokens to tell the dimension of collection "
                              f"{name!r}; pass --dim to create it") from None  # fmt: skip
        check_tenants(client, name, None, tenant, grant_to)
        client.create_collection(name, dim or source.dim, metric or "cosine", kind="multivector",
                                 id_type="str" if source.str_ids else "int",
                                 multi_tenant=tenant is not None)  # fmt: skip
        return
    if info.kind.value != "multivector":
        raise IngestError(f"collection {name!r} holds vectors (kind={info.kind.value!r}), and "
                          f"{path} holds documents; load them into a kind='multivector' "
                          "collection")  # fmt: skip
    refuse_contradictions(name, info, {"dim": dim, "metric": metric})
    if source.dim and info.dim != source.dim:
        raise IngestError(f"collection {name!r} has dim {info.dim}, {path} has {source.dim}")
    if source.count and source.str_ids != (info.id_type.value == "str"):
        kind = "string" if source.str_ids else "integer"
        raise IngestError(
            f"collection {name!r} has {info.id_type.value} ids but {path} gives {kind} ids"
        )
    check_tenants(client, name, info, tenant, grant_to)


def _add(digest: RowDigest, b: DocBatch) -> None:
    """A batch's documents into the digest: ids, payloads, tokens, token counts, weights."""
    import numpy as np

    extra = [[len(d), None if w is None else w.tolist()] for d, w in zip(b.docs, b.weights)]
    digest.add(b.ids, b.payloads, np.concatenate(b.docs), extra)


def _digest_of(source: DocSource, batch_size: int) -> Callable[[int, int], str]:
    def digest_of(lo: int, hi: int) -> str:
        digest = RowDigest()
        for b in source.batches(lo, batch_size, stop=hi):
            _add(digest, b)
        return digest.hexdigest()

    return digest_of


def ingest_documents(
    file: Path, collection: str, target: str, dim: int | None, metric: str | None,
    ids_from: str | None, vector_column: str | None, batch_size: int, resume: bool,
    progress_file: str | None, api_key: str | None, tls_ca: str | None, optimize: bool,
    quiet: bool, tenant: str | None = None, grant_to: tuple[str, ...] = (),
    stop_after: int | None = None, timeout: float | None = None,
) -> int:  # fmt: skip
    """Load a document file; returns the exit code. With `tenant` the documents are its
    (a multi-tenant collection; the tenant is created if absent, and so is the collection,
    as multi-tenant, when --dim/--metric create it), granted to `grant_to` as well."""
    if metric is not None and metric.lower() not in DOC_METRICS:
        raise IngestError(f"--metric {metric}: documents are ranked by MaxSim, a similarity; "
                          f"use {' or '.join(DOC_METRICS)}")  # fmt: skip
    source = open_documents(file, ids_from, vector_column)
    progress = Progress(progress_path(file, progress_file), file, target, collection, tenant)
    start = progress.first_row(resume, _digest_of(source, batch_size))
    if start is None:  # that load completed
        return 0
    tn: dict[str, Any] = {}  # the upserts' owner and grantees
    if tenant is not None:
        tn = {"tenant": tenant, "grant_to": list(grant_to) or None}
    client = connect(target, api_key, tls_ca, timeout)
    done, sent, t0 = start, 0, time.perf_counter()
    digest = RowDigest()  # of the documents this run stored, for a later --resume to check
    b: DocBatch | None = None
    try:
        batches = source.batches(start, batch_size)
        first = next(batches, None)  # a malformed first document stops the load before it begins
        ensure_documents_collection(client, collection, source, dim, metric, tenant, grant_to)
        if tenant is not None:
            ensure_tenant(client, collection, tenant)
        for b in itertools.chain([] if first is None else [first], batches):
            pays = b.payloads if any(p is not None for p in b.payloads) else None
            ws = b.weights if any(w is not None for w in b.weights) else None
            client.upsert_documents(collection, b.ids, b.docs, weights=ws, payloads=pays, **tn)
            done = b.start + len(b.ids)
            _add(digest, b)
            progress.save(start, done, digest, complete=False)
            sent += 1
            if not quiet:
                click.echo(f"\r{collection}: {done:,}/{source.count:,} documents", nl=False,
                           err=True)  # fmt: skip
            if stop_after is not None and sent >= stop_after:
                click.echo(f"stopped after {sent} batches at document {done}", err=True)
                return 3
        b = None
        progress.save(start, done, digest, complete=True)
        if optimize:
            client.optimize(collection)
    except MalformedInput as exc:
        raise IngestError(f"{exc}; {stored(done, 'documents')}; fix the file and rerun with "
                          "--resume") from None  # fmt: skip
    except VecdbError as exc:
        where = locate(exc, None if b is None else b.start, file, target)
        raise IngestError(f"{where}; {stored(done, 'documents')}") from None
    finally:
        client.close()
        if not quiet:
            click.echo("", err=True)
    seconds = time.perf_counter() - t0
    click.echo(f"ingested {done - start:,} documents into {collection!r} at {target} in "
               f"{seconds:.2f} s")  # fmt: skip
    return 0
