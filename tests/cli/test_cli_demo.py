"""`vecdb demo` runs end to end, and on a locked data directory says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vecdb.cli.main import main
from vecdb.engine import Database

ROOT = Path(__file__).resolve().parents[2]  # the repository: the child imports this vecdb
DEMO = [sys.executable, "-c", "from vecdb.cli.main import main; main()", "demo"]


def test_demo_runs_and_reports_recall(tmp_path: Path) -> None:
    """A small demo loads, optimizes, searches and prints recall."""
    out = CliRunner().invoke(
        main,
        [
            "demo",
            "--data",
            str(tmp_path / "d"),
            "--n",
            "2000",
            "--dim",
            "8",
            "--queries",
            "20",
            "--index",
            "flat",
        ],  # fmt: skip
    )
    assert out.exit_code == 0, out.output
    assert "recall@10 vs exact: 1.0000" in out.output


def test_demo_on_a_locked_directory_prints_one_line(tmp_path: Path) -> None:
    """Another process holds the directory: one line on stderr, exit 1, no traceback."""
    held = Database(tmp_path / "d")  # this process holds the lock; the child is refused
    try:
        proc = subprocess.run(
            [*DEMO, "--data", str(tmp_path / "d"), "--n", "100", "--dim", "4"],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    finally:
        held.close()
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"vecdb demo: cannot open {tmp_path / 'd'}: ")
    assert "in use" in lines[0] or "lock" in lines[0].lower()


def test_demo_help_lists_index_choices() -> None:
    """--help shows the index kinds to choose from."""
    out = CliRunner().invoke(main, ["demo", "--help"])
    assert "[flat|spann]" in out.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--dim", "0"], "--dim"),
        (["--queries", "0"], "--queries"),
        (["--batch-size", "0"], "--batch-size"),
        (["--n", "-5"], "--n"),
        (["--k", "0"], "--k"),
        (["--k", "100000"], "--k"),
        (["--n", "50", "--k", "51"], "--k"),
    ],
)
def test_demo_options_are_checked_before_anything_runs(
    tmp_path: Path, args: list[str], option: str
) -> None:
    """An out-of-range option is click's usage error naming it (exit 2), before the data
    directory is even opened: no traceback, no vectors loaded."""
    out = CliRunner().invoke(main, ["demo", "--data", str(tmp_path / "d"), "--dim", "4", *args])
    assert out.exit_code == 2, out.output
    assert f"Invalid value for '{option}'" in out.output
    assert not (tmp_path / "d").exists()
