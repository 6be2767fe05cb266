"""`vecdb ingest --resume`: an interrupted load continues after the last acknowledged batch
and ends with every row exactly once.

Two interruptions: a clean stop after N acknowledged batches (the hidden --stop-after flag,
embedded and over gRPC), and a real `kill -9` of the ingest process at an arbitrary point.
The progress file guards against resuming with a changed input: rows already stored must read
as they did, rows from the stop point on may change (the fix of a malformed row).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from ingest_files import (
    progress_entry,
    vectors,
    write_fbin,
    write_fvecs,
    write_jsonl,
    write_npy,
    write_parquet,
)
from oracles import Model

import vecdb
from vecdb.cli.main import main

DIM = 8
INGEST = [sys.executable, "-c", "from vecdb.cli.main import main; main()", "ingest"]


def ingest(*args: str) -> Any:
    return CliRunner().invoke(main, ["ingest", *args, "--quiet"], catch_exceptions=False)


def assert_exactly_once(target: str, name: str, x: np.ndarray) -> None:
    """Every row stored once, under its row id, with its vector and no payload."""
    model = Model()
    model.upsert(range(len(x)), x)
    with vecdb.connect(target) as c:
        model.assert_stored(c, name)


def test_stopped_run_resumes_after_last_acknowledged_batch(tmp_path: Path, target: str) -> None:
    """Stop after 3 of 10 batches; --resume loads exactly the remaining 7."""
    x = vectors(100, DIM)
    path = tmp_path / "in.npy"
    write_npy(path, x)
    common = [str(path), "--collection", "c", "--target", target, "--batch-size", "10"]
    first = ingest(*common, "--dim", str(DIM), "--metric", "l2", "--stop-after", "3")
    assert first.exit_code == 3
    state = progress_entry(tmp_path / "in.npy.vecdb-progress.json")
    assert state["rows_done"] == 30 and state["complete"] is False
    with vecdb.connect(target) as c:  # over gRPC, batches in flight past the last ack may be
        assert 30 <= c.count("c") <= 30 + 4 * 10  # stored too; resuming re-sends them
    second = ingest(*common, "--resume")
    assert second.exit_code == 0, second.output
    assert "ingested 70 vectors" in second.output
    assert_exactly_once(target, "c", x)
    third = ingest(*common, "--resume")
    assert third.exit_code == 0 and "already loaded" in third.output


def test_resume_after_fixing_a_malformed_row(tmp_path: Path) -> None:
    """A load stopped by a bad row continues from the batch holding it once the file is fixed,
    as the error message says: the fix changes the file's size and mtime, but not the rows
    stored, which --resume reads again to check."""
    x = vectors(30, DIM)
    path, db = tmp_path / "in.jsonl", str(tmp_path / "db")
    write_jsonl(path, x, broken={17: "{oops"})
    args = [str(path), "--collection", "j", "--target", db, "--batch-size", "5"]
    res = ingest(*args, "--dim", str(DIM), "--metric", "l2")
    assert res.exit_code == 1 and "row 17" in res.output and "rerun with --resume" in res.output
    write_jsonl(path, x)
    res = ingest(*args, "--resume")
    assert res.exit_code == 0, res.output
    assert "ingested 15 vectors" in res.output and "first 15 rows" in res.output
    assert_exactly_once(db, "j", x)
    assert "already loaded" in ingest(*args, "--resume").output


@pytest.mark.parametrize("fmt", ["npy", "fvecs", "fbin", "parquet"])
def test_resume_after_a_fix_in_every_format(tmp_path: Path, fmt: str) -> None:
    """A NaN at row 17 fixed in place: --resume (with another batch size, so the stored rows
    are read back in other batches) loads rows 15.. and every row ends up stored once."""
    x = vectors(40, DIM)
    bad = x.copy()
    bad[17, 2] = np.nan
    path, db = tmp_path / f"in.{fmt}", str(tmp_path / "db")

    def write(rows: np.ndarray) -> None:
        if fmt == "parquet":
            write_parquet(path, rows, list(range(40)), {})
        else:
            {"npy": write_npy, "fvecs": write_fvecs, "fbin": write_fbin}[fmt](path, rows)

    write(bad)
    args = [str(path), "--collection", "c", "--target", db]
    res = ingest(*args, "--metric", "l2", "--batch-size", "5")
    assert res.exit_code == 1 and "row 17" in res.output
    write(x)
    res = ingest(*args, "--resume", "--batch-size", "7")
    assert res.exit_code == 0 and "ingested 25 vectors" in res.output, res.output
    assert_exactly_once(db, "c", x)


def test_resume_refused_when_a_stored_row_changed(tmp_path: Path) -> None:
    """A change to a row before the stop point (already stored) refuses --resume, naming the
    rows; the change of a row after it, or rows appended, are accepted."""
    x = vectors(30, DIM)
    path, db = tmp_path / "in.jsonl", str(tmp_path / "db")
    write_jsonl(path, x, broken={17: "{oops"})
    args = [str(path), "--collection", "j", "--target", db, "--batch-size", "5"]
    assert ingest(*args, "--dim", str(DIM), "--metric", "l2").exit_code == 1
    y = x.copy()
    y[3] += 1.0  # stored at row 3 in the first run
    write_jsonl(path, y)
    res = ingest(*args, "--resume")
    assert res.exit_code == 1
    assert "rows 0..14 of" in res.output and "changed since the interrupted run" in res.output
    with vecdb.connect(db) as c:
        assert c.count("j") == 15


def test_completed_load_into_another_collection_starts_fresh(tmp_path: Path) -> None:
    """The progress file of a completed load into one collection neither blocks nor skips a
    --resume load of the same file into another: each load has its own entry."""
    x = vectors(20, DIM)
    path, db = tmp_path / "in.jsonl", str(tmp_path / "db")
    write_jsonl(path, x)
    for name in ("a", "b"):
        res = ingest(str(path), "--collection", name, "--target", db, "--metric", "l2",
                     "--resume", "--batch-size", "7")  # fmt: skip
        assert res.exit_code == 0 and "ingested 20 vectors" in res.output, res.output
    again = ingest(str(path), "--collection", "a", "--target", db, "--resume")
    assert again.exit_code == 0 and "already loaded into 'a'" in again.output
    loads = json.loads((tmp_path / "in.jsonl.vecdb-progress.json").read_text())["loads"]
    assert sorted(e["collection"] for e in loads) == ["a", "b"]
    assert all(e["complete"] for e in loads)
    assert_exactly_once(db, "b", x)


def test_a_changed_file_after_a_completed_load_loads_again(tmp_path: Path) -> None:
    """Rows appended to a file that was loaded completely: --resume loads only the new rows."""
    x = vectors(25, DIM)
    path, db = tmp_path / "in.jsonl", str(tmp_path / "db")
    write_jsonl(path, x[:20])
    args = [str(path), "--collection", "c", "--target", db, "--batch-size", "6"]
    assert ingest(*args, "--metric", "l2").exit_code == 0
    write_jsonl(path, x)
    res = ingest(*args, "--resume")
    assert res.exit_code == 0 and "ingested 5 vectors" in res.output, res.output
    assert_exactly_once(db, "c", x)


def test_kill_9_mid_load_then_resume_has_no_duplicates_or_gaps(tmp_path: Path, target: str) -> None:
    """SIGKILL the ingest process part-way (embedded, or streaming to a server that must shrug
    off the broken stream), then --resume: every row exactly once."""
    x = vectors(40_000, DIM, seed=5)
    path, db = tmp_path / "big.npy", target
    write_npy(path, x)
    progress = tmp_path / "big.npy.vecdb-progress.json"
    args = [str(path), "--collection", "k", "--target", db, "--quiet"]
    proc = subprocess.Popen([*INGEST, *args, "--batch-size", "100", "--dim", str(DIM), "--metric", "l2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = progress_entry(progress)["rows_done"]
            except (FileNotFoundError, ValueError, KeyError):
                done = 0
            if done >= 2_000:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    state = progress_entry(progress)
    assert 0 < state["rows_done"] < len(x) and not state["complete"]
    resume = [*INGEST, *args, "--resume", "--batch-size", "5000"]  # batch size may change
    res = subprocess.run(resume, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert_exactly_once(db, "k", x)


def test_two_loads_sharing_a_progress_file_keep_both_entries(tmp_path: Path) -> None:
    """Two loads of one input into two collections at once share its progress file: each
    save merges the other's current entry (read under a lock), so neither's progress is
    lost, whatever the order of their saves; many saves from threads at once leave a file
    that reads, with both loads' last rows."""
    import threading

    from vecdb.cli.ingest_progress import Progress, RowDigest

    src = tmp_path / "x.npy"
    write_npy(src, vectors(40, DIM))
    path = tmp_path / "shared.json"
    a = Progress(path, src, "db", "a", None)
    b = Progress(path, src, "db", "b", None)
    a.start_over()
    b.start_over()  # both began before either saved
    a.save(0, 10, RowDigest(), False)
    b.save(0, 20, RowDigest(), False)  # (read a's entry as it began: none)
    a.save(0, 30, RowDigest(), False)
    loads = {e["collection"]: e["rows_done"] for e in json.loads(path.read_text())["loads"]}
    assert loads == {"a": 30, "b": 20}

    def saves(p: Progress, n: int) -> None:
        for i in range(1, n + 1):
            p.save(0, i, RowDigest(), i == n)

    threads = [threading.Thread(target=saves, args=(p, 200)) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    loads = {e["collection"]: e["rows_done"] for e in json.loads(path.read_text())["loads"]}
    assert loads == {"a": 200, "b": 200}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
