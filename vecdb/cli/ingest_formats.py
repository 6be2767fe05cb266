"""Streaming readers of the files `vecdb ingest` loads, batch by batch from any row.

Formats: `.npy` (2-d numeric array, memory-mapped), TEXMEX `.fvecs` / `.bvecs` (each row an
int32 dimension then float32 / uint8 values), big-ann-benchmarks `.fbin` (uint32 rows, uint32
dim, then float32 rows), Parquet (an id column, a list-of-floats vector column, every other
column into the payload) and JSON lines (`{"id": .., "vector": [..], "payload": {..}}`; keys
other than id and vector become the payload when there is no "payload" key). Every reader
checks each row it yields (length, finite values) and raises `MalformedInput` naming the file,
the row and the reason, so the caller never sends the batch holding a bad row. Ids default to
the row number, which makes re-sending a batch after an interruption idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMATS = (".npy", ".fvecs", ".bvecs", ".fbin", ".parquet", ".jsonl", ".ndjson")
VECTOR_COLUMNS = ("vector", "emb", "embedding", "vectors")  # tried in order for Parquet


class MalformedInput(Exception):
    """A row (or the file layout) cannot be loaded; `row` is None for whole-file problems."""

    def __init__(self, path: Path, row: int | None, reason: str) -> None:
        where = f"{path}" if row is None else f"{path}: row {row}"
        super().__init__(f"{where}: {reason}")
        self.path, self.row, self.reason = path, row, reason


@dataclass
class Batch:
    """Consecutive rows `start .. start + len(ids) - 1` of the input."""

    start: int
    ids: list[Any]
    vectors: npt.NDArray[np.float32]
    payloads: list[Any] | None


@dataclass
class Source:
    """An opened input: its row count (None if unknown before reading) and dimension."""

    path: Path
    rows: int | None
    dim: int
    reader: Any  # callable(start, size, stop) -> Iterator[Batch]

    def batches(self, start: int, size: int, stop: int | None = None) -> Iterator[Batch]:
        """Batches of `size` rows from row `start` on, up to row `stop` (excluded) if given
        (the rows past it are not read, so a malformed one there is not reported)."""
        out: Iterator[Batch] = self.reader(start, size, stop)
        return out


def open_source(path: Path, ids_from: str | None, vector_column: str | None) -> Source:
    """Open `path` by its suffix; raise `MalformedInput` if its layout is wrong."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise MalformedInput(path, None, "no such file")
    if suffix not in FORMATS:
        raise MalformedInput(
            path, None, f"unsupported suffix {suffix!r} (use {', '.join(FORMATS)})"
        )
    if ids_from is not None and suffix not in (".parquet", ".jsonl", ".ndjson"):
        raise MalformedInput(path, None, "--ids-from needs a Parquet or JSON lines file")
    if suffix == ".npy":
        return _matrix_source(path, _open_npy(path))
    if suffix in (".fvecs", ".bvecs"):
        return _vecs_source(path, np.float32 if suffix == ".fvecs" else np.uint8)
    if suffix == ".fbin":
        return _matrix_source(path, _open_fbin(path))
    if suffix == ".parquet":
        return _parquet_source(path, ids_from, vector_column)
    return _jsonl_source(path, ids_from)


