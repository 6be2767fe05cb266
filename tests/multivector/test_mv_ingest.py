"""`vecdb ingest` of documents: .npz and Parquet token lists, payloads, weights, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from oracles import clustered_documents

import vecdb
from vecdb.cli.ingest import ingest

DIM = 8
DOCS = clustered_documents(40, DIM, seed=9, tokens=(2, 9))


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(ingest, list(args))
    return res.exit_code, res.output


def test_npz_documents_load_with_ids_and_weights(tmp_path: Path) -> None:
    """An .npz of tokens + offsets (+ ids, weights) creates a multivector collection whose
    documents read back exactly."""
    f = tmp_path / "docs.npz"
    tokens = np.concatenate(DOCS)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in DOCS])])
    np.savez(f, tokens=tokens, offsets=offsets, ids=np.arange(100, 140),
             weights=np.linspace(0, 1, len(tokens)).astype(np.float32))  # fmt: skip
    code, out = _run(str(f), "--collection", "p", "--target", str(tmp_path / "db"), "--dim",
                     str(DIM), "--batch-size", "7", "--quiet")  # fmt: skip
    assert code == 0, out
    with vecdb.connect(str(tmp_path / "db")) as c:
        assert c.get_collection("p").kind.value == "multivector" and c.count("p") == 40
        got = c.get_documents("p", [100, 139])
        assert got[0].tokens.tobytes() == DOCS[0].tobytes() and got[1].weights is not None
    code, out = _run(str(f), "--collection", "p", "--target", str(tmp_path / "db"), "--resume")
    assert code == 0 and "already loaded" in out


def test_parquet_token_lists_with_payload_columns(tmp_path: Path) -> None:
    """A Parquet file with a list-of-vectors column loads documents, other columns become the
    payload, --ids-from names the id column."""
    f = tmp_path / "docs.parquet"
    table = pa.table({
        "doc_id": [f"d{i}" for i in range(len(DOCS))],
        "tokens": [d.tolist() for d in DOCS],
        "title": [f"t{i}" for i in range(len(DOCS))],
    })  # fmt: skip
    pq.write_table(table, f)
    db = str(tmp_path / "db")
    with vecdb.connect(db) as c:
        c.create_collection("p", DIM, "ip", id_type="str", kind="multivector")
    code, out = _run(str(f), "--collection", "p", "--target", db, "--ids-from", "doc_id", "--quiet")
    assert code == 0, out
    with vecdb.connect(db) as c:
        (doc,) = c.get_documents("p", ["d3"])
        assert doc.payload == {"title": "t3"} and np.array_equal(doc.tokens, DOCS[3])
        res = c.search_documents("p", DOCS[3][:2], k=1)
        assert res.ids[0, 0] == "d3"


def test_malformed_document_names_the_row(tmp_path: Path) -> None:
    """A document with NaN is refused before it is sent, naming file and document."""
    f = tmp_path / "bad.npz"
    tokens = np.ones((4, DIM), np.float32)
    tokens[3, 0] = np.nan
    np.savez(f, tokens=tokens, offsets=np.array([0, 2, 4]))
    code, out = _run(
        str(f), "--collection", "p", "--target", str(tmp_path / "db"), "--dim", str(DIM)
    )
    assert code == 1 and "row 1" in out and "NaN" in out


def test_documents_load_into_a_tenant(tmp_path: Path) -> None:
    """--tenant creates a multi-tenant document collection and its owner; a second file goes
    to another tenant of the same collection, --grant-to sharing its documents."""
    db = str(tmp_path / "db")
    for name, ids, args in (("b.npz", range(20, 40), ("--tenant", "initech")),
                            ("a.npz", range(0, 20), ("--tenant", "acme", "--grant-to", "globex"))):  # fmt: skip
        docs = [DOCS[i] for i in ids]
        np.savez(tmp_path / name, tokens=np.concatenate(docs), ids=np.asarray(list(ids)),
                 offsets=np.concatenate([[0], np.cumsum([len(d) for d in docs])]))  # fmt: skip
        if "--grant-to" in args:
            with vecdb.connect(db) as c:  # a grantee must exist; the owner is made by ingest
                c.create_tenant("p", "globex")
        code, out = _run(str(tmp_path / name), "--collection", "p", "--target", db, "--dim",
                         str(DIM), "--quiet", *args)  # fmt: skip
        assert code == 0, out
    with vecdb.connect(db) as c:
        assert c.get_collection("p").multi_tenant and c.count("p") == 40
        assert {t.name: t.owned for t in c.list_tenants("p")[0]} == {
            "acme": 20, "globex": 0, "initech": 20}  # fmt: skip
        assert c.count("p", tenant="globex") == 20
        hits = c.search_documents("p", DOCS[25][:2], k=40, tenant="acme").ids[0]
        assert set(hits[hits >= 0].tolist()) == set(range(20))
    from vecdb.cli.inspect import inspect_cmd

    shown = CliRunner().invoke(inspect_cmd, [db]).output
    assert "  p: 40 documents," in shown and "3 tenants" in shown
    assert "globex: 20 documents, 0 owned" in shown and "initech: 20 documents, 20 owned" in shown
