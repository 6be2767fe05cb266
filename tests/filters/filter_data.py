"""Data of the filter tests: seeded points whose payloads take look-alike values of every
JSON type on the fields of `strategies.RICH_FIELDS` (nested ones included), so that filters
of the whole language select varied, non-trivial subsets."""

from __future__ import annotations

from typing import Any

import numpy as np
from strategies import RICH_VALUES

INDEXES = {"year": "int", "tag": "str", "flag": "bool", "score": "float", "meta.x": "int"}


def rich_payload(rng: np.random.Generator) -> dict[str, Any] | None:
    """One payload: None now and then, else some of the fields with scalar, list or object
    values (mostly scalars, so indexes hold most values)."""
    if rng.random() < 0.08:
        return None

    def value() -> Any:
        r = rng.random()
        pick = RICH_VALUES[int(rng.integers(len(RICH_VALUES)))]
        if r < 0.05:
            return [pick]
        if r < 0.08:
            return {"z": pick}
        return pick

    out: dict[str, Any] = {}
    for f in ("year", "tag", "score", "flag"):
        if rng.random() < 0.8:
            out[f] = value()
    if rng.random() < 0.7:
        meta: dict[str, Any] = {}
        if rng.random() < 0.8:
            meta["x"] = value()
        if rng.random() < 0.5:
            meta["y"] = {"z": value()} if rng.random() < 0.7 else value()
        out["meta"] = meta
    return out
