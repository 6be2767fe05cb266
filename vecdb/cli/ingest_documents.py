"""`vecdb ingest` of multi-vector documents: readers and the load loop.

Owns the document inputs and their loading into a kind="multivector" collection:
- `.npz` with `tokens` (N, d) numbers and `offsets` (D+1,) document boundaries, optional
  `ids` (D,) (ints or strings; default the document number) and `weights` (N,) per-token
  salience;
- Parquet with a token column (`--vector-column`, else the first of DOC_COLUMNS) holding a
  list of token vectors per row, an optional `weights` list column, ids from `--ids-from`
  (else the row number) and every other column in the payload.
Documents go out in batches of at most `--batch-size` documents and MAX_TOKENS_PER_REQUEST
tokens; every acknowledged batch advances the same progress file as dense loads, so
`--resume` continues after the last one. A document that is not a matrix of finite numbers is
`MalformedInput` naming the file and the document. Creates the collection (kind
"multivector") when --dim or --metric is given; `--tenant` / `--grant-to` as for points.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

import vecdb
from vecdb.cli.ingest import (
    IngestError,
    _fingerprint,
    ensure_tenant,
    load_progress,
    progress_path,
    save_progress,
)
from vecdb.cli.ingest_formats import MalformedInput
from vecdb.client import _is_remote
from vecdb.engine.doc_rules import MAX_TOKENS_PER_REQUEST
from vecdb.errors import NotFound, VecdbError

DOC_COLUMNS = ("tokens", "document", "patches", "embeddings", "multivector")


@dataclass
class DocBatch:
    """Consecutive documents `start .. start + len(ids) - 1` of the input."""

    start: int
    ids: list[Any]
    docs: list[npt.NDArray[np.float32]]
    weights: list[npt.NDArray[np.float32] | None] | None
    payloads: list[Any] | None


def is_documents(path: Path, vector_column: str | None) -> bool:
    """An .npz file, or a Parquet file whose token column holds lists of vectors."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return True
    if suffix != ".parquet" or not path.is_file():
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    col = _doc_column(schema.names, vector_column)
    if col is None:
        return False
    t = schema.field(col).type

    def listy(x: Any) -> bool:
        return bool(pa.types.is_list(x) or pa.types.is_large_list(x)
                    or pa.types.is_fixed_size_list(x))  # fmt: skip

    return listy(t) and listy(t.value_type)


def _doc_column(names: list[str], explicit: str | None) -> str | None:
    if explicit is not None:
        return explicit if explicit in names else None
    return next((c for c in DOC_COLUMNS if c in names), None)


