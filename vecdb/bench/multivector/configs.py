"""The configuration matrix of the multi-vector benchmark (`bench/multivector*.json`).

Owns reading a config into `Entry` objects. A config is
`{"systems": [ENTRY, ...], "queries": N, "latency_queries": N, "latency_rounds": N,
"threads": [1, 2]}`; an ENTRY
is `{"system": NAME, "label": "...", "build": {...} | "builds": [{...}, ...],
"sweep": {"p": [..]} | [{...}, ...], "role": "default" | "pruning" | "reference",
"tiers": ["t2", ...]}` (tiers: run only on these; default all). A
dict-of-lists sweep is the grid of all combinations. Role "default" marks the pipeline the
issue's targets are checked on, "pruning" the token-reduction curves the pruning target reads,
"reference" the exact system speed-ups are measured against (default: exact-numba).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecdb.bench.multivector.embed import TIERS
from vecdb.bench.multivector.systems import SYSTEMS
from vecdb.bench.systems import expand_sweep
from vecdb.errors import InvalidArgument

ROLES = ("default", "pruning", "reference", "")
DEFAULT_CONFIG: dict[str, Any] = {
    "systems": [
        {"system": "exact-numba", "role": "reference"},
        {"system": "maxsim-cpu"},
        {"system": "token-knn-hnsw", "sweep": {"k_prime": [16, 64, 256]}},
        {"system": "codes-only", "builds": [{"K": 256}]},
        {"system": "centroid-id-hamming", "builds": [{"K": 256}]},
    ]
}


@dataclass(frozen=True)
class Entry:
    """One system with its build settings and search sweep."""

    system: str
    label: str  # the row's system column: NAME or NAME/label
    builds: list[dict[str, Any]]
    sweep: list[dict[str, Any]]
    role: str = ""
    tiers: tuple[str, ...] = ()  # run only on these tiers (empty: every tier)

    def runs_on(self, spec: str) -> bool:
        return not self.tiers or spec.partition(":")[0] in self.tiers


def parse_entries(cfg: dict[str, Any]) -> list[Entry]:
    """The config's systems, checked: known names, one of build/builds, known roles."""
    raw = cfg.get("systems", DEFAULT_CONFIG["systems"])
    if not isinstance(raw, list):
        raise InvalidArgument("multivector config: 'systems' must be a list of entries")
    out: list[Entry] = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict) or "system" not in e:
            raise InvalidArgument(f"multivector config: systems[{i}] needs a 'system' name")
        name = str(e["system"])
        if name not in SYSTEMS:
            raise InvalidArgument(
                f"multivector config: systems[{i}]: unknown system {name!r}; known {sorted(SYSTEMS)}"
            )
        if "build" in e and "builds" in e:
            raise InvalidArgument(f"multivector config: systems[{i}]: give build or builds")
        builds = e.get("builds", [e.get("build", {})])
        sweep = expand_sweep(e.get("sweep", [{}]))
        role = str(e.get("role", ""))
        if role not in ROLES:
            raise InvalidArgument(f"multivector config: systems[{i}]: role must be in {ROLES}")
        label = f"{name}/{e['label']}" if e.get("label") else name
        tiers = tuple(str(t) for t in e.get("tiers", ()))
        for t in tiers:
            if t not in TIERS:
                raise InvalidArgument(f"multivector config: systems[{i}]: unknown tier {t!r}")
        out.append(Entry(name, label, [dict(b) for b in builds], sweep or [{}], role, tiers))
    labels = [e.label for e in out]
    if len(set(labels)) != len(labels):
        raise InvalidArgument("multivector config: two entries have the same system/label")
    return out


def load_config(path: Path | None) -> dict[str, Any]:
    """The JSON config at `path`, or the built-in default (exact and the peers)."""
    if path is None:
        return dict(DEFAULT_CONFIG)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"cannot read multivector config {path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise InvalidArgument(f"multivector config {path}: expected a JSON object")
    return cfg