def check_rows(path: Path, start: int, vectors: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """float32 copy of `vectors`, or `MalformedInput` at the first non-finite row."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MalformedInput(path, start + row, "vector holds NaN or infinity")
    return out


# -- fixed-width matrices (.npy, .fbin) ------------------------------------------------------


def _open_npy(path: Path) -> npt.NDArray[Any]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except EOFError:  # numpy's word for an empty (or cut short) file
        raise MalformedInput(path, None, "not a readable .npy file: it is empty") from None
    except (ValueError, OSError) as exc:
        raise MalformedInput(path, None, f"not a readable .npy file: {exc}") from None
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise MalformedInput(
            path, None, f"expected a 2-d numeric array, found {arr.dtype} {arr.shape}"
        )
    out: npt.NDArray[Any] = arr
    return out


def _open_fbin(path: Path) -> npt.NDArray[Any]:
    size = path.stat().st_size
    if size < 8:
        raise MalformedInput(path, None, f"{size} bytes is too short for the 8-byte header")
    n, d = (int(x) for x in np.fromfile(path, dtype="<u4", count=2))
    if d == 0 or size != 8 + n * d * 4:
        raise MalformedInput(
            path, None, f"header says {n} rows x {d} dims ({8 + n * d * 4} bytes), file has {size}"
        )
    return np.memmap(path, dtype="<f4", mode="r", offset=8, shape=(n, d))


def _matrix_source(path: Path, arr: npt.NDArray[Any]) -> Source:
    def reader(start: int, size: int, stop: int | None) -> Iterator[Batch]:
        end = arr.shape[0] if stop is None else min(stop, arr.shape[0])
        for lo in range(start, end, size):
            hi = min(end, lo + size)
            yield Batch(lo, list(range(lo, hi)), check_rows(path, lo, arr[lo:hi]), None)

    return Source(path, int(arr.shape[0]), int(arr.shape[1]), reader)


# -- TEXMEX .fvecs / .bvecs ------------------------------------------------------------------


def _vecs_source(path: Path, dtype: type[np.generic]) -> Source:
    item = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size < 4:
        raise MalformedInput(path, None, "file is shorter than one row header")
    dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if dim <= 0:
        raise MalformedInput(path, 0, f"row header says dimension {dim}")
    row_bytes = 4 + dim * item
    if size % row_bytes:
        raise MalformedInput(
            path, size // row_bytes, f"truncated: {size % row_bytes} trailing bytes, rows are "
            f"{row_bytes} bytes (dimension {dim})",
        )  # fmt: skip
    n = size // row_bytes
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, row_bytes))

    def reader(start: int, bsize: int, stop: int | None) -> Iterator[Batch]:
        end = n if stop is None else min(stop, n)
        for lo in range(start, end, bsize):
            hi = min(end, lo + bsize)
            block = np.asarray(raw[lo:hi])
            dims = block[:, :4].copy().view("<i4").ravel()
            wrong = np.flatnonzero(dims != dim)
            if wrong.size:
                r = int(wrong[0])
                raise MalformedInput(
                    path, lo + r, f"row header says dimension {dims[r]}, not {dim}"
                )
            values = block[:, 4:].copy().view(np.dtype(dtype).newbyteorder("<"))
            yield Batch(lo, list(range(lo, hi)), check_rows(path, lo, values), None)

    return Source(path, n, dim, reader)


# -- Parquet ---------------------------------------------------------------------------------


def open_parquet(path: Path) -> Any:
    """`pyarrow.parquet.ParquetFile` of `path` (MalformedInput when it is not one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedInput(path, None, f"not a readable Parquet file: {exc}") from None


def parquet_rows(pf: Any, start: int, stop: int | None, size: int) -> Iterator[tuple[int, Any]]:
    """Rows start..stop-1 (stop None: to the end) of a `ParquetFile`, read `size` at a time:
    (the first row's number, a pyarrow RecordBatch of them), batches before `start` skipped."""
    row = 0
    for rb in pf.iter_batches(batch_size=size):
        n = rb.num_rows
        if stop is not None and row >= stop:
            return
        if row + n > start:
            skip = max(0, start - row)
            yield row + skip, rb.slice(skip, None if stop is None else stop - row - skip)
        row += n


def _parquet_source(path: Path, ids_from: str | None, vector_column: str | None) -> Source:
    pf = open_parquet(path)
    names = pf.schema_arrow.names
    vcol = vector_column or next((c for c in VECTOR_COLUMNS if c in names), None)
    if vcol is None or vcol not in names:
        raise MalformedInput(
            path,
            None,
            f"no vector column (tried {vector_column or VECTOR_COLUMNS}; columns: {names})",
        )
    idcol = ids_from if ids_from is not None else ("id" if "id" in names else None)
    if idcol is not None and idcol not in names:
        raise MalformedInput(path, None, f"--ids-from column {idcol!r} not in {names}")
    rest = [c for c in names if c not in (vcol, idcol)]
    first = pf.read_row_group(0, columns=[vcol]).column(0) if pf.num_row_groups else None
    dim = len(first[0].as_py() or []) if first is not None and len(first) else 0

    def reader(start: int, size: int, stop: int | None) -> Iterator[Batch]:
        for lo, table in parquet_rows(pf, start, stop, size):
            vectors = _rows_to_matrix(path, lo, table.column(vcol).to_pylist(), dim)
            ids = table.column(idcol).to_pylist() if idcol else list(range(lo, lo + len(vectors)))
            for i, v in enumerate(ids):
                if v is None:
                    raise MalformedInput(path, lo + i, f"id column {idcol!r} is null")
            payloads = None
            if rest:
                cols = {c: table.column(c).to_pylist() for c in rest}
                payloads = [jsonable({c: cols[c][i] for c in rest}) for i in range(len(ids))]
            yield Batch(lo, ids, vectors, payloads)

    return Source(path, int(pf.metadata.num_rows), dim, reader)


def jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """Payload columns of types JSON lacks (dates, decimals, bytes) become strings."""
    out: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return out


def _rows_to_matrix(path: Path, start: int, rows: list[Any], dim: int) -> npt.NDArray[np.float32]:
    for i, r in enumerate(rows):
        if not isinstance(r, (list, tuple)) or len(r) != dim:
            n = (
                "null"
                if r is None
                else (len(r) if isinstance(r, (list, tuple)) else type(r).__name__)
            )
            raise MalformedInput(path, start + i, f"expected a vector of {dim} numbers, got {n}")
    try:
        mat = np.asarray(rows, dtype=np.float64).reshape(len(rows), dim)
    except (TypeError, ValueError) as exc:
        for i, r in enumerate(rows):  # find the row at fault
            try:
                np.asarray(r, dtype=np.float64)
            except (TypeError, ValueError):
                raise MalformedInput(path, start + i, f"vector holds a non-number: {exc}") from None
        raise MalformedInput(path, start, f"vectors do not convert: {exc}") from None
    return check_rows(path, start, mat)


# -- JSON lines ------------------------------------------------------------------------------


def _jsonl_source(path: Path, ids_from: str | None) -> Source:
    idkey = ids_from or "id"
    dim = 0
    with path.open("rb") as fh:
        first = fh.readline()
        rows = (1 if first else 0) + sum(1 for _ in fh)
    if first.strip():
        try:
            obj = json.loads(first)
            dim = len(obj.get("vector") or []) if isinstance(obj, dict) else 0
        except ValueError:
            dim = 0  # the reader reports row 0 precisely

    def parse(line: bytes, row: int) -> tuple[Any, Any, Any]:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise MalformedInput(path, row, f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict) or "vector" not in obj:
            raise MalformedInput(path, row, 'expected an object with a "vector" key')
        ident = obj.get(idkey, row) if (ids_from or "id" in obj) else row
        if ids_from and idkey not in obj:
            raise MalformedInput(path, row, f"missing id key {idkey!r}")
        if "payload" in obj:
            payload = obj["payload"]
        else:
            payload = {k: v for k, v in obj.items() if k not in (idkey, "vector")} or None
        return ident, obj["vector"], payload

    def reader(start: int, size: int, stop: int | None) -> Iterator[Batch]:
        ids: list[Any] = []
        rows: list[Any] = []
        payloads: list[Any] = []
        lo = start
        with path.open("rb") as fh:
            for row, line in enumerate(fh):
                if row < start:
                    continue
                if stop is not None and row >= stop:
                    break
                if not line.strip():
                    raise MalformedInput(path, row, "empty line")
                ident, vec, payload = parse(line, row)
                ids.append(ident)
                rows.append(vec)
                payloads.append(payload)
                if len(ids) == size:
                    yield _jsonl_batch(path, lo, ids, rows, payloads, dim)
                    lo, ids, rows, payloads = row + 1, [], [], []
        if ids:
            yield _jsonl_batch(path, lo, ids, rows, payloads, dim)

    return Source(path, rows, dim, reader)


def _jsonl_batch(
    path: Path, lo: int, ids: list[Any], rows: list[Any], payloads: list[Any], dim: int
) -> Batch:
    vectors = _rows_to_matrix(path, lo, rows, dim)
    return Batch(lo, ids, vectors, payloads if any(p is not None for p in payloads) else None)
