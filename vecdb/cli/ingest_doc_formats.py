"""Readers of the multi-vector document files `vecdb ingest` loads, batch by batch from any
document.

- `.npz` with `tokens` (N, d) numbers and `offsets` (D+1,) document boundaries, optional
  `ids` (D,) (ints or strings; `--ids-from NAME` names another array; default the document
  number) and `weights` (N,) per-token salience;
- Parquet with a token column (`--vector-column`, else the first of DOC_COLUMNS) holding a
  list of token vectors per row, an optional `weights` list column, ids from `--ids-from`, else
  an `id` column when there is one, else the row number, and every other column in the
  payload.
The layout (arrays, their lengths and types, the id column's type) is checked when the file is
opened; each document as it is read (a non-empty matrix of finite numbers of the file's
dimension, weights one finite number per token), raising `MalformedInput` with the file and
the document's row, so the caller never sends the batch holding a bad document. Batches hold
at most `--batch-size` documents and MAX_TOKENS_PER_REQUEST tokens. Never touches a database.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.cli.ingest_formats import MalformedInput, jsonable, open_parquet, parquet_rows
from vecdb.engine.doc_rules import MAX_TOKENS_PER_REQUEST

DOC_COLUMNS = ("tokens", "document", "patches", "embeddings", "multivector")
# (row, id, tokens, weights or None, payload or None) of one document
DocRow = tuple[int, Any, npt.NDArray[np.float32], npt.NDArray[np.float32] | None, Any]


@dataclass
class DocBatch:
    """Consecutive documents `start .. start + len(ids) - 1` of the input."""

    start: int
    ids: list[Any]
    docs: list[npt.NDArray[np.float32]]
    weights: list[npt.NDArray[np.float32] | None]
    payloads: list[Any]


@dataclass
class DocSource:
    """An opened document file: its documents, their tokens' dimension (0 if no document
    tells) and whether its ids are strings."""

    path: Path
    count: int
    dim: int
    str_ids: bool
    rows: Callable[[int, int | None], Iterator[DocRow]]  # (start, stop) -> documents

    def batches(self, start: int, size: int, stop: int | None = None) -> Iterator[DocBatch]:
        """Batches from document `start` up to `stop` (excluded; None: the end), at most
        `size` documents and MAX_TOKENS_PER_REQUEST tokens each."""
        cur: DocBatch | None = None
        tokens = 0
        for row, pid, doc, w, pay in self.rows(start, stop):
            if cur is not None and (len(cur.ids) >= size
                                    or tokens + len(doc) > MAX_TOKENS_PER_REQUEST):  # fmt: skip
                yield cur
                cur = None
            if cur is None:
                cur, tokens = DocBatch(row, [], [], [], []), 0
            cur.ids.append(pid)
            cur.docs.append(doc)
            cur.weights.append(w)
            cur.payloads.append(pay)
            tokens += len(doc)
        if cur is not None:
            yield cur


def is_documents(path: Path, vector_column: str | None) -> bool:
    """An .npz file, or a Parquet file whose token column holds lists of vectors."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return True
    if suffix != ".parquet" or not path.is_file():
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
        return False  # the dense reader says what is wrong with it
    col = _doc_column(schema.names, vector_column)
    if col is None:
        return False
    t = schema.field(col).type
    return _listy(t) and _listy(t.value_type)


