"""Child process of the payload index crash test: upserts, set_payload, overwrite_payload,
deletes by id and by filter on a collection with payload indexes, forever, until killed.

Usage: python pindex_crash_writer.py DATA_DIR SEED. Payload values are drawn from small sets
of look-alike values (numbers as int and float, strings, booleans, lists, nested objects, and
values of the wrong type for the index) so that every index entry path is exercised. Prints
"ready" once the collection is open and a first upsert is in (so that a kill within the first
second has something to leave in step even when the machine is loaded and the first calls are
slow); the parent SIGKILLs it at a random moment after that.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vecdb.engine import Database

DIM = 4
ID_RANGE = 2000
INDEXES = {"year": "int", "tag": "str", "flag": "bool", "meta.x": "float"}
VALUES: list[Any] = [0, 1, 1.0, 2, 2.5, -3, 10**17 + 1, "a", "b", "", "1", True, False, None,
                     [1], {"x": 1}]  # fmt: skip


def payload(rng: np.random.Generator) -> dict[str, Any] | None:
    if rng.random() < 0.1:
        return None
    out: dict[str, Any] = {}
    for field in ("year", "tag", "flag"):
        if rng.random() < 0.8:
            out[field] = VALUES[int(rng.integers(len(VALUES)))]
    if rng.random() < 0.7:
        out["meta"] = {"x": VALUES[int(rng.integers(len(VALUES)))]}
    return out


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    db = Database(path)
    if not db.collection_exists("c"):
        db.create_collection("c", dim=DIM, metric="l2", index="flat")
    for key, typ in INDEXES.items():
        db.create_payload_index("c", key, typ)
    first = rng.choice(ID_RANGE, size=150, replace=False).tolist()
    db.upsert("c", first, rng.standard_normal((150, DIM)).astype(np.float32),
              [payload(rng) for _ in first])  # fmt: skip
    print("ready", flush=True)
    while True:
        r = rng.random()
        ids = rng.choice(ID_RANGE, size=int(rng.integers(1, 150)), replace=False).tolist()
        if r < 0.45:
            vecs = rng.standard_normal((len(ids), DIM)).astype(np.float32)
            db.upsert("c", ids, vecs, [payload(rng) for _ in ids])
        elif r < 0.65:
            db.set_payload("c", ids, payload(rng) or {})
        elif r < 0.8:
            db.overwrite_payload("c", ids, payload(rng) or {})
        elif r < 0.95:
            db.delete("c", ids[:20])
        else:
            value = VALUES[int(rng.integers(len(VALUES)))]
            if not isinstance(value, (list, dict)) and value is not None:
                db.delete("c", filter={"year": value})


if __name__ == "__main__":
    main()
