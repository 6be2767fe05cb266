"""Readers for the vector file formats `vecdb bench` accepts, and the matching writers.

Owns the byte layouts only: `.npy`, the TEXMEX `.fvecs` / `.bvecs` / `.ivecs` (each row is a
little-endian int32 dimension followed by that many float32 / uint8 / int32 values), the
big-ann-benchmarks `.fbin` / `.ibin` / `.u8bin` (an int32 row count and an int32 dimension, then
the rows), and ann-benchmarks HDF5 files (datasets `train`, `test`, `neighbors`, attribute
`distance`; needs h5py). Readers return C-contiguous arrays and raise `InvalidArgument` naming
the file when it is malformed. Must not compute anything about the data (ground truth lives in
`vecdb.bench.datasets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.errors import InvalidArgument

VEC_FORMATS = {".fvecs": np.float32, ".bvecs": np.uint8, ".ivecs": np.int32}
BIN_FORMATS = {".fbin": np.float32, ".u8bin": np.uint8, ".ibin": np.int32}
SUPPORTED_SUFFIXES = (".npy", *VEC_FORMATS, *BIN_FORMATS, ".hdf5", ".h5")


def read_vectors(path: str | Path) -> npt.NDArray[Any]:
    """Read a 2-d array from any supported single-array file (not HDF5), keeping its dtype."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise InvalidArgument(f"dataset file {str(p)!r} does not exist")
    if suffix == ".npy":
        return _read_npy(p)
    if suffix in VEC_FORMATS:
        return _read_vecs(p, np.dtype(VEC_FORMATS[suffix]))
    if suffix in BIN_FORMATS:
        return _read_bin(p, np.dtype(BIN_FORMATS[suffix]))
    raise InvalidArgument(
        f"dataset file {str(p)!r}: unsupported suffix {suffix!r}; "
        f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _read_npy(p: Path) -> npt.NDArray[Any]:
    arr = np.load(p, allow_pickle=False)
    if arr.ndim != 2:
        raise InvalidArgument(f"{str(p)!r}: expected a 2-d array, found shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _read_vecs(p: Path, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    raw = np.fromfile(p, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros((0, 0), dtype=dtype)
    if raw.size < 4:
        raise InvalidArgument(f"{str(p)!r}: truncated (only {raw.size} bytes)")
    d = int(raw[:4].view("<i4")[0])
    if d <= 0:
        raise InvalidArgument(f"{str(p)!r}: bad dimension {d} in the first row header")
    row_bytes = 4 + d * dtype.itemsize
    if raw.size % row_bytes:
        raise InvalidArgument(
            f"{str(p)!r}: size {raw.size} is not a multiple of the row size {row_bytes} (d={d})"
        )
    rows = raw.reshape(-1, row_bytes)
    dims = rows[:, :4].copy().view("<i4").ravel()
    if np.any(dims != d):
        bad = int(np.flatnonzero(dims != d)[0])
        raise InvalidArgument(f"{str(p)!r}: row {bad} has dimension {dims[bad]}, expected {d}")
    body = np.ascontiguousarray(rows[:, 4:])
    return body.view(dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(-1, d)


def _read_bin(p: Path, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    header = np.fromfile(p, dtype="<i4", count=2)
    if header.size != 2:
        raise InvalidArgument(f"{str(p)!r}: truncated header (need 8 bytes)")
    n, d = int(header[0]), int(header[1])
    expected = 8 + n * d * dtype.itemsize
    size = p.stat().st_size
    if n < 0 or d <= 0 or size != expected:
        raise InvalidArgument(
            f"{str(p)!r}: header says {n} x {d} ({expected} bytes) but the file has {size} bytes"
        )
    data = np.fromfile(p, dtype=dtype.newbyteorder("<"), offset=8, count=n * d)
    return np.ascontiguousarray(data.astype(dtype, copy=False).reshape(n, d))


def read_hdf5(path: str | Path) -> dict[str, Any]:
    """Read an ann-benchmarks HDF5 file: base `train`, `queries`, `neighbors`, `metric`."""
    try:
        import h5py
    except ImportError as exc:
        raise InvalidArgument(
            f"reading {str(path)!r} needs h5py: pip install h5py (or install vecdb[bench])"
        ) from exc
    with h5py.File(path, "r") as f:
        for key in ("train", "test"):
            if key not in f:
                raise InvalidArgument(f"{str(path)!r}: no dataset {key!r} (not ann-benchmarks?)")
        out: dict[str, Any] = {
            "base": np.ascontiguousarray(f["train"][()]),
            "queries": np.ascontiguousarray(f["test"][()]),
            "neighbors": np.asarray(f["neighbors"][()]) if "neighbors" in f else None,
        }
        distance = f.attrs.get("distance", "euclidean")
    if isinstance(distance, bytes):
        distance = distance.decode()
    metrics = {"euclidean": "l2", "angular": "cosine", "ip": "ip", "dot": "ip"}
    if distance not in metrics:
        raise InvalidArgument(f"{str(path)!r}: unsupported distance attribute {distance!r}")
    out["metric"] = metrics[distance]
    return out


def write_vectors(path: str | Path, arr: npt.NDArray[Any]) -> None:
    """Write a 2-d array in the format named by the suffix (used by tests and conversions)."""
    p = Path(path)
    suffix = p.suffix.lower()
    a = np.ascontiguousarray(arr)
    if a.ndim != 2:
        raise InvalidArgument(f"write_vectors: expected a 2-d array, got shape {a.shape}")
    if suffix == ".npy":
        np.save(p, a)
    elif suffix in VEC_FORMATS:
        dtype = np.dtype(VEC_FORMATS[suffix]).newbyteorder("<")
        n, d = a.shape
        body = a.astype(dtype).view(np.uint8).reshape(n, d * dtype.itemsize)
        dims = np.full((n, 1), d, dtype="<i4").view(np.uint8)
        np.concatenate([dims, body], axis=1).tofile(p)
    elif suffix in BIN_FORMATS:
        dtype = np.dtype(BIN_FORMATS[suffix]).newbyteorder("<")
        with open(p, "wb") as f:
            np.array(a.shape, dtype="<i4").tofile(f)
            a.astype(dtype).tofile(f)
    else:
        raise InvalidArgument(f"write_vectors: unsupported suffix {suffix!r}")
