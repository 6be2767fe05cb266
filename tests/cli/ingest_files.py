"""Writers of small input files for the ingest tests, one per format `vecdb ingest` reads.

Each returns the vectors it wrote (float32) so tests can compare what was loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32) + 0.01


def write_npy(path: Path, x: np.ndarray) -> None:
    np.save(path, x)


def write_fvecs(path: Path, x: np.ndarray, dims: list[int] | None = None) -> None:
    """TEXMEX layout; `dims` overrides the per-row header (to make a malformed file)."""
    n, d = x.shape
    rows = np.empty((n, d + 1), dtype="<f4")
    rows[:, 1:] = x
    rows.view("<i4")[:, 0] = dims if dims is not None else d
    rows.tofile(path)


def write_bvecs(path: Path, x: np.ndarray) -> None:
    n, d = x.shape
    rows = np.empty((n, d + 4), dtype=np.uint8)
    rows[:, :4] = np.frombuffer(np.int32(d).astype("<i4").tobytes(), np.uint8)
    rows[:, 4:] = x
    rows.tofile(path)


def write_fbin(path: Path, x: np.ndarray) -> None:
    with open(path, "wb") as fh:
        fh.write(np.array(x.shape, "<u4").tobytes())
        fh.write(x.astype("<f4").tobytes())


def write_parquet(path: Path, x: np.ndarray, ids: list[Any], extra: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {"id": ids, "vector": [row.tolist() for row in x], **extra}
    pq.write_table(pa.table(cols), path, row_group_size=7)


def write_jsonl(path: Path, x: np.ndarray, payloads: list[Any] | None = None,
                broken: dict[int, str] | None = None) -> None:  # fmt: skip
    lines = []
    for i, row in enumerate(x):
        obj: dict[str, Any] = {"id": i, "vector": row.tolist()}
        if payloads is not None and payloads[i] is not None:
            obj["payload"] = payloads[i]
        lines.append(json.dumps(obj))
    for row, text in (broken or {}).items():
        lines[row] = text
    path.write_text("\n".join(lines) + "\n")


def progress_entry(path: Path) -> dict[str, Any]:
    """The one load a progress file records (rows_done, complete, ...)."""
    (entry,) = json.loads(path.read_text())["loads"]
    out: dict[str, Any] = entry
    return out


def documents(n: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    """n float32 documents of 2 to 5 tokens."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(t), dim)).astype(np.float32) for t in rng.integers(2, 6, n)]


def write_npz(path: Path, docs: list[np.ndarray], **arrays: Any) -> None:
    """Documents as `tokens` + `offsets`, with any other arrays (ids, weights) as given."""
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    np.savez(path, tokens=np.concatenate(docs), offsets=offsets, **arrays)
