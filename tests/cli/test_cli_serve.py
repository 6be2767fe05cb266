"""`vecdb serve` checks its data directory before anything else, and its --help says how to
turn on what it advertises."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from vecdb.cli.main import main


def serve(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["serve", "--port", "0", "--no-metrics", *args])
    return out.exit_code, out.output


def test_a_file_as_data_directory_is_named_as_such(tmp_path: Path) -> None:
    """--data naming a regular file: said so (not "API key file ...: Not a directory")."""
    f = tmp_path / "afile"
    f.write_text("x")
    code, out = serve("--data", str(f))
    assert code == 2
    assert out.strip() == f"vecdb serve: data directory {f} is a file, not a directory"


def test_a_data_directory_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """--data under a regular file cannot be created: one line naming both, no traceback."""
    f = tmp_path / "afile"
    f.write_text("x")
    code, out = serve("--data", str(f / "sub"))
    assert code == 2
    assert out.strip() == (f"vecdb serve: cannot create data directory {f / 'sub'}: {f} is a "
                           "file, not a directory")  # fmt: skip


def test_help_says_how_to_turn_reflection_on() -> None:
    """Reflection is off by default: --help names the setting that turns it on."""
    out = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    assert "reflection = true" in out and "VECDB__SERVER__REFLECTION=true" in out
