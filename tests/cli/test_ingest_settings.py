"""`vecdb ingest` against an existing collection: contradicting options are refused, errors
that are not about rows are not blamed on rows, and the resume file can be placed anywhere.

Embedded and over a real gRPC server on 127.0.0.1 (ephemeral port).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ingest_files import progress_entry, vectors, write_npy

import vecdb
from vecdb.cli.main import main

DIM = 8


def ingest(*args: str) -> Any:
    return CliRunner().invoke(main, ["ingest", *args, "--quiet"])


@pytest.mark.parametrize(
    ("option", "value", "have"),
    [("--metric", "ip", "metric l2"), ("--dim", "16", "dim 8"), ("--index", "spann", "index flat")],
)
def test_options_contradicting_the_collection_are_refused(
    tmp_path: Path, target: str, option: str, value: str, have: str
) -> None:
    """--metric/--dim/--index that differ from the existing collection: one clear error,
    nothing loaded."""
    with vecdb.connect(target) as c:
        c.create_collection("c", dim=DIM, metric="l2", index="flat")
    f = tmp_path / "x.npy"
    write_npy(f, vectors(50, DIM))
    out = ingest(str(f), "--collection", "c", "--target", target, option, value)
    assert out.exit_code == 1, out.output
    if option == "--dim":
        assert "--dim 16 but" in out.output  # the file says 8: caught before the collection
    else:
        assert f"{option} {value} contradicts collection 'c', which has {have}" in out.output
    with vecdb.connect(target) as c:
        assert c.count("c") == 0
    same = ingest(str(f), "--collection", "c", "--target", target, "--metric", "L2",
                  "--index", "flat", "--dim", str(DIM))  # fmt: skip
    assert same.exit_code == 0, same.output


def test_id_type_mismatch_is_a_collection_error(tmp_path: Path, target: str) -> None:
    """String ids into an int-id collection: reported against the collection, not a row."""
    with vecdb.connect(target) as c:
        c.create_collection("c", dim=DIM, metric="l2", index="flat")
    f = tmp_path / "x.jsonl"
    rows = [{"id": f"doc{i}", "vector": v.tolist()} for i, v in enumerate(vectors(5, DIM))]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = ingest(str(f), "--collection", "c", "--target", target)
    assert out.exit_code == 1
    assert "collection 'c' has int ids but" in out.output and "row" not in out.output


def test_config_errors_are_not_row_errors(
    tmp_path: Path, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection dropped mid-load (NotFound) names the target, not rows of the batch."""
    from vecdb.client.local import LocalClient
    from vecdb.client.remote import RemoteClient

    with vecdb.connect(target) as c:
        c.create_collection("c", dim=DIM, metric="l2", index="flat")
    f = tmp_path / "x.npy"
    write_npy(f, vectors(40, DIM))
    for klass in (LocalClient, RemoteClient):
        monkeypatch.setattr(klass, "get_collection", _dropping(klass.get_collection))
    out = ingest(str(f), "--collection", "c", "--target", target, "--batch-size", "10")
    assert out.exit_code == 1, out.output
    line = out.output.strip().splitlines()[-1]
    assert f"{target}: NotFound: " in line and "row 0" not in line and "rows 0" not in line


def _dropping(original: Any) -> Any:
    """get_collection that drops the collection right after answering (a race with an admin)."""

    def get_then_drop(self: Any, name: str) -> Any:
        info = original(self, name)
        self.drop_collection(name)
        return info

    return get_then_drop


