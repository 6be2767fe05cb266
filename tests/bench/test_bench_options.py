"""The bench tools' shared command-line pieces: bounded integers and the run's ending."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from vecdb.bench.options import at_least, finish


def test_at_least_names_the_rule_and_the_text() -> None:
    assert at_least(1)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"a positive integer, got '0'"):
        at_least(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"an integer >= 2, got 'x'"):
        at_least(2)("x")


def test_finish_writes_the_json_where_asked_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = {"rows": [1, 2], "name": "t"}
    path = tmp_path / "out.json"
    finish(out, str(path), lambda o: f"table of {o['name']}")
    assert json.loads(path.read_text()) == out
    assert capsys.readouterr().out == "table of t\n"
    finish(out, None, lambda o: "only the table")
    assert capsys.readouterr().out == "only the table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
