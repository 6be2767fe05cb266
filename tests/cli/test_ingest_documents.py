"""`vecdb ingest` of document files (.npz, Parquet token lists) against the options and the
collection: contradictions refused before anything is created, one-line errors instead of
tracebacks, ids as the file gives them, server refusals reported by row, and --resume after
a fix. Embedded (a data directory under tmp_path) and, where the wire matters, over gRPC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from ingest_files import documents, write_npz

import vecdb
from vecdb.cli.main import main

DIM = 8
DOCS = documents(20, DIM)


def ingest(*args: str) -> Any:
    return CliRunner().invoke(main, ["ingest", *args, "--quiet"])


def one_line_error(out: Any) -> str:
    """The single `vecdb ingest: error:` line of a refused run (no traceback)."""
    assert out.exit_code == 1, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vecdb ingest: error: "), out.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--metric", "ip"], "--metric ip contradicts collection 'c', which has metric cosine"),
        (["--dim", "16"], "--dim 16 but"),
        (["--index", "flat"], "--index flat does not apply to documents"),
        (["--window", "4"], "--window 4 does not apply to documents"),
    ],
)
def test_options_contradicting_a_document_collection_are_refused(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """--metric/--dim/--index/--window that do not fit the existing 8-d cosine collection:
    one line, nothing loaded (before: "ingested 20 documents")."""
    f, db = tmp_path / "d.npz", str(tmp_path / "db")
    write_npz(f, DOCS)
    assert ingest(str(f), "--collection", "c", "--target", db, "--dim", str(DIM)).exit_code == 0
    with vecdb.connect(db) as c:
        c.delete("c", list(range(20)))
    assert expected in one_line_error(ingest(str(f), "--collection", "c", "--target", db, *args))
    with vecdb.connect(db) as c:
        assert c.count("c") == 0


def test_file_dimension_is_checked_before_the_collection_is_created(tmp_path: Path) -> None:
    """--dim 16 on a file of 8-d tokens creates nothing (before: an empty 16-d collection)."""
    f, db = tmp_path / "d.npz", str(tmp_path / "db")
    write_npz(f, DOCS)
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", db, "--dim", "16"))
    assert f"--dim 16 but {f} holds 8-dimensional tokens" in line
    with vecdb.connect(db) as c:
        assert not c.collection_exists("c")


def test_unreachable_target_is_one_line(tmp_path: Path) -> None:
    """A server that does not answer (nothing listens on 127.0.0.1:1): the target is named."""
    f = tmp_path / "d.npz"
    write_npz(f, DOCS)
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", "127.0.0.1:1",
                                 "--timeout", "0.5"))  # fmt: skip
    assert "127.0.0.1:1: Unavailable" in line


def test_l2_is_refused_up_front(tmp_path: Path) -> None:
    """Documents rank by MaxSim: --metric l2 says so instead of a traceback."""
    f = tmp_path / "d.npz"
    write_npz(f, DOCS)
    line = one_line_error(ingest(str(f), "--collection", "c", "--target",
                                 str(tmp_path / "db"), "--metric", "l2"))  # fmt: skip
    assert "--metric l2" in line and "cosine or ip" in line


def test_tenant_on_a_plain_document_collection_is_one_line(tmp_path: Path) -> None:
    f, db = tmp_path / "d.npz", str(tmp_path / "db")
    write_npz(f, DOCS)
    assert ingest(str(f), "--collection", "c", "--target", db, "--dim", str(DIM)).exit_code == 0
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", db, "--tenant", "a"))
    assert "collection 'c' is not multi-tenant" in line


def test_missing_grantee_creates_nothing(tmp_path: Path) -> None:
    """--grant-to a tenant that cannot exist yet: refused before the collection is made."""
    f, db = tmp_path / "d.npz", str(tmp_path / "db")
    write_npz(f, DOCS)
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", db, "--dim", str(DIM),
                                 "--tenant", "acme", "--grant-to", "globex"))  # fmt: skip
    assert "--grant-to globex" in line
    with vecdb.connect(db) as c:
        assert not c.collection_exists("c")


def _parquet(path: Path, docs: list[Any], **columns: list[Any]) -> None:
    pq.write_table(pa.table({"tokens": pa.array(docs, type=pa.list_(pa.list_(pa.float32()))),
                             **columns}), path)  # fmt: skip


def test_dimension_comes_from_the_first_document_with_tokens(tmp_path: Path) -> None:
    """A first row without tokens is reported as row 0 (not "dim 0 is out of range"), and
    nothing is created; a file without documents needs --dim."""
    db = str(tmp_path / "db")
    f = tmp_path / "first_empty.parquet"
    _parquet(f, [[]] + [d.tolist() for d in DOCS[1:]])
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", db, "--metric", "ip"))
    assert f"{f}: row 0: a document must be a non-empty matrix" in line
    e = tmp_path / "empty.parquet"
    _parquet(e, [])
    line = one_line_error(ingest(str(e), "--collection", "e", "--target", db, "--metric", "ip"))
    assert "holds no tokens to tell the dimension" in line and "pass --dim" in line
    with vecdb.connect(db) as c:
        assert not c.collection_exists("c") and not c.collection_exists("e")


def test_npz_ids_of_the_wrong_length_are_one_line(tmp_path: Path) -> None:
    f = tmp_path / "d.npz"
    write_npz(f, DOCS, ids=np.arange(5))
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", str(tmp_path / "db"),
                                 "--dim", str(DIM)))  # fmt: skip
    assert "'ids' holds 5 ids for 20 documents" in line


def test_string_ids_create_a_string_id_collection(tmp_path: Path, target: str) -> None:
    """An .npz of string ids creates id_type="str" (before: an int collection, then a
    refusal, leaving it empty)."""
    f = tmp_path / "d.npz"
    write_npz(f, DOCS, ids=np.array([f"doc-{i}" for i in range(20)]))
    out = ingest(str(f), "--collection", "s", "--target", target, "--dim", str(DIM))
    assert out.exit_code == 0, out.output
    with vecdb.connect(target) as c:
        assert c.get_collection("s").id_type.value == "str" and c.count("s") == 20
        assert np.array_equal(c.get_documents("s", ["doc-7"])[0].tokens, DOCS[7])


def test_parquet_id_column_gives_the_ids(tmp_path: Path) -> None:
    """An `id` column holds the documents' ids (not their payload), as the README says."""
    f, db = tmp_path / "d.parquet", str(tmp_path / "db")
    _parquet(f, [d.tolist() for d in DOCS], id=list(range(700, 720)), title=["t"] * 20)
    assert ingest(str(f), "--collection", "p", "--target", db, "--dim", str(DIM)).exit_code == 0
    with vecdb.connect(db) as c:
        (doc,) = c.get_documents("p", [705])
        assert doc.payload == {"title": "t"} and np.array_equal(doc.tokens, DOCS[5])
        assert c.count("p") == 20


