"""The vector file readers of vecdb.bench.readers, on tiny files written here."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from vecdb.bench.readers import read_hdf5, read_vectors, write_vectors
from vecdb.errors import InvalidArgument

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 4


def test_npy_roundtrip(tmp_path: Path) -> None:
    """A 2-d .npy file reads back unchanged."""
    np.save(tmp_path / "x.npy", X)
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.npy"), X)


def test_fvecs_hand_written_bytes(tmp_path: Path) -> None:
    """.fvecs: each row is an int32 dimension then float32 values."""
    p = tmp_path / "x.fvecs"
    p.write_bytes(b"".join(struct.pack("<i4f", 4, *row) for row in X.tolist()))
    out = read_vectors(p)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X)


def test_bvecs_hand_written_bytes(tmp_path: Path) -> None:
    """.bvecs: int32 dimension then uint8 values."""
    rows = np.array([[1, 2, 255], [0, 7, 9]], dtype=np.uint8)
    p = tmp_path / "x.bvecs"
    p.write_bytes(b"".join(struct.pack("<i", 3) + r.tobytes() for r in rows))
    out = read_vectors(p)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rows)


def test_ivecs_hand_written_bytes(tmp_path: Path) -> None:
    """.ivecs: int32 dimension then int32 values (ground-truth ids)."""
    rows = np.array([[5, -1], [2, 3]], dtype=np.int32)
    p = tmp_path / "gt.ivecs"
    p.write_bytes(b"".join(struct.pack("<3i", 2, *r) for r in rows.tolist()))
    np.testing.assert_array_equal(read_vectors(p), rows)


def test_fbin_and_ibin_hand_written_bytes(tmp_path: Path) -> None:
    """.fbin / .ibin: int32 rows and dims, then the row-major values."""
    (tmp_path / "x.fbin").write_bytes(struct.pack("<2i", 3, 4) + X.tobytes())
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.fbin"), X)
    ids = np.array([[1, 2, 3]], dtype=np.int32)
    (tmp_path / "x.ibin").write_bytes(struct.pack("<2i", 1, 3) + ids.tobytes())
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.ibin"), ids)


@pytest.mark.parametrize("suffix", [".npy", ".fvecs", ".bvecs", ".ivecs", ".fbin", ".ibin"])
def test_writer_and_reader_agree(tmp_path: Path, suffix: str) -> None:
    """write_vectors then read_vectors returns the same values for every format."""
    data = (X * 4).astype(np.int32) if suffix in (".bvecs", ".ivecs", ".ibin") else X
    write_vectors(tmp_path / f"x{suffix}", data)
    np.testing.assert_array_equal(read_vectors(tmp_path / f"x{suffix}"), data)


def test_truncated_fvecs_names_the_file(tmp_path: Path) -> None:
    """A file whose size is not a whole number of rows is rejected with its name."""
    p = tmp_path / "bad.fvecs"
    p.write_bytes(struct.pack("<i4f", 4, 1, 2, 3, 4) + b"\x00\x01")
    with pytest.raises(InvalidArgument, match="bad.fvecs"):
        read_vectors(p)


def test_fbin_with_wrong_header_is_rejected(tmp_path: Path) -> None:
    """A header that disagrees with the file size is an error."""
    p = tmp_path / "bad.fbin"
    p.write_bytes(struct.pack("<2i", 5, 4) + X.tobytes())
    with pytest.raises(InvalidArgument, match="header says 5 x 4"):
        read_vectors(p)


def test_unknown_suffix_and_missing_file_are_errors(tmp_path: Path) -> None:
    """Unsupported formats and missing files raise InvalidArgument."""
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(InvalidArgument, match="unsupported suffix"):
        read_vectors(tmp_path / "x.csv")
    with pytest.raises(InvalidArgument, match="does not exist"):
        read_vectors(tmp_path / "nope.fvecs")


def test_hdf5_ann_benchmarks_layout(tmp_path: Path) -> None:
    """An ann-benchmarks HDF5 file gives base, queries, neighbours and the metric."""
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "x.hdf5"
    with h5py.File(p, "w") as f:
        f.create_dataset("train", data=X)
        f.create_dataset("test", data=X[:1])
        f.create_dataset("neighbors", data=np.array([[0, 1]]))
        f.attrs["distance"] = "angular"
    out = read_hdf5(p)
    np.testing.assert_array_equal(out["base"], X)
    assert out["metric"] == "cosine"
