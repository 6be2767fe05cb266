"""Table cells and row grouping shared by the benchmark reports. Owns formatting only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Row = dict[str, Any]  # one JSONL row of a run


def fmt(x: Any, digits: int = 0) -> str:
    """A table cell: "-" for None/NaN, numbers with thousands separators and `digits`."""
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float | int) and not isinstance(x, bool):
        return f"{x:,.{digits}f}"
    return str(x)


def fmt_params(p: Mapping[str, Any] | None) -> str:
    """Parameters as "k=v k2=v2" (dicts as JSON, empty dicts left out; "-" if none)."""
    items = [(k, v) for k, v in (p or {}).items() if v != {}]
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in items) or "-"


def by_system(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped by system (in order of appearance), failed rows left out."""
    out: dict[str, list[Row]] = {}
    for row in rows:
        if "error" not in row:
            out.setdefault(row["system"], []).append(row)
    return out
