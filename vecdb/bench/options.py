"""Option types shared by the bench tools' command lines: an integer with a lower bound whose
error names the option's rule and the text given (argparse's own says "invalid int value");
repeatable `--engine NAME=VALUE` settings of a run's database; and the usual ending of a
tool's run: its JSON written where `--out` says, its table printed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` accepting integers >= `minimum`."""
    rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    return parse


def add_engine_option(ap: argparse.ArgumentParser) -> None:
    """A repeatable `--engine NAME=VALUE` (read with `engine_settings`)."""
    ap.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an engine setting of the build's database (repeatable; PARAMS.md)",
    )


def engine_settings(given: list[str]) -> dict[str, Any] | None:
    """`NAME=VALUE` strings as engine settings (numbers; the engine checks names and bounds),
    None when none are given (the defaults)."""
    if not given:
        return None
    out: dict[str, Any] = {}
    for item in given:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise SystemExit(f"--engine expects NAME=VALUE, got {item!r}")
        try:
            out[name] = float(value) if "." in value or "e" in value else int(value)
        except ValueError:
            raise SystemExit(f"--engine {name} expects a number, got {value!r}") from None
    return out


def finish(out: dict[str, Any], path: str | None, table: Callable[[dict[str, Any]], str]) -> None:
    """Write `out` as JSON to `path` (when given), then print `table(out)`."""
    if path:
        Path(path).write_text(json.dumps(out, indent=1))
    print(table(out))
