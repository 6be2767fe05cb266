"""Seeded data, canonical answer forms and the mode comparison of the day-one congruence
tests (tests/api/test_*_congruence.py). No tests here.

`make` creates the same collection in any mode (SPANN built by `optimize()`, or flat) with a
rich payload per point; `rec` / `page` / `res` turn answers into values compared bit for bit
(vector and distance bytes; payloads as sorted JSON text, so 1 and 1.0 differ); `same` runs a
scenario in every mode and asserts the answers are equal.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from api_modes import Trio

import vecdb

DIM = 8
N = 240
INDEXES = ["spann", "flat"]  # the default index (built) and flat
NAMES = itertools.count()


def payload_of(i: int) -> dict[str, Any] | None:
    """A rich payload: ints, a year that is sometimes a string, floats, bools, nested keys,
    missing fields, and no payload at all for every 11th point."""
    if i % 11 == 0:
        return None
    p: dict[str, Any] = {
        "year": 1990 + i % 30 if i % 13 else str(1990 + i % 30),
        "tag": "abc"[i % 3],
        "score": round((i * 0.37) % 10, 3),
        "flag": i % 2 == 0,
        "meta": {"x": i % 5, "y": {"z": "zz" if i % 4 else "日本"}},
    }
    if i % 7 == 0:
        del p["tag"]
    return p


def int_ids() -> list[int]:
    rng = np.random.default_rng(7)
    ids = rng.choice(10_000, size=N - 2, replace=False).tolist()
    return [*ids, 2**62, 0]  # a large id and zero among them, order shuffled by the choice


def str_ids() -> list[str]:
    special = ["Z", "a", "a b", "é", "日本", "ß", "z\u00e9", "A0"]
    return special + [f"k{i:03d}" for i in range(N - len(special))]


def vectors() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((N, DIM)).astype(np.float32)


def make(c: Any, index: str, *, id_type: str = "int", ids: list[Any] | None = None) -> str:
    """A fresh seeded collection (same name in every mode) and its name."""
    name = f"t{next(NAMES) // 3}"  # three calls per scenario, one per mode
    c.create_collection(name, DIM, "l2", id_type=id_type,
                        index=None if index == "spann" else "flat")  # fmt: skip
    ids = ids if ids is not None else (int_ids() if id_type == "int" else str_ids())
    c.upsert(name, ids, vectors(), [payload_of(i) for i in range(N)])
    if index == "spann":
        c.optimize(name)
    return name


# -- canonical forms ------------------------------------------------------------------------


def js(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def rec(r: vecdb.Record) -> tuple[Any, ...]:
    return r.id, None if r.vector is None else r.vector.tobytes(), js(r.payload)


def page(answer: tuple[list[vecdb.Record], Any]) -> tuple[Any, ...]:
    records, nxt = answer
    return [rec(r) for r in records], nxt


def res(s: vecdb.SearchResult) -> tuple[Any, ...]:
    vecs = None if s.vectors is None else [
        [None if v is None else v.tobytes() for v in row] for row in s.vectors
    ]  # fmt: skip
    pays = None if s.payloads is None else [[js(p) for p in row] for row in s.payloads]
    return s.ids.tolist(), s.distances.tobytes(), pays, vecs


def same(trio: Trio, scenario: Callable[[Any], Any]) -> Any:
    """Run `scenario` in every mode; assert the answers are equal; return the local one."""
    got = trio.run(scenario)
    assert got["remote"] == got["local"]
    assert got["aio"] == got["local"]
    return got["local"]


def scroll_all(c: Any, name: str, limit: int, **kw: Any) -> list[Any]:
    """Every page of a scroll, as (records, next_offset) canonical pairs."""
    pages, offset = [], None
    while True:
        p = page(c.scroll(name, limit=limit, offset=offset, **kw))
        pages.append(p)
        offset = p[1]
        if offset is None:
            return pages


FILTERS: list[dict[str, Any]] = [
    {"tag": "a"},
    {"year": {"$eq": 1995}},
    {"tag": {"$ne": "b"}},
    {"year": {"$gt": 2005}},
    {"year": {"$gte": 2005, "$lt": 2010}},
    {"score": {"$lte": 2.5}},
    {"tag": {"$in": ["a", "c"]}},
    {"meta.x": {"$nin": [0, 1]}},
    {"tag": {"$exists": False}},
    {"year": {"$lt": "2000"}},  # strings compare with strings only
    {"$and": [{"flag": True}, {"meta.x": {"$gte": 3}}]},
    {"$or": [{"tag": "b"}, {"score": {"$gt": 9}}]},
    {"$not": {"meta.y.z": "zz"}},
    {"meta": {"$exists": True}, "flag": False},
    {"year": {"$in": [1991, "1999"]}},
]