def test_resume_file_location_is_chosen(tmp_path: Path, target: str) -> None:
    """--resume-file PATH keeps the resume state there (not next to the input)."""
    x = vectors(60, DIM)
    f = tmp_path / "x.npy"
    write_npy(f, x)
    state = tmp_path / "elsewhere" / "state.json"
    state.parent.mkdir()
    out = ingest(str(f), "--collection", "c", "--target", target, "--dim", str(DIM),
                 "--batch-size", "20", "--resume-file", str(state), "--stop-after", "1")  # fmt: skip
    assert out.exit_code == 3, out.output
    assert progress_entry(state)["rows_done"] == 20
    assert not (tmp_path / "x.npy.vecdb-progress.json").exists()
    out = ingest(str(f), "--collection", "c", "--target", target, "--resume",
                 "--resume-file", str(state))  # fmt: skip
    assert out.exit_code == 0, out.output
    assert progress_entry(state)["complete"] is True
    with vecdb.connect(target) as c:
        assert c.count("c") == 60


def test_metric_and_index_choices_are_listed_in_help() -> None:
    """--help shows the fixed choices of --metric and --index."""
    out = CliRunner().invoke(main, ["ingest", "--help"])
    assert "[l2|ip|cosine]" in out.output and "[flat|spann]" in out.output


def test_an_empty_npy_file_is_a_one_line_error(tmp_path: Path) -> None:
    """A 0-byte .npy: one line naming the file, not click's bare "Aborted!"."""
    f = tmp_path / "empty.npy"
    f.write_bytes(b"")
    out = ingest(str(f), "--collection", "c", "--target", str(tmp_path / "db"), "--metric", "l2")
    assert out.exit_code == 1
    assert f"vecdb ingest: error: {f}: not a readable .npy file: it is empty" in out.output
    assert "Aborted" not in out.output


def test_a_missing_grantee_is_refused_before_anything_is_created(
    tmp_path: Path, target: str
) -> None:
    """--tenant acme --grant-to globex where globex does not exist: refused up front, with no
    collection (or tenant) left behind; on an existing collection, no tenant acme created."""
    f = tmp_path / "x.npy"
    write_npy(f, vectors(10, DIM))
    out = ingest(str(f), "--collection", "mt", "--target", target, "--metric", "l2",
                 "--tenant", "acme", "--grant-to", "globex")  # fmt: skip
    assert out.exit_code == 1 and "--grant-to globex" in out.output, out.output
    with vecdb.connect(target) as c:
        assert not c.collection_exists("mt")
        c.create_collection("mt", dim=DIM, metric="l2", multi_tenant=True)
    out = ingest(str(f), "--collection", "mt", "--target", target, "--tenant", "acme",
                 "--grant-to", "globex")  # fmt: skip
    assert out.exit_code == 1 and "collection 'mt' has no tenant 'globex'" in out.output
    with vecdb.connect(target) as c:
        assert c.list_tenants("mt")[0] == []


def test_tenant_options_must_fit_the_collection(tmp_path: Path, target: str) -> None:
    """--tenant on a collection that is not multi-tenant, or none on one that is: one line
    naming the collection, nothing loaded."""
    f = tmp_path / "x.npy"
    write_npy(f, vectors(10, DIM))
    with vecdb.connect(target) as c:
        c.create_collection("plain", dim=DIM, metric="l2")
        c.create_collection("mt", dim=DIM, metric="l2", multi_tenant=True)
    out = ingest(str(f), "--collection", "plain", "--target", target, "--tenant", "acme")
    assert out.exit_code == 1 and "collection 'plain' is not multi-tenant" in out.output
    out = ingest(str(f), "--collection", "mt", "--target", target)
    assert out.exit_code == 1 and "collection 'mt' is multi-tenant: pass --tenant" in out.output
    with vecdb.connect(target) as c:
        assert c.count("plain") == 0 and c.list_tenants("mt")[0] == []


def test_help_lists_ndjson_and_what_does_not_apply_to_documents() -> None:
    """--help names every suffix read, and says --index/--window are for vectors only."""
    out = " ".join(CliRunner().invoke(main, ["ingest", "--help"]).output.split())
    assert ".jsonl .ndjson" in out
    assert "documents have their own index" in out and "Documents go one batch per call" in out