def test_npz_ids_from_names_the_array(tmp_path: Path) -> None:
    """--ids-from NAME takes an .npz's ids from that array; a missing one is an error."""
    f, db = tmp_path / "d.npz", str(tmp_path / "db")
    write_npz(f, DOCS, doc_ids=np.arange(100, 120))
    out = ingest(str(f), "--collection", "c", "--target", db, "--dim", str(DIM),
                 "--ids-from", "doc_ids")  # fmt: skip
    assert out.exit_code == 0, out.output
    with vecdb.connect(db) as c:
        assert c.get_documents("c", [119])[0].id == 119
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", db,
                                 "--ids-from", "nosuch"))  # fmt: skip
    assert "--ids-from 'nosuch': no such array" in line


def test_a_document_the_server_refuses_is_reported_by_row(tmp_path: Path, target: str) -> None:
    """A duplicate id in the second batch (documents 5..9): `FILE: row 7: ...`, the first
    batch stored."""
    f = tmp_path / "d.npz"
    ids = np.arange(20)
    ids[7] = 5
    write_npz(f, DOCS, ids=ids)
    line = one_line_error(ingest(str(f), "--collection", "c", "--target", target, "--dim",
                                 str(DIM), "--batch-size", "5"))  # fmt: skip
    assert f"{f}: row 7: " in line and "documents before 5 are stored" in line
    with vecdb.connect(target) as c:
        assert c.count("c") == 5


def test_resume_after_fixing_a_malformed_document(tmp_path: Path) -> None:
    """A NaN in document 12 stops the load after documents 0..9; once fixed (the file is
    rewritten), --resume loads documents 10..19 only."""
    f, db = tmp_path / "d.npz", str(tmp_path / "db")
    bad = [d.copy() for d in DOCS]
    bad[12][1, 2] = np.nan
    write_npz(f, bad)
    args = [str(f), "--collection", "c", "--target", db, "--batch-size", "5"]
    line = one_line_error(ingest(*args, "--dim", str(DIM)))
    assert "row 12: NaN" in line and "rerun with --resume" in line
    write_npz(f, DOCS)
    out = ingest(*args, "--resume")
    assert out.exit_code == 0 and "ingested 10 documents" in out.output, out.output
    with vecdb.connect(db) as c:
        assert c.count("c") == 20
        assert all(np.array_equal(d.tokens, DOCS[d.id]) for d in c.get_documents("c", range(20)))
