"""`vecdb ingest` of every format, embedded and over gRPC, and its reports on malformed input.

Every test writes its own small file, loads it with the real command (click's runner, in
process) and checks what the database then holds: count, vectors, ids, payloads. Malformed
files must be reported with file, row and reason, with every batch before the bad one stored
and nothing of the bad batch or after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from ingest_files import (
    vectors,
    write_bvecs,
    write_fbin,
    write_fvecs,
    write_jsonl,
    write_npy,
    write_parquet,
)

import vecdb
from vecdb.cli.main import main
from vecdb.server.app import VecdbServer
from vecdb.server.config import load_config

N, DIM = 23, 6


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VecdbServer]:
    cfg = load_config(env={}, overrides={"server": {"data": str(tmp_path / "srv"), "port": 0},
                                         "metrics": {"enabled": False}})  # fmt: skip
    srv = VecdbServer(cfg).start()
    yield srv
    srv.stop(grace=0)


def ingest(*args: str) -> Any:
    """Run `vecdb ingest ARGS --quiet`, returning click's result."""
    return CliRunner().invoke(main, ["ingest", *args, "--quiet"], catch_exceptions=False)


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An embedded data directory or the address of a real server."""
    if request.param == "local":
        return str(tmp_path / "db")
    return f"127.0.0.1:{request.getfixturevalue('server').port}"


def stored(target: str, name: str, ids: list[Any]) -> tuple[int, np.ndarray, list[Any]]:
    with vecdb.connect(target) as c:
        recs = c.get(name, ids)
        return c.count(name), np.stack([r.vector for r in recs]), [r.payload for r in recs]


@pytest.mark.parametrize("fmt", ["npy", "fvecs", "fbin"])
def test_float_matrix_formats_load_with_row_ids(tmp_path: Path, target: str, fmt: str) -> None:
    """.npy/.fvecs/.fbin load every row; ids are row numbers; vectors are bit-exact."""
    x = vectors(N, DIM)
    path = tmp_path / f"in.{fmt}"
    {"npy": write_npy, "fvecs": write_fvecs, "fbin": write_fbin}[fmt](path, x)
    res = ingest(str(path), "--collection", "c", "--target", target, "--dim", str(DIM),
                 "--metric", "l2", "--batch-size", "5")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"ingested {N} vectors" in res.output
    count, got, _ = stored(target, "c", list(range(N)))
    assert count == N and got.tobytes() == x.tobytes()


def test_bvecs_load_as_float(tmp_path: Path, target: str) -> None:
    """uint8 .bvecs rows load as the same values in float32."""
    x = np.random.default_rng(1).integers(1, 255, (N, DIM)).astype(np.uint8)
    write_bvecs(tmp_path / "in.bvecs", x)
    res = ingest(str(tmp_path / "in.bvecs"), "--collection", "c", "--target", target,
                 "--metric", "l2")  # fmt: skip
    assert res.exit_code == 0, res.output
    count, got, _ = stored(target, "c", list(range(N)))
    assert count == N and np.array_equal(got, x.astype(np.float32))


def test_parquet_ids_column_and_payload_columns(tmp_path: Path, target: str) -> None:
    """Parquet: --ids-from names the id column (strings here), other columns become payload."""
    x = vectors(N, DIM)
    ids = [f"doc-{i}" for i in range(N)]
    write_parquet(tmp_path / "in.parquet", x, ids=list(range(N)),
                  extra={"key": ids, "title": [f"t{i}" for i in range(N)],
                         "score": [i / 2 for i in range(N)]})  # fmt: skip
    res = ingest(str(tmp_path / "in.parquet"), "--collection", "p", "--target", target,
                 "--ids-from", "key", "--metric", "cosine", "--batch-size", "4")  # fmt: skip
    assert res.exit_code == 0, res.output
    count, got, payloads = stored(target, "p", ids)
    assert count == N and got.tobytes() == x.tobytes()
    assert payloads[3] == {"id": 3, "title": "t3", "score": 1.5}
    with vecdb.connect(target) as c:
        assert c.get_collection("p").id_type.value == "str"


def test_jsonl_payloads_and_ids(tmp_path: Path, target: str) -> None:
    """JSON lines: "id", "vector" and "payload" keys; rows without payload have none."""
    x = vectors(N, DIM)
    payloads = [{"n": i} if i % 2 else None for i in range(N)]
    write_jsonl(tmp_path / "in.jsonl", x, payloads)
    res = ingest(str(tmp_path / "in.jsonl"), "--collection", "j", "--target", target,
                 "--dim", str(DIM), "--batch-size", "7")  # fmt: skip
    assert res.exit_code == 0, res.output
    count, got, stored_payloads = stored(target, "j", list(range(N)))
    assert count == N and np.allclose(got, x) and stored_payloads == payloads


# -- malformed input ------------------------------------------------------------------------


def _assert_stopped_at(res: Any, path: Path, row: int, reason: str, target: str, kept: int) -> None:
    assert res.exit_code == 1
    assert f"{path}: row {row}: " in res.output and reason in res.output, res.output
    with vecdb.connect(target) as c:
        assert c.count("bad") == kept
        if kept:
            assert sorted(r.id for r in c.get("bad", list(range(N)))) == list(range(kept))


def test_malformed_jsonl_row_is_reported_and_earlier_batches_kept(
    tmp_path: Path, target: str
) -> None:
    """Invalid JSON on row 7 with batches of 3: rows 0-5 stored, the batch 6-8 and after not."""
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, vectors(N, DIM), broken={7: '{"id": 7, "vector": [1, 2'})
    res = ingest(str(path), "--collection", "bad", "--target", target, "--dim", str(DIM),
                 "--batch-size", "3")  # fmt: skip
    _assert_stopped_at(res, path, 7, "invalid JSON", target, kept=6)
    assert "rerun with --resume" in res.output


@pytest.mark.parametrize(
    "case,row,reason",
    [
        ("fvecs header", 5, "row header says dimension 7, not 6"),
        ("npy NaN", 9, "NaN or infinity"),
        ("jsonl short vector", 4, f"expected a vector of {DIM} numbers, got 5"),
        ("parquet null vector", 11, "got null"),
        ("jsonl string in vector", 2, "non-number"),
    ],
)
def test_malformed_rows_name_file_row_and_reason(
    tmp_path: Path, target: str, case: str, row: int, reason: str
) -> None:
    """Each format's row-level defects are reported precisely; batches before it are kept."""
    x = vectors(N, DIM)
    if case == "fvecs header":
        path = tmp_path / "bad.fvecs"
        write_fvecs(path, x, dims=[DIM] * 5 + [7] + [DIM] * (N - 6))
    elif case == "npy NaN":
        path = tmp_path / "bad.npy"
        x[9, 2] = np.nan
        write_npy(path, x)
    elif case == "parquet null vector":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "bad.parquet"
        vecs: list[Any] = [r.tolist() for r in x]
        vecs[11] = None
        pq.write_table(pa.table({"vector": vecs}), path)
    else:
        path = tmp_path / "bad.jsonl"
        bad = (
            {4: f'{{"vector": {[1.0] * 5}}}'}
            if "short" in case
            else {2: '{"vector": [1, "a", 3, 4, 5, 6]}'}
        )
        write_jsonl(path, x, broken=bad)
    res = ingest(str(path), "--collection", "bad", "--target", target, "--dim", str(DIM),
                 "--batch-size", "2")  # fmt: skip
    _assert_stopped_at(res, path, row, reason, target, kept=row - row % 2)