def _matrix(path: Path, row: int, value: Any) -> npt.NDArray[np.float32]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MalformedInput(path, row, "a document must be a matrix of numbers") from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise MalformedInput(path, row, f"a document must be a non-empty matrix, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise MalformedInput(path, row, "NaN or inf in the document")
    return arr.astype(np.float32)


def read_documents(
    path: Path, ids_from: str | None, vector_column: str | None
) -> tuple[int, int, Iterator[tuple[Any, Any, Any, Any]]]:
    """(documents, dim, iterator of (id, tokens, weights, payload))."""
    if path.suffix.lower() == ".npz":
        z = np.load(path, allow_pickle=False)
        if "tokens" not in z or "offsets" not in z:
            raise MalformedInput(path, None, "an .npz of documents needs 'tokens' and 'offsets'")
        tokens, offsets = z["tokens"], z["offsets"].astype(np.int64)
        if tokens.ndim != 2 or offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(tokens):
            raise MalformedInput(path, None, "offsets must run from 0 to the token count")
        if np.any(np.diff(offsets) < 0):
            raise MalformedInput(path, None, "offsets must not decrease")
        n = len(offsets) - 1
        ids = z["ids"].tolist() if "ids" in z else list(range(n))
        weights = z["weights"] if "weights" in z else None

        def npz_rows() -> Iterator[tuple[Any, Any, Any, Any]]:
            for i in range(n):
                lo, hi = int(offsets[i]), int(offsets[i + 1])
                w = None if weights is None else np.asarray(weights[lo:hi], np.float32)
                yield ids[i], _matrix(path, i, tokens[lo:hi]), w, None

        return n, int(tokens.shape[1]), npz_rows()
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    col = _doc_column(table.column_names, vector_column)
    if col is None:
        raise MalformedInput(path, None, f"no token column (tried {', '.join(DOC_COLUMNS)})")
    rest = [c for c in table.column_names if c not in (col, ids_from, "weights")]
    if ids_from is not None and ids_from not in table.column_names:
        raise MalformedInput(path, None, f"no column {ids_from!r} for --ids-from")
    rows = table.to_pylist()
    dim = len(rows[0][col][0]) if rows and rows[0][col] else 0

    def pq_rows() -> Iterator[tuple[Any, Any, Any, Any]]:
        for i, r in enumerate(rows):
            w = r.get("weights")
            pay = {c: r[c] for c in rest} or None
            yield (r[ids_from] if ids_from else i, _matrix(path, i, r[col]),
                   None if w is None else np.asarray(w, np.float32), pay)  # fmt: skip

    return len(rows), dim, pq_rows()


def batched(rows: Iterator[tuple[Any, Any, Any, Any]], start: int, size: int) -> Iterator[DocBatch]:
    """Batches from document `start` on, at most `size` documents / MAX_TOKENS_PER_REQUEST."""
    cur: DocBatch | None = None
    tokens = 0
    for i, (pid, doc, w, pay) in enumerate(rows):
        if i < start:
            continue
        if cur is not None and (len(cur.ids) >= size or tokens + len(doc) > MAX_TOKENS_PER_REQUEST):
            yield cur
            cur = None
        if cur is None:
            cur, tokens = DocBatch(i, [], [], [], []), 0
        cur.ids.append(pid)
        cur.docs.append(doc)
        assert cur.weights is not None and cur.payloads is not None
        cur.weights.append(w)
        cur.payloads.append(pay)
        tokens += len(doc)
    if cur is not None:
        yield cur


def ingest_documents(
    file: Path, collection: str, target: str, dim: int | None, metric: str | None,
    ids_from: str | None, vector_column: str | None, batch_size: int, resume: bool,
    progress_file: str | None, api_key: str | None, tls_ca: str | None, optimize: bool,
    quiet: bool, tenant: str | None = None, grant_to: tuple[str, ...] = (),
) -> int:  # fmt: skip
    """Load a document file; returns the exit code. With `tenant` the documents are its
    (a multi-tenant collection; the tenant is created if absent, and so is the collection,
    as multi-tenant, when --dim/--metric create it), granted to `grant_to` as well."""
    n, file_dim, rows = read_documents(file, ids_from, vector_column)
    state_path = progress_path(file, progress_file)
    fingerprint = _fingerprint(file, collection, target)
    tn: dict[str, Any] = {}  # the upserts' owner and grantees
    if tenant is not None:
        fingerprint["tenant"] = tenant  # a resume must load into the same owner
        tn = {"tenant": tenant, "grant_to": list(grant_to) or None}
    start, complete = load_progress(state_path, fingerprint) if resume else (0, False)
    if complete:
        click.echo(f"{file}: already loaded into {collection!r} (progress file {state_path})")
        return 0
    try:
        client = (vecdb.connect(target, api_key=api_key, tls=tls_ca) if _is_remote(target)
                  else vecdb.connect(target))  # fmt: skip
    except VecdbError as exc:
        raise IngestError(f"cannot open {target}: {exc}") from None
    done, t0 = start, time.perf_counter()
    try:
        try:
            info = client.get_collection(collection)
            if info.kind.value != "multivector":
                raise IngestError(f"collection {collection!r} is not kind='multivector'")
        except NotFound:
            if dim is None and metric is None:
                raise IngestError(f"collection {collection!r} does not exist; pass --dim and/or "
                                  "--metric to create it") from None  # fmt: skip
            client.create_collection(collection, dim or file_dim, metric or "cosine",
                                     kind="multivector", multi_tenant=tenant is not None)  # fmt: skip
        if tenant is not None:
            ensure_tenant(client, collection, tenant)
        for b in batched(rows, start, batch_size):
            pays = b.payloads if any(p is not None for p in b.payloads or []) else None
            ws = b.weights if any(w is not None for w in b.weights or []) else None
            try:
                client.upsert_documents(collection, b.ids, b.docs, weights=ws, payloads=pays,
                                        **tn)  # fmt: skip
            except VecdbError as exc:
                raise IngestError(f"{file}: documents {b.start}..{b.start + len(b.ids) - 1}: "
                                  f"{exc}; documents before {done} are stored") from None  # fmt: skip
            done = b.start + len(b.ids)
            save_progress(state_path, fingerprint, done, complete=False)
            if not quiet:
                click.echo(f"\r{collection}: {done}/{n} documents", nl=False, err=True)
        save_progress(state_path, fingerprint, done, complete=True)
        if optimize:
            client.optimize(collection)
    except MalformedInput as exc:
        raise IngestError(f"{exc}; documents before {done} are stored; fix the file and rerun "
                          "with --resume") from None  # fmt: skip
    finally:
        client.close()
    seconds = time.perf_counter() - t0
    click.echo(f"ingested {done - start:,} documents into {collection!r} at {target} in "
               f"{seconds:.2f} s")  # fmt: skip
    return 0