def _listy(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _doc_column(names: list[str], explicit: str | None) -> str | None:
    if explicit is not None:
        return explicit if explicit in names else None
    return next((c for c in DOC_COLUMNS if c in names), None)


def open_documents(path: Path, ids_from: str | None, vector_column: str | None) -> DocSource:
    """Open a document file by its suffix; raise `MalformedInput` if its layout is wrong."""
    if not path.is_file():
        raise MalformedInput(path, None, "no such file")
    if path.suffix.lower() == ".npz":
        return _npz_source(path, ids_from)
    return _parquet_source(path, ids_from, vector_column)


def _matrix(path: Path, row: int, value: Any, dim: int) -> npt.NDArray[np.float32]:
    if value is None:
        raise MalformedInput(path, row, "a document must be a non-empty matrix, got null")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MalformedInput(path, row, "a document must be a matrix of numbers (token "
                                        "vectors of one length)") from None  # fmt: skip
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise MalformedInput(path, row, f"a document must be a non-empty matrix, got {arr.shape}")
    if dim and arr.shape[1] != dim:
        raise MalformedInput(path, row, f"tokens of {arr.shape[1]} numbers, the file's are {dim}")
    if not np.isfinite(arr).all():
        raise MalformedInput(path, row, "NaN or inf in the document")
    return arr.astype(np.float32)


def _weights(path: Path, row: int, value: Any, tokens: int) -> npt.NDArray[np.float32] | None:
    if value is None:
        return None
    try:
        w = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise MalformedInput(path, row, "weights must be numbers") from None
    if w.shape != (tokens,):
        raise MalformedInput(path, row, f"{w.size} weights for {tokens} tokens (one per token)")
    if not np.isfinite(w).all():
        raise MalformedInput(path, row, "NaN or inf in the weights")
    return w


# -- .npz --------------------------------------------------------------------------------------


def _npz_source(path: Path, ids_from: str | None) -> DocSource:
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {name: z[name] for name in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MalformedInput(path, None, f"not a readable .npz file: {exc}") from None
    if "tokens" not in arrays or "offsets" not in arrays:
        raise MalformedInput(path, None, "an .npz of documents needs 'tokens' and 'offsets'")
    tokens, offsets = arrays["tokens"], arrays["offsets"]
    if tokens.ndim != 2 or tokens.dtype.kind not in "fiu":
        raise MalformedInput(path, None, f"'tokens' must be a 2-d array of numbers, found "
                                         f"{tokens.dtype} {tokens.shape}")  # fmt: skip
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) == 0:
        raise MalformedInput(path, None, "'offsets' must be a 1-d array of integers")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != len(tokens):
        raise MalformedInput(path, None, "offsets must run from 0 to the token count")
    if np.any(np.diff(offsets) < 0):
        raise MalformedInput(path, None, "offsets must not decrease")
    n = len(offsets) - 1
    key = ids_from or "ids"
    if ids_from is not None and key not in arrays:
        raise MalformedInput(path, None, f"--ids-from {key!r}: no such array (arrays: "
                                         f"{', '.join(sorted(arrays))})")  # fmt: skip
    ids: list[Any] | None = None
    str_ids = False
    if key in arrays:
        raw = arrays[key]
        if raw.ndim != 1 or len(raw) != n:
            raise MalformedInput(path, None, f"{key!r} holds {raw.size} ids for {n} documents "
                                             "(one per document)")  # fmt: skip
        if raw.dtype.kind not in "iuUS":
            raise MalformedInput(path, None, f"{key!r} must hold integers or strings, "
                                             f"found {raw.dtype}")  # fmt: skip
        str_ids = raw.dtype.kind in "US"
        ids = (raw.astype(str) if str_ids else raw).tolist()
    weights = arrays.get("weights")
    if weights is not None and (weights.ndim != 1 or len(weights) != len(tokens)):
        raise MalformedInput(path, None, f"'weights' holds {weights.size} numbers for "
                                         f"{len(tokens)} tokens (one per token)")  # fmt: skip
    dim = int(tokens.shape[1])

    def rows(start: int, stop: int | None) -> Iterator[DocRow]:
        for i in range(start, n if stop is None else min(stop, n)):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            doc = _matrix(path, i, tokens[lo:hi], dim)
            w = None if weights is None else _weights(path, i, weights[lo:hi], hi - lo)
            yield i, i if ids is None else ids[i], doc, w, None

    return DocSource(path, n, dim, str_ids, rows)


# -- Parquet -----------------------------------------------------------------------------------


def _parquet_source(path: Path, ids_from: str | None, vector_column: str | None) -> DocSource:
    import pyarrow as pa

    pf = open_parquet(path)
    names = pf.schema_arrow.names
    col = _doc_column(names, vector_column)
    if col is None:
        raise MalformedInput(path, None, f"no token column (tried {', '.join(DOC_COLUMNS)})")
    if ids_from is not None and ids_from not in names:
        raise MalformedInput(path, None, f"--ids-from {ids_from!r}: no such column ({names})")
    idcol = ids_from if ids_from is not None else ("id" if "id" in names else None)
    str_ids = False
    if idcol is not None:
        t = pf.schema_arrow.field(idcol).type
        str_ids = bool(pa.types.is_string(t) or pa.types.is_large_string(t))
        if not (str_ids or pa.types.is_integer(t)):
            raise MalformedInput(path, None, f"id column {idcol!r} holds {t}, not integers or "
                                             "strings")  # fmt: skip
    wcol = "weights" if "weights" in names and "weights" not in (col, idcol) else None
    rest = [c for c in names if c not in (col, idcol, wcol)]
    dim = 0  # the first document with tokens tells
    for rb in pf.iter_batches(batch_size=256, columns=[col]):
        first = next((d for d in rb.column(0).to_pylist() if d and isinstance(d[0], list)), None)
        if first is not None:
            dim = len(first[0])
            break

    def rows(start: int, stop: int | None) -> Iterator[DocRow]:
        for lo, table in parquet_rows(pf, start, stop, 256):
            for i, r in enumerate(table.to_pylist(), lo):
                pid = r[idcol] if idcol is not None else i
                if pid is None:
                    raise MalformedInput(path, i, f"id column {idcol!r} is null")
                doc = _matrix(path, i, r[col], dim)
                w = _weights(path, i, r[wcol], len(doc)) if wcol is not None else None
                pay = jsonable({c: r[c] for c in rest}) if rest else None
                yield i, pid, doc, w, pay

    return DocSource(path, int(pf.metadata.num_rows), dim, str_ids, rows)