def test_truncated_fvecs_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    """A file whose size is not a whole number of rows is refused up front."""
    path = tmp_path / "cut.fvecs"
    write_fvecs(path, vectors(N, DIM))
    path.write_bytes(path.read_bytes()[:-3])
    res = ingest(str(path), "--collection", "bad", "--target", str(tmp_path / "db"), "--dim", "6")
    assert res.exit_code == 1 and "truncated" in res.output and f"row {N - 1}" in res.output


def test_server_side_rejection_is_reported_with_the_file_row(tmp_path: Path, target: str) -> None:
    """A zero vector under cosine is refused by the engine; the message names the input row."""
    x = vectors(N, DIM)
    x[13] = 0
    write_npy(tmp_path / "z.npy", x)
    res = ingest(str(tmp_path / "z.npy"), "--collection", "bad", "--target", target,
                 "--metric", "cosine", "--batch-size", "4")  # fmt: skip
    assert res.exit_code == 1
    assert "row 13: " in res.output and "zero vector" in res.output, res.output
    with vecdb.connect(target) as c:
        assert c.count("bad") == 12


def test_missing_collection_without_dim_or_metric_is_an_error(tmp_path: Path) -> None:
    """Without --dim/--metric ingest does not guess: the collection must exist."""
    write_npy(tmp_path / "a.npy", vectors(3, DIM))
    res = ingest(str(tmp_path / "a.npy"), "--collection", "nope", "--target", str(tmp_path / "db"))
    assert res.exit_code == 1 and "does not exist" in res.output


def test_dimension_mismatch_with_existing_collection_is_an_error(tmp_path: Path) -> None:
    """Loading 6-d vectors into an 8-d collection stops before sending anything."""
    with vecdb.connect(str(tmp_path / "db")) as c:
        c.create_collection("c", 8, "l2")
    write_npy(tmp_path / "a.npy", vectors(3, DIM))
    res = ingest(str(tmp_path / "a.npy"), "--collection", "c", "--target", str(tmp_path / "db"))
    assert res.exit_code == 1 and "has dim 8" in res.output
